"""Our samplers against diffusers' schedulers: the same eps model, sigmas and noise, step by step.

Each test runs one of diffusers' schedulers in its own loop and our sampler on the scheduler's own
sigmas (ours take any sigmas ending in 0), both fed the exact eps of a toy mixture of Gaussians
and the same Gaussian draws, and compares every intermediate sample. diffusers' DPM-Solver works
on the variance-preserving sample x / sqrt(1 + sigma^2), its Euler schedulers on our sigma view x.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("diffusers", reason="the parity oracle is diffusers (pip install diffusers)")

from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)

from diffusion import samplers

# diffusers 0.42 with numpy 2 warns about np.array(tensor, copy=False) inside set_timesteps.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# float32 throughout (diffusers' schedulers compute in float32), on samples of unit scale.
ATOL = 1e-4
SHAPE = (4, 3, 8, 8)
CENTRES = torch.rand(3, 3 * 8 * 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
WEIGHTS = torch.tensor([0.5, 0.3, 0.2])
SPREAD = 0.1


def toy_eps(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Exact eps in the sigma view for x0 from a mixture of three Gaussians N(c_k, SPREAD^2 I).

    x = x0 + sigma * eps makes x ~ N(c_k, (SPREAD^2 + sigma^2) I) given component k, so
    p(k | x) is a softmax and E[x0 | x, k] = c_k + SPREAD^2 / (SPREAD^2 + sigma^2) * (x - c_k);
    eps = (x - E[x0 | x]) / sigma. Smooth and nonlinear in x, defined at every sigma > 0.
    """
    flat = x.flatten(1)
    var = SPREAD**2 + sigma**2
    logits = WEIGHTS.log() - ((flat[:, None] - CENTRES) ** 2).sum(-1) / (2 * var)
    resp = logits.softmax(-1)
    x0 = resp @ CENTRES + SPREAD**2 / var * (flat - resp @ CENTRES)
    return ((flat - x0) / sigma).view_as(x)


def start_noise() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))


def ours(sampler, sigmas: torch.Tensor, x: torch.Tensor, **options) -> list[torch.Tensor]:
    """Our sampler's samples after every step, its noise drawn from a generator seeded 2."""
    g = torch.Generator().manual_seed(2)
    steps = sampler(toy_eps, x, sigmas, lambda shape: torch.randn(shape, generator=g), **options)
    return [x_next for x_next, _ in steps]


def assert_same_path(ours_vp: list[torch.Tensor], theirs_vp: list[torch.Tensor]) -> None:
    """Every step's sample agrees, in the variance-preserving scale (about 1 at every step)."""
    assert len(ours_vp) == len(theirs_vp)
    worst = max(float((a - b).abs().max()) for a, b in zip(ours_vp, theirs_vp, strict=True))
    assert worst < ATOL, f"max abs difference {worst:.2e}"
    # A path that did nothing would agree trivially: the run must end near the data.
    assert float(theirs_vp[-1].abs().max()) > 0.5


def vp(xs: list[torch.Tensor], sigmas: torch.Tensor) -> list[torch.Tensor]:
    """Samples after each step, from the sigma view to the variance-preserving one."""
    return [x / (1 + s**2).sqrt() for x, s in zip(xs, sigmas[1:], strict=True)]


SCHEDULES = pytest.mark.parametrize(("steps", "karras"), [(10, False), (25, False), (12, True)])


def _dpm_solver_path(scheduler: DPMSolverMultistepScheduler, steps: int) -> list[torch.Tensor]:
    """diffusers' DPM-Solver loop: the model sees the VP sample, its noise comes from seed 2."""
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(2)
    x_vp, path = start_noise(), []
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i]
        eps = toy_eps(x_vp * (1 + sigma**2).sqrt(), sigma)
        x_vp = scheduler.step(eps, t, x_vp, generator=g).prev_sample
        path.append(x_vp)
    return path


