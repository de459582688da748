"""v-prediction, EDM preconditioning, Min-SNR weighting, noise levels, attention and
self-conditioning: the training levers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion import ContextUnet, Schedule, SpritePipeline, UnetConfig, objectives
from tests.conftest import LABELS, MixtureOracle, toy_images


def test_v_target_and_its_inverse():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    abar = torch.tensor([0.999, 0.7, 0.2, 0.01])
    a, s = abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)
    xt = a * x0 + s * noise
    v = objectives.training_target("v", x0, noise, abar)
    torch.testing.assert_close(v, a * noise - s * x0)
    assert objectives.training_target("eps", x0, noise, abar) is noise
    # Turning the target back into eps and x0 recovers the noise and the clean image.
    eps = objectives.eps_from_output("v", v, xt, abar)
    torch.testing.assert_close(eps, noise, atol=1e-5, rtol=0)
    torch.testing.assert_close(objectives.x0_from_eps(xt, eps, abar), x0, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="prediction"):
        objectives.training_target("x0", x0, noise, abar)


def _edm_coefficients(abar: torch.Tensor, sd: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Karras et al.'s c_skip and c_out, written as in their Table 1."""
    sigma = ((1 - abar) / abar).sqrt().view(-1, 1, 1, 1)
    return sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt()


def test_edm_target_is_karras_preconditioning_and_inverts():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    abar = torch.tensor([0.999, 0.7, 0.2, 0.01])
    sigma = ((1 - abar) / abar).sqrt().view(-1, 1, 1, 1)
    c_skip, c_out = _edm_coefficients(abar, objectives.SIGMA_DATA)
    target = objectives.training_target("edm", x0, noise, abar)
    # F = (x0 - c_skip * x) / c_out for the sigma view x = x0 + sigma * noise.
    torch.testing.assert_close(target, (x0 - c_skip * (x0 + sigma * noise)) / c_out)
    xt = abar.sqrt().view(-1, 1, 1, 1) * x0 + (1 - abar).sqrt().view(-1, 1, 1, 1) * noise
    eps = objectives.eps_from_output("edm", target, xt, abar)
    torch.testing.assert_close(eps, noise, atol=1e-5, rtol=0)
    torch.testing.assert_close(objectives.x0_from_eps(xt, eps, abar), x0, atol=1e-4, rtol=0)
    # Clean input (sigma = 0): the target is finite and the skip path carries the whole image.
    clean = objectives.training_target("edm", x0[:1], noise[:1], torch.ones(1))
    torch.testing.assert_close(clean, -noise[:1])


def test_edm_with_unit_data_spread_is_v_prediction(monkeypatch):
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    abar = torch.tensor([0.9, 0.5, 0.05])
    monkeypatch.setattr(objectives, "SIGMA_DATA", 1.0)
    v = objectives.training_target("v", x0, noise, abar)
    torch.testing.assert_close(objectives.training_target("edm", x0, noise, abar), -v)
    monkeypatch.setattr(objectives, "SIGMA_DATA", 0.5)
    assert not torch.allclose(objectives.training_target("edm", x0, noise, abar), -v)


def test_edm_weighs_its_own_loss():
    snr = torch.tensor([0.25, 1.0, 100.0])
    torch.testing.assert_close(objectives.loss_weight("edm", snr, None), torch.ones(3))
    with pytest.raises(ValueError, match="Min-SNR"):
        objectives.loss_weight("edm", snr, 5.0)


def test_noise_levels():
    schedule = Schedule.linear(T=500)
    g = torch.Generator().manual_seed(0)
    uniform = objectives.training_timesteps("uniform", schedule, 20_000, g)
    assert float(uniform.min()) >= 0 and float(uniform.max()) <= 500
    assert abs(float(uniform.mean()) - 250) < 5
    lognormal = objectives.training_timesteps("lognormal", schedule, 20_000, g)
    log_sigma = schedule.sigma(lognormal).log()
    # Karras et al.'s P_mean = -1.2, P_std = 1.2 (their tails beyond this schedule are clamped).
    assert abs(float(log_sigma.median()) + 1.2) < 0.05
    assert abs(float(log_sigma.std()) - 1.2) < 0.05
    assert float(lognormal.max()) <= 500 and float(lognormal.min()) > 0
    with pytest.raises(ValueError, match="noise levels"):
        objectives.training_timesteps("cosine", schedule, 4, g)


def test_vp_input_is_the_variance_preserving_view():
    x0, noise, sigma = torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 2.0), torch.tensor(3.0)
    abar = 1 / (1 + sigma**2)
    expected = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    torch.testing.assert_close(objectives.vp_input(x0 + sigma * noise, sigma), expected)


