"""Shared test fixtures: tiny models, including an exact noise oracle for a toy distribution."""

from __future__ import annotations

import os

import pytest
import torch

from diffusion import ContextUnet, Schedule, SpritePipeline

os.environ.setdefault("DIFFUSION_DEVICE", "cpu")
LABELS = ["a", "b", "c"]


class MixtureOracle(torch.nn.Module):
    """The exact eps-prediction for data made of a few fixed images.

    With images x_k (prior weights w_k), p(k | x_t) is a softmax of Gaussian log-likelihoods and
    E[eps | x_t] = (x_t - sqrt(abar) * E[x0 | x_t]) / sqrt(1 - abar). Context weights reweight
    the images by their label; all-zero context means the whole mixture.
    """

    def __init__(self, images, weights, labels, schedule: Schedule, num_labels: int):
        super().__init__()
        self.images = torch.as_tensor(images, dtype=torch.float64)
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.onehot = torch.nn.functional.one_hot(torch.as_tensor(labels), num_labels).double()
        self.schedule = schedule
        self.calls: list[int] = []

    def forward(self, x, t, context):
        self.calls.append(len(x))
        abar = self.schedule.alpha_bar(t.double()).view(-1, 1)
        flat = x.double().flatten(1)
        imgs = self.images.flatten(1)
        prior = self.weights * (context.double() @ self.onehot.T)
        prior = torch.where(context.double().sum(1, keepdim=True) > 0, prior, self.weights)
        d2 = ((flat[:, None] - abar.sqrt()[:, :, None] * imgs[None]) ** 2).sum(-1)
        logits = prior.log() - d2 / (2 * (1 - abar))
        mean = logits.softmax(1) @ imgs
        eps = (flat - abar.sqrt() * mean) / (1 - abar).sqrt()
        return eps.view_as(x).to(x.dtype)


def toy_images(k: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    """k distinct images whose values are exactly representable in uint8 after rendering."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.tensor([-1.0, 1.0])
    return levels[torch.randint(0, 2, (k, 3, size, size), generator=g)]


@pytest.fixture
def oracle_pipe():
    schedule = Schedule.linear(T=500)
    images = toy_images()
    oracle = MixtureOracle(images, [0.5, 0.3, 0.2], [0, 1, 2], schedule, len(LABELS))
    return SpritePipeline(oracle, schedule, LABELS, device="cpu", resolution=8)


@pytest.fixture
def tiny_pipe():
    torch.manual_seed(0)
    model = ContextUnet(num_labels=3, resolution=8, channels=(8, 16), emb_dim=16)
    # Zero-initialised output layers would make every prediction 0; randomise them.
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return SpritePipeline(model, Schedule.linear(T=100), LABELS, device="cpu")


class GaussianOracle(torch.nn.Module):
    """Exact eps-prediction when every pixel of x0 is independently N(mu, s^2)."""

    def __init__(self, mu: float, s: float, schedule: Schedule):
        super().__init__()
        self.mu, self.s, self.schedule = mu, s, schedule

    def forward(self, x, t, context):
        abar = self.schedule.alpha_bar(t.double()).view(-1, 1, 1, 1)
        var = abar * self.s**2 + 1 - abar
        return ((1 - abar).sqrt() * (x.double() - abar.sqrt() * self.mu) / var).to(x.dtype)


@pytest.fixture
def one_thread():
    """One torch thread for the test: small tensors on a busy 2-core machine gain nothing from a
    second thread, which only waits for the first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
