"""The EMA of the weights: its warm-up, its cap, and that it moves every parameter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion.ema import ema_decay, update_ema


def test_the_decay_warms_up_then_holds():
    assert ema_decay(0, 0.999) == pytest.approx(0.1)
    assert ema_decay(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay(10**6, 0.999) == 0.999


def test_update_moves_every_parameter_by_its_share():
    torch.manual_seed(0)
    model, ema = nn.Linear(3, 2), nn.Linear(3, 2).requires_grad_(False)
    before = [p.clone() for p in ema.parameters()]
    update_ema(ema, model, step=10**6, decay=0.9)
    for e, b, p in zip(ema.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p)
    before = [p.clone() for p in ema.parameters()]
    update_ema(ema, model, step=0, decay=0.9)  # warming up: 0.1 of the old average stays
    for e, b, p in zip(ema.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.1 * b + 0.9 * p)
