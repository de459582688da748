"""Every sampler, driven by the exact oracle of a toy distribution, must land on its images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion import SAMPLERS, SpritePipeline, samplers
from diffusion.render import to_uint8
from diffusion.schedules import Schedule

from .conftest import GaussianOracle, toy_images

STOCHASTIC = ["ddpm", "euler_ancestral"]


def nearest(images: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the closest target per image and the max abs pixel error to it."""
    diff = np.abs(images[:, None].astype(int) - targets[None].astype(int)).max(axis=(2, 3, 4))
    return diff.argmin(1), diff.min(1)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_lands_on_a_data_image(oracle_pipe, name):
    targets = to_uint8(toy_images())
    out = oracle_pipe.generate(None, n=48, sampler=name, steps=25, seed=1)
    _, err = nearest(out, targets)
    assert err.max() <= 2, f"{name}: sample off the data by {err.max()} levels"


@pytest.mark.parametrize("name", [*STOCHASTIC, "ddim_eta1", "ddim", "dpmpp_2m"])
def test_samples_follow_the_mixture_weights(oracle_pipe, name):
    options = {"sampler": "ddim", "eta": 1.0} if name == "ddim_eta1" else {"sampler": name}
    out = oracle_pipe.generate(None, n=400, steps=25, seed=2, **options)
    idx, _ = nearest(out, to_uint8(toy_images()))
    freq = np.bincount(idx, minlength=3) / len(idx)
    # 400 draws: the binomial standard deviation of a 0.5 share is 0.025; allow four of them.
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.1)


def test_conditioning_selects_the_labelled_image(oracle_pipe):
    targets = to_uint8(toy_images())
    for label in range(3):
        idx, err = nearest(oracle_pipe.generate(label, n=8, steps=20, seed=3), targets)
        assert (idx == label).all() and err.max() <= 2


@pytest.mark.parametrize("name", ["ddim", "pndm", "lms", "heun", "dpmpp_2m"])
def test_deterministic_samplers_draw_no_noise(name):
    def no_noise(shape):
        raise AssertionError(f"{name} drew noise")

    sigmas = Schedule.linear(T=100).sigmas(10).float()
    x = torch.randn(2, 3, 4, 4) * sigmas[0]
    steps = list(SAMPLERS[name].fn(lambda x, s: 0.1 * x, x, sigmas, no_noise))
    assert len(steps) == 10


def test_ddpm_is_ddim_with_eta_one():
    sigmas = Schedule.linear(T=50).sigmas(50).float()

    def run(fn, **kw):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 1, 2, 2, generator=g)
        *_, (last, _) = fn(
            lambda x, s: x / (1 + s**2).sqrt(),
            x,
            sigmas,
            lambda shape: torch.randn(shape, generator=g),
            **kw,
        )
        return last

    torch.testing.assert_close(run(samplers.ddpm), run(samplers.ddim, eta=1.0))
    assert not torch.allclose(run(samplers.ddpm), run(samplers.ddim, eta=0.0))


def test_ddpm_matches_the_classic_posterior_step():
    # One full-resolution DDPM step (t -> t-1) equals Ho et al.'s mean and beta-tilde variance.
    sch = Schedule.linear(T=10)
    t = 6
    abar_t, abar_s = sch.alpha_bar(float(t)), sch.alpha_bar(float(t - 1))
    beta = 1 - abar_t / abar_s
    x_vp = torch.tensor([[[[0.7]]]], dtype=torch.float64)
    eps = torch.tensor([[[[0.3]]]], dtype=torch.float64)
    z = torch.tensor([[[[-1.2]]]], dtype=torch.float64)
    mean = (x_vp - beta / (1 - abar_t).sqrt() * eps) / (1 - beta).sqrt()
    var = (1 - abar_s) / (1 - abar_t) * beta
    expected = mean + var.sqrt() * z

    sigmas = torch.stack([sch.sigma(float(t)), sch.sigma(float(t - 1)), torch.tensor(0.0)])
    x = x_vp * (1 + sigmas[0] ** 2).sqrt()
    (x_next, _), _ = samplers.ddpm(lambda x, s: eps, x, sigmas, lambda shape: z)
    torch.testing.assert_close(x_next / (1 + sigmas[1] ** 2).sqrt(), expected)


def test_lms_is_exact_for_constant_eps():
    sigmas = Schedule.linear(T=100).sigmas(8).double()
    x = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    *_, (last, _) = samplers.lms(lambda x, s: torch.ones_like(x), x, sigmas, None)
    # dx/dsigma = 1 integrates to sigma_end - sigma_start exactly.
    torch.testing.assert_close(last, torch.full_like(x, -float(sigmas[0])))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_gaussian_data_gets_its_mean_and_spread(name):
    # Ancestral steps plug in a point estimate of x0 and lose its posterior variance, so they
    # need many steps to reach the right spread; the ODE samplers get there in 100.
    steps = 500 if name in ("ddpm", "ddim", "euler_ancestral") else 100
    schedule = Schedule.linear(T=500)
    pipe = SpritePipeline(GaussianOracle(0.0, 0.3, schedule), schedule, ["a"], resolution=16)
    x = torch.as_tensor(pipe.generate(None, n=64, sampler=name, steps=steps, seed=4)) / 127.5 - 1
    assert abs(float(x.mean())) < 0.005
    assert abs(float(x.std()) - 0.3) < 0.01, f"{name}: std {float(x.std()):.4f} instead of 0.3"


def _ode_error(name: str, steps: int) -> float:
    """Distance to the exact probability-flow solution for Gaussian data at t = T / 5.

    (Near t = 0 uniform timesteps take log-sigma steps of a fixed size whatever their number,
    so the orders show on the way there, not at the end.)"""
    mu, s = 0.3, 0.5
    sigmas = Schedule.linear(T=500).sigmas(steps).double()

    def eps(x, sigma):  # (x - D(x)) / sigma for x0 ~ N(mu, s^2)
        return (x - mu) * sigma / (s**2 + sigma**2)

    x = mu + torch.linspace(-3, 3, 11, dtype=torch.float64) * (s**2 + sigmas[0] ** 2).sqrt()
    states = [xi for xi, _ in SAMPLERS[name].fn(eps, x, sigmas, None)]
    i = steps * 4 // 5  # sigmas[i] is at t = T / 5; states[i - 1] is the state there
    exact = mu + (x - mu) * ((s**2 + sigmas[i] ** 2) / (s**2 + sigmas[0] ** 2)).sqrt()
    return float((states[i - 1] - exact).abs().max())


@pytest.mark.parametrize(
    ("name", "order"),
    # PLMS's Adams-Bashforth weights assume equal steps, which these are not in sigma: it is
    # formally first order here, but with a much smaller error than DDIM (checked below).
    [("ddim", 1), ("pndm", 1), ("heun", 2), ("dpmpp_2m", 2), ("lms", 3)],
)
def test_ode_samplers_converge_at_their_order(name, order):
    coarse, fine = _ode_error(name, 25), _ode_error(name, 50)
    # Halving the step should cut the error by about 2^order (at least 2^order * 0.75).
    assert coarse / fine > 0.75 * 2**order, f"{name}: {coarse:.2e} -> {fine:.2e}"
    if name != "ddim":
        assert coarse < _ode_error("ddim", 25) / 5
