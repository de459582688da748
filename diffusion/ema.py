"""The exponential moving average (EMA) of a network's weights: what a training run ships.

Each step the average moves a share ``1 - decay`` of the way to the live weights, so it follows
them over about the last ``1 / (1 - decay)`` steps (0.999: a thousand) and smooths out the noise
of single steps. The decay warms up as ``(1 + step) / (10 + step)`` until it reaches the run's, so
that the early average is not held back by the weights it started from (a random init).
"""

from __future__ import annotations

import torch
from torch import nn


def ema_decay(step: int, decay: float) -> float:
    """The decay at ``step``: warmed up, then ``decay``."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, step: int, decay: float) -> None:
    """Move ``ema``'s parameters towards ``model``'s by the share ``1 - ema_decay(step, decay)``."""
    # One fused call for all parameters: on a GPU one small kernel each would cost more than the
    # update itself.
    torch._foreach_lerp_(
        list(ema.parameters()), list(model.parameters()), 1 - ema_decay(step, decay)
    )
