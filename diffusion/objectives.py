"""What the network predicts, how its training loss is weighted, and at which noise levels it
trains.

Three parameterisations of one forward process x_t = a * x0 + s * eps, with a = sqrt(abar) and
s = sqrt(1 - abar) (the variance-preserving view the network sees), or in the sigma view
x = x_t / a = x0 + sigma * eps with sigma^2 = (1 - abar) / abar:

- ``eps``: the network predicts the noise (Ho et al. 2020);
- ``v``: it predicts v = a * eps - s * x0 (Salimans & Ho 2022), which is well scaled at every
  noise level, where eps says almost nothing about x0 at high noise;
- ``edm``: Karras et al. (2022)'s preconditioning. The denoiser is
  D(x) = c_skip * x + c_out * F with c_skip = sd^2 / (sigma^2 + sd^2) and
  c_out = sigma * sd / sqrt(sigma^2 + sd^2), for a data spread sd (``SIGMA_DATA``), and the
  network F is trained on an unweighted loss. With sd = 1 this is v-prediction (F = -v); their
  sd = 0.5 moves the point where F switches from "predict the noise" to "predict the image"
  to the data's own scale. The network's input stays the VP view, c_in = 1 / sqrt(1 + sigma^2),
  and its noise input stays t: only the output and the loss are EDM's.

Samplers always receive eps (see ``samplers``), so :func:`eps_from_output` converts.

Noise levels in training (:func:`training_timesteps`): ``uniform`` in t (DDPM), or
``lognormal``, log sigma ~ N(-1.2, 1.2^2) (Karras et al.'s P_mean and P_std), which spends the
steps on the middle noise levels where the loss can still fall.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .schedules import Schedule

PREDICTIONS = ("eps", "v", "edm")
NOISE_LEVELS = ("uniform", "lognormal")
# Karras et al. 2022's data spread and log-normal noise levels, used for every dataset there.
SIGMA_DATA = 0.5
LOGNORMAL_MEAN, LOGNORMAL_STD = -1.2, 1.2


def _rows(abar: Tensor | float, like: Tensor) -> Tensor:
    """``abar`` (a scalar or one per row) shaped to broadcast against ``like``."""
    abar = torch.as_tensor(abar, dtype=like.dtype, device=like.device)
    return abar.view(-1, *([1] * (like.ndim - 1))) if abar.ndim else abar


def _sigma(abar: Tensor) -> Tensor:
    return ((1 - abar) / abar).sqrt()


def vp_input(x: Tensor, sigma: Tensor | float) -> Tensor:
    """The sigma view x0 + sigma * eps -> the network's variance-preserving view.

    Dividing by sqrt(1 + sigma^2) gives a * x0 + s * eps with a = 1 / sqrt(1 + sigma^2)
    (Karras et al. 2022 call this factor c_in).
    """
    return x / (1 + torch.as_tensor(sigma) ** 2).sqrt()


def training_target(prediction: str, x0: Tensor, noise: Tensor, abar: Tensor) -> Tensor:
    """What the network should output for clean ``x0``, ``noise`` and per-row ``abar``."""
    if prediction == "eps":
        return noise
    abar = _rows(abar, x0)
    if prediction == "v":
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0
    if prediction == "edm":
        # F = (x0 - c_skip * x) / c_out with x = x0 + sigma * noise, written without dividing by
        # sigma so that it stays finite at sigma = 0.
        sigma, sd = _sigma(abar), SIGMA_DATA
        return (sigma / sd * x0 - sd * noise) / (sigma**2 + sd**2).sqrt()
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def eps_from_output(prediction: str, output: Tensor, x_vp: Tensor, abar: Tensor) -> Tensor:
    """The noise estimate implied by the network's ``output`` at the VP input ``x_vp``."""
    if prediction == "eps":
        return output
    abar = _rows(abar, output)
    if prediction == "edm":
        # eps = (x - D) / sigma with x = x_vp / a and D = c_skip * x + c_out * F.
        sigma, sd = _sigma(abar), SIGMA_DATA
        x = x_vp / abar.sqrt()
        return (sigma * x - sd * (sigma**2 + sd**2).sqrt() * output) / (sigma**2 + sd**2)
    if prediction == "v":
        # eps = s * x_t + a * v, from x_t = a x0 + s eps and v = a eps - s x0, as a^2 + s^2 = 1.
        return (1 - abar).sqrt() * x_vp + abar.sqrt() * output
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def x0_from_eps(x_vp: Tensor, eps: Tensor, abar: Tensor) -> Tensor:
    """The clean-image estimate (x_t - s * eps) / a, with per-row ``abar``."""
    abar = abar.view(-1, *([1] * (x_vp.ndim - 1))).to(x_vp.dtype)
    return (x_vp - (1 - abar).sqrt() * eps) / abar.sqrt()


def loss_weight(prediction: str, snr: Tensor, min_snr_gamma: float | None) -> Tensor:
    """Per-row weight of the MSE loss: 1, or Min-SNR-gamma (Hang et al. 2023).

    EDM's loss is unweighted on F by design (its lambda(sigma) = 1 / c_out^2 cancels c_out), so
    ``edm`` refuses a Min-SNR weight.

    Min-SNR weighs the implied x0 error by min(SNR, gamma), so that nearly clean timesteps stop
    dominating the gradient. On eps's loss that is min(SNR, gamma) / SNR; on v's, whose MSE
    equals (SNR + 1) times the x0 error, min(SNR, gamma) / (SNR + 1).
    """
    if prediction == "edm" and min_snr_gamma is not None:
        raise ValueError("EDM preconditioning weighs its loss itself: drop the Min-SNR weight")
    if min_snr_gamma is None:
        return torch.ones_like(snr)
    clipped = snr.clamp(max=min_snr_gamma)
    return clipped / snr if prediction == "eps" else clipped / (snr + 1)


def training_timesteps(
    kind: str, schedule: Schedule, rows: int, generator: torch.Generator | None = None
) -> Tensor:
    """Fractional timesteps in [0, T] for one batch, drawn by the ``kind`` of NOISE_LEVELS."""
    if kind == "uniform":
        return torch.rand(rows, generator=generator) * schedule.T
    if kind == "lognormal":
        log_sigma = LOGNORMAL_MEAN + LOGNORMAL_STD * torch.randn(rows, generator=generator)
        # Levels beyond the schedule's ends are clamped to them: it has no others to sample.
        return schedule.t_from_sigma(log_sigma.exp()).float()
    raise ValueError(f"noise levels must be one of {NOISE_LEVELS}, got {kind!r}")