@SCHEDULES
def test_dpmpp_2m_sde_matches_diffusers_sde_dpmsolver_pp(steps, karras):
    # diffusers draws its noise at every step, we skip the last one (sigma_next = 0, where the
    # noise term vanishes): step i uses draw i in both.
    scheduler = DPMSolverMultistepScheduler(
        algorithm_type="sde-dpmsolver++", solver_order=2, use_karras_sigmas=karras
    )
    theirs = _dpm_solver_path(scheduler, steps)
    sigmas = scheduler.sigmas
    path = ours(samplers.dpmpp_2m_sde, sigmas, start_noise() * (1 + sigmas[0] ** 2).sqrt())
    assert_same_path(vp(path, sigmas), theirs)


@SCHEDULES
def test_dpmpp_2m_matches_diffusers_dpmsolver_pp(steps, karras):
    scheduler = DPMSolverMultistepScheduler(use_karras_sigmas=karras)  # dpmsolver++, order 2
    theirs = _dpm_solver_path(scheduler, steps)
    sigmas = scheduler.sigmas
    path = ours(samplers.dpmpp_2m, sigmas, start_noise() * (1 + sigmas[0] ** 2).sqrt())
    assert_same_path(vp(path, sigmas), theirs)


@pytest.mark.parametrize("steps", [10, 25])  # this scheduler has no Karras sigmas
def test_euler_ancestral_matches_diffusers_euler_ancestral(steps):
    scheduler = EulerAncestralDiscreteScheduler()
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas
    g = torch.Generator().manual_seed(2)
    x = start_noise() * sigmas[0]
    theirs = []
    for i, t in enumerate(scheduler.timesteps):
        scheduler.scale_model_input(x, t)  # the model would see it; here it only keeps count
        x = scheduler.step(toy_eps(x, sigmas[i]), t, x, generator=g).prev_sample
        theirs.append(x)
    path = ours(samplers.euler_ancestral, sigmas, start_noise() * sigmas[0])
    assert_same_path(vp(path, sigmas), vp(theirs, sigmas))


@SCHEDULES
@pytest.mark.parametrize(
    ("eta", "s_churn"),
    # eta scales our gamma and diffusers has none: it gets eta * s_churn, the same gamma while
    # s_churn / steps is under the cap sqrt(2) - 1; (1, 80) is capped at every step count.
    [(1.0, 6.0), (0.5, 4.0), (1.0, 80.0)],
)
def test_euler_churn_matches_diffusers_euler_discrete(steps, karras, eta, s_churn):
    s_tmin, s_tmax, s_noise = 0.05, 20.0, 1.003  # churn only inside a window, as EDM tunes it
    scheduler = EulerDiscreteScheduler(use_karras_sigmas=karras)
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas
    churn = {"s_churn": eta * s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
    g = torch.Generator().manual_seed(2)
    x = start_noise() * sigmas[0]
    theirs = []
    for i, t in enumerate(scheduler.timesteps):
        # diffusers' own loop calls the model before step() churns, on x at sigma; Karras et al.
        # (Algorithm 2) and we call it on the churned x at sigma_hat. To compare the step itself
        # we hand step() the eps at the churned point: we draw its noise ahead (same generator
        # state), then let step() draw the very same noise.
        sigma = sigmas[i]
        gamma = min(eta * s_churn / steps, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        x_hat = x
        if gamma > 0:
            state = g.get_state()
            x_hat = (
                x + torch.randn(x.shape, generator=g) * s_noise * (sigma_hat**2 - sigma**2).sqrt()
            )
            g.set_state(state)
        scheduler.scale_model_input(x, t)
        x = scheduler.step(toy_eps(x_hat, sigma_hat), t, x, generator=g, **churn).prev_sample
        theirs.append(x)
    assert any(s_tmin <= s <= s_tmax for s in sigmas) and not all(s_tmin <= s for s in sigmas)
    options = {**churn, "s_churn": s_churn, "eta": eta}
    path = ours(samplers.euler_churn, sigmas, start_noise() * sigmas[0], **options)
    assert_same_path(vp(path, sigmas), vp(theirs, sigmas))
