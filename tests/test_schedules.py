import math

import pytest
import torch

from diffusion import Schedule


def test_linear_alpha_bar_is_the_cumulative_product_at_integer_steps():
    s = Schedule.linear(T=500)
    betas = torch.linspace(1e-4, 0.02, 500, dtype=torch.float64)
    expected = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
    torch.testing.assert_close(s.alpha_bar(torch.arange(501.0)), expected)


def test_fractional_timesteps_interpolate_monotonically():
    s = Schedule.cosine(T=100)
    t = torch.linspace(0, 100, 1001)
    abar = s.alpha_bar(t)
    assert abar[0] == 1 and bool((abar[1:] < abar[:-1]).all())
    mid = s.alpha_bar(torch.tensor(10.5))
    assert s.alpha_bar(11.0) < mid < s.alpha_bar(10.0)
    # Geometric mean: log(alpha_bar) is linear between steps.
    torch.testing.assert_close(mid, (s.alpha_bar(10.0) * s.alpha_bar(11.0)).sqrt())


def test_cosine_follows_nichol_and_dhariwal():
    s = Schedule.cosine(T=1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 250, 500, 900):
        assert float(s.alpha_bar(float(t))) == pytest.approx(f(t) / f(0), rel=1e-9)


def test_quadratic_betas_are_linear_in_sqrt():
    s = Schedule.quadratic(T=10, beta_start=1e-4, beta_end=0.04)
    torch.testing.assert_close(s.betas.sqrt(), torch.linspace(0.01, 0.2, 10, dtype=torch.float64))


@pytest.mark.parametrize("make", [Schedule.linear, Schedule.cosine, Schedule.quadratic])
def test_sigma_snr_and_inverse_agree(make):
    s = make(T=200)
    t = torch.tensor([0.0, 0.3, 1.0, 17.25, 100.0, 199.9, 200.0], dtype=torch.float64)
    sigma = s.sigma(t)
    torch.testing.assert_close(s.snr(t[1:]), 1 / sigma[1:] ** 2)
    torch.testing.assert_close(s.t_from_sigma(sigma), t, atol=1e-6, rtol=1e-6)


def test_forward_process_moments():
    s = Schedule.linear(T=500)
    x0 = torch.full((20000, 1), 0.8)
    for t in (10.0, 250.0, 499.0):
        tt = torch.full((20000,), t)
        xt = s.q_sample(x0, tt, torch.randn(20000, 1, generator=torch.Generator().manual_seed(0)))
        abar = float(s.alpha_bar(t))
        assert float(xt.mean()) == pytest.approx(math.sqrt(abar) * 0.8, abs=0.02)
        # sqrt(1 - abar), not (1 - abar): the course's training bug would fail here.
        assert float(xt.var()) == pytest.approx(1 - abar, rel=0.04)


def test_uniform_sigmas_visit_every_step_at_full_count():
    s = Schedule.linear(T=50)
    sig = s.sigmas(50)
    torch.testing.assert_close(sig[:-1], s.sigma(torch.arange(50, 0, -1, dtype=torch.float64)))
    assert sig[-1] == 0 and len(s.sigmas(1)) == 2 and s.sigmas(1)[0] == s.sigma(50.0)


def test_karras_sigmas_span_the_schedule():
    s = Schedule.linear(T=500)
    sig = s.sigmas(20, "karras")
    assert len(sig) == 21 and sig[-1] == 0 and bool((sig[1:] < sig[:-1]).all())
    torch.testing.assert_close(sig[0], s.sigma(500.0))
    torch.testing.assert_close(sig[-2], s.sigma(1.0))


@pytest.mark.parametrize("bad", [0, 51, -3])
def test_step_counts_out_of_range_are_refused(bad):
    with pytest.raises(ValueError, match="between 1 and 50"):
        Schedule.linear(T=50).sigmas(bad)


def test_config_round_trip():
    for s in (Schedule.linear(T=300), Schedule.cosine(T=64, s=0.01), Schedule.quadratic()):
        back = Schedule.from_config(s.to_config())
        torch.testing.assert_close(back.betas, s.betas)
    with pytest.raises(ValueError, match="unknown schedule"):
        Schedule.from_config({"kind": "zigzag"})