def test_min_snr_weights():
    snr = torch.tensor([0.25, 1.0, 5.0, 100.0])
    torch.testing.assert_close(objectives.loss_weight("eps", snr, None), torch.ones(4))
    # eps: min(snr, 5) / snr -> 1 below gamma, then gamma / snr.
    torch.testing.assert_close(
        objectives.loss_weight("eps", snr, 5.0), torch.tensor([1.0, 1.0, 1.0, 0.05])
    )
    # v: min(snr, 5) / (snr + 1).
    torch.testing.assert_close(
        objectives.loss_weight("v", snr, 5.0), torch.tensor([0.2, 0.5, 5 / 6, 5 / 101])
    )


class OutputOracle(torch.nn.Module):
    """The exact mixture model, answering in v or in EDM's F instead of eps."""

    def __init__(self, eps_oracle: MixtureOracle, prediction: str):
        super().__init__()
        self.eps = eps_oracle
        self.config = UnetConfig(num_labels=3, resolution=8, prediction=prediction)

    def forward(self, x, t, context):
        abar = self.eps.schedule.alpha_bar(t.double()).to(x.dtype)
        eps = self.eps(x, t, context)
        a, s = abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)
        x0 = (x - s * eps) / a
        if self.config.prediction == "v":
            return a * eps - s * x0
        c_skip, c_out = _edm_coefficients(abar, objectives.SIGMA_DATA)
        return (x0 - c_skip * x / a) / c_out


@pytest.mark.parametrize(
    ("prediction", "sampler"),
    [("v", "ddim"), ("v", "dpmpp_2m"), ("v", "heun"), ("edm", "dpmpp_2m"), ("edm", "heun")],
)
def test_v_and_edm_models_sample_like_the_eps_model(prediction, sampler):
    schedule = Schedule.linear(T=500)
    oracle = MixtureOracle(toy_images(), [0.5, 0.3, 0.2], [0, 1, 2], schedule, len(LABELS))
    eps_pipe = SpritePipeline(oracle, schedule, LABELS, device="cpu", resolution=8)
    other = SpritePipeline(OutputOracle(oracle, prediction), schedule, LABELS, device="cpu")
    a = eps_pipe.generate("b", n=4, sampler=sampler, steps=20, guidance=2.0, seed=3)
    b = other.generate("b", n=4, sampler=sampler, steps=20, guidance=2.0, seed=3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_attention_starts_as_identity_and_learns():
    torch.manual_seed(0)
    plain = ContextUnet(num_labels=3, resolution=8, channels=(8, 16), emb_dim=16)
    torch.manual_seed(0)
    attn = ContextUnet(num_labels=3, resolution=8, channels=(8, 16), emb_dim=16, attention=(1,))
    assert sum("attn" in k for k in attn.state_dict()) > 0
    assert sum("attn" in k for k in plain.state_dict()) == 0
    # Shared weights equal, attention output projections zero: the same function at init.
    attn.load_state_dict(plain.state_dict(), strict=False)
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.1)
    attn.load_state_dict(plain.state_dict(), strict=False)
    x, t, c = torch.randn(2, 3, 8, 8), torch.tensor([10.0, 300.0]), torch.eye(3)[:2]
    torch.testing.assert_close(attn(x, t, c), plain(x, t, c))
    for name, p in attn.named_parameters():
        if "attn.proj" in name:
            torch.nn.init.normal_(p, std=0.1)
    assert not torch.allclose(attn(x, t, c), plain(x, t, c))
    with pytest.raises(ValueError, match="attention levels"):
        UnetConfig(channels=(8, 16), attention=(2,))


def test_self_conditioning_feeds_the_previous_estimate():
    torch.manual_seed(0)
    model = ContextUnet(
        num_labels=3, resolution=8, channels=(8, 16), emb_dim=16, self_condition=True
    )
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    assert model.stem.in_channels == 6
    x, t, c = torch.randn(2, 3, 8, 8), torch.tensor([10.0, 300.0]), torch.eye(3)[:2]
    torch.testing.assert_close(model(x, t, c), model(x, t, c, torch.zeros_like(x)))
    assert not torch.allclose(model(x, t, c), model(x, t, c, torch.ones_like(x)))

    seen = []
    forward = model.forward

    def spy(x, t, c, x0_prev=None):
        seen.append(None if x0_prev is None else x0_prev.clone())
        return forward(x, t, c, x0_prev)

    model.forward = spy
    pipe = SpritePipeline(model, Schedule.linear(T=100), LABELS, device="cpu")
    pipe.generate("a", n=2, sampler="ddim", steps=4, guidance=2.0, seed=0)
    assert len(seen) == 4 and bool((seen[0] == 0).all())
    # Later calls see an earlier estimate, the same for the conditional and unconditional half.
    assert all(s is not None and s.abs().sum() > 0 for s in seen[1:])
    assert torch.equal(seen[2][:2], seen[2][2:])
