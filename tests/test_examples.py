"""The one-screen DDPM example trains and samples with the package's schedule and model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from diffusion import ContextUnet, Schedule, render

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import ddpm_in_one_screen as example


def two_sprites() -> tuple[torch.Tensor, torch.Tensor]:
    """A red square on white for label 0, a blue one for label 1."""
    images = np.full((2, 8, 8, 3), 255, np.uint8)
    images[0, 2:6, 2:6] = (200, 30, 30)
    images[1, 2:6, 2:6] = (30, 30, 200)
    return render.to_tensor(images), torch.tensor([0, 1])


def test_training_learns_the_noise_and_sampling_draws_the_label():
    torch.manual_seed(0)
    schedule = Schedule.linear(T=50)
    model = ContextUnet(num_labels=2, resolution=8, channels=(32, 32), T=schedule.T)
    images, labels = two_sprites()
    losses = example.train(model, schedule, images, labels, steps=150, batch=32)
    # Predicting zero noise scores 1.0; a network that learned something scores well below.
    assert np.mean(losses[-30:]) < 0.5 * np.mean(losses[:10])
    red, blue = (example.sample(model, schedule, k, n=4, seed=1) for k in (0, 1))
    centre = (slice(None), slice(3, 5), slice(3, 5))
    assert (red[centre][..., 0].astype(int) - red[centre][..., 2]).mean() > 60
    assert (blue[centre][..., 2].astype(int) - blue[centre][..., 0]).mean() > 60
    np.testing.assert_array_equal(red, example.sample(model, schedule, 0, n=4, seed=1))
