"""Every sampler, driven by the exact oracle of a toy distribution, must land on its images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion import SAMPLERS, SpritePipeline, samplers
from diffusion.render import to_uint8
from diffusion.schedules import Schedule

from .conftest import GaussianOracle, toy_images

# The samplers that draw fresh noise at their default settings, from SamplerSpec itself.
STOCHASTIC = [name for name, spec in SAMPLERS.items() if spec.stochastic]


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


def _run(name: str, eps_model, x, sigmas, noise, **options):
    """Every (x_next, x0) of sampler ``name``, as a list."""
    return list(SAMPLERS[name].fn(eps_model, x, sigmas, noise, **options))


def test_stochastic_list_is_what_the_specs_say():
    assert STOCHASTIC == ["ddpm", "euler_ancestral", "dpmpp_2m_sde", "euler_churn", "heun_churn"]
    for name, spec in SAMPLERS.items():
        # For a sampler that takes eta, "stochastic" is its default eta's answer.
        assert spec.draws_noise(None) == spec.stochastic, name
    assert SAMPLERS["ddim"].draws_noise(0.5) and not SAMPLERS["ddim"].draws_noise(0.0)
    assert SAMPLERS["ddpm"].draws_noise(0.0)  # no eta to turn its noise off


@pytest.mark.parametrize("eta", [None, 0.0, 0.3])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_draws_noise_tells_the_truth(name, eta):
    spec = SAMPLERS[name]
    if eta is not None and not spec.uses_eta:
        pytest.skip("takes no eta")
    draws = []

    def counting_noise(shape):
        draws.append(shape)
        return torch.randn(shape)

    sigmas = Schedule.linear(T=100).sigmas(10).float()
    x = torch.randn(2, 3, 4, 4) * sigmas[0]
    options = {} if eta is None else {"eta": eta}
    steps = _run(name, lambda x, s: 0.1 * x, x, sigmas, counting_noise, **options)
    assert len(steps) == 10
    assert bool(draws) == spec.draws_noise(eta), f"{name} drew noise {len(draws)} times"


@pytest.mark.parametrize("steps", [1, 2, 7])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_model_calls_match_the_spec(name, steps):
    calls = []

    def eps_model(x, sigma):
        calls.append(float(sigma))
        return x / (1 + sigma**2).sqrt()

    sigmas = Schedule.linear(T=100).sigmas(steps).float()
    x = torch.randn(1, 1, 2, 2) * sigmas[0]
    assert len(_run(name, eps_model, x, sigmas, torch.randn)) == steps
    assert len(calls) == SAMPLERS[name].calls(steps)


def test_the_heun_samplers_cost_two_calls_a_step_but_one_on_the_last():
    for name in ("heun", "heun_churn"):
        assert SAMPLERS[name].calls(1) == 1 and SAMPLERS[name].calls(10) == 19
    assert SAMPLERS["euler_churn"].calls(10) == SAMPLERS["dpmpp_2m_sde"].calls(10) == 10


def test_pndm_is_an_alias_of_plms():
    assert samplers.canonical_sampler("pndm") == "plms"
    assert samplers.canonical_sampler("plms") == "plms"
    assert samplers.canonical_sampler("heun_churn") == "heun_churn"
    assert "pndm" not in SAMPLERS  # the app lists SAMPLERS: each sampler once, by its real name
    assert set(samplers.SAMPLER_ALIASES.values()) <= set(SAMPLERS)
    for bad in ("PNDM", "euler", ""):
        with pytest.raises(ValueError, match=rf"unknown sampler '{bad}'; choose from \['ddpm'"):
            samplers.canonical_sampler(bad)


# -- the stochastic samplers with eta = 0 are their deterministic parents ----------------------


def _gaussian_eps(x, sigma, mu=0.3, s=0.5):
    """The exact eps for data x0 ~ N(mu, s^2): (x - E[x0 | x]) / sigma."""
    return (x - mu) * sigma / (s**2 + sigma**2)


def _reference_dpmpp_2m(eps_model, x, sigmas):
    """DPM-Solver++(2M) as k-diffusion writes it, with the denoiser D = x - sigma * eps."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = x - sigmas[i] * eps_model(x, sigmas[i])
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised
        else:
            r = (t - (-sigmas[i - 1].log())) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def _reference_heun(eps_model, x, sigmas):
    """Karras et al.'s Algorithm 1: Heun steps on dx/dsigma = (x - D(x)) / sigma, Euler last."""
    for i in range(len(sigmas) - 1):
        d = eps_model(x, sigmas[i])
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            x = x + (d + eps_model(x_2, sigmas[i + 1])) / 2 * dt
    return x


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("dpmpp_2m_sde", _reference_dpmpp_2m),
        ("dpmpp_2m", _reference_dpmpp_2m),
        ("heun_churn", _reference_heun),
        ("heun", _reference_heun),
        ("euler_churn", lambda eps, x, sigmas: _run("ddim", eps, x, sigmas, None)[-1][0]),
    ],
)
def test_eta_zero_is_the_deterministic_parent(name, reference):
    def no_noise(shape):
        raise AssertionError(f"{name} drew noise")

    sigmas = Schedule.linear(T=500).sigmas(12).double()
    x = 0.3 + torch.linspace(-3, 3, 11, dtype=torch.float64) * (0.25 + sigmas[0] ** 2).sqrt()
    options = {"eta": 0.0} if SAMPLERS[name].uses_eta else {}
    last, _ = _run(name, _gaussian_eps, x, sigmas, no_noise, **options)[-1]
    expected = reference(_gaussian_eps, x, sigmas)
    torch.testing.assert_close(last, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_keeps_the_noise_level_of_its_sigmas(name):
    # With one data point x0 and its exact eps = (x - x0) / sigma, every step of every sampler
    # must leave x = x0 + sigma_next * (standard Gaussian): the ODE samplers carry the same
    # eps along, the stochastic ones must add exactly the noise they take out (a wrong noise
    # scale in an SDE or churn step shows here as a wrong spread).
    x0 = 0.7
    sigmas = Schedule.linear(T=500).sigmas(10).double()
    g = torch.Generator().manual_seed(0)
    x = x0 + sigmas[0] * torch.randn(20000, generator=g, dtype=torch.float64)

    def noise(shape):
        return torch.randn(shape, generator=g, dtype=torch.float64)

    states = [xi for xi, _ in _run(name, lambda x, s: (x - x0) / s, x, sigmas, noise)]
    for x_next, sigma_next in zip(states[:-1], sigmas[1:-1], strict=True):
        z = (x_next - x0) / sigma_next
        assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.03, (
            f"{name} at sigma {float(sigma_next):.3g}: mean {float(z.mean()):.3f}, "
            f"std {float(z.std()):.3f} instead of 0, 1"
        )
    torch.testing.assert_close(states[-1], torch.full_like(x, x0))


@pytest.mark.parametrize("name", ["euler_churn", "heun_churn"])
@pytest.mark.parametrize(
    ("eta", "s_churn", "gamma"),
    # EDM's gamma = min(S_churn / steps, sqrt(2) - 1), here scaled by eta; 5 steps below.
    [(1.0, 1.5, 0.3), (0.5, 1.5, 0.15), (1.0, 100.0, 2**0.5 - 1), (0.5, 100.0, (2**0.5 - 1) / 2)],
)
def test_churn_raises_sigma_as_in_karras_et_al(name, eta, s_churn, gamma):
    # Churn inside [s_tmin, s_tmax] only: sigma_hat = sigma * (1 + gamma), reached by noise of
    # std sqrt(sigma_hat^2 - sigma^2) * s_noise. With eps = 0 only the churn moves x, and a noise
    # of ones makes each push visible.
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    seen = []

    def eps_model(x, sigma):
        seen.append(float(sigma))
        return torch.zeros_like(x)

    options = {"eta": eta, "s_churn": s_churn, "s_tmin": 1.0, "s_tmax": 4.0, "s_noise": 1.1}
    x = torch.zeros(1, dtype=torch.float64)

    def ones(shape):
        return torch.ones(shape, dtype=torch.float64)

    states = [xi for xi, _ in _run(name, eps_model, x, sigmas, ones, **options)]
    churned = [s * (1 + gamma) if 1.0 <= s <= 4.0 else s for s in sigmas[:-1].tolist()]
    first_calls = seen[::2] if name == "heun_churn" else seen
    np.testing.assert_allclose(first_calls, churned, rtol=1e-12)
    if name == "heun_churn":  # Heun's second call is at sigma_next, not churned
        np.testing.assert_allclose(seen[1::2], sigmas[1:-1].tolist(), rtol=1e-12)
    pushes = [1.1 * (h**2 - s**2) ** 0.5 for h, s in zip(churned, sigmas.tolist(), strict=False)]
    np.testing.assert_allclose([float(s) for s in states], np.cumsum(pushes), rtol=1e-12)


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
    # First-order steps (DDIM, Euler, ancestral or churned) plug in a point estimate of x0 and
    # lose its posterior variance, so they need many steps to reach the right spread; the
    # higher-order samplers get there in 100.
    steps = 500 if name in ("ddpm", "ddim", "euler_ancestral", "euler_churn") else 100
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
    [("ddim", 1), ("plms", 1), ("heun", 2), ("dpmpp_2m", 2), ("lms", 3)],
)
def test_ode_samplers_converge_at_their_order(name, order):
    coarse, fine = _ode_error(name, 25), _ode_error(name, 50)
    # Halving the step should cut the error by about 2^order (at least 2^order * 0.75).
    assert coarse / fine > 0.75 * 2**order, f"{name}: {coarse:.2e} -> {fine:.2e}"
    if name != "ddim":
        assert coarse < _ode_error("ddim", 25) / 5
