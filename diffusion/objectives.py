"""What the network predicts, and how its training loss is weighted.

Two parameterisations of one forward process x_t = a * x0 + s * eps, with a = sqrt(abar) and
s = sqrt(1 - abar) (the variance-preserving view the network sees):

- ``eps``: the network predicts the noise (Ho et al. 2020);
- ``v``: it predicts v = a * eps - s * x0 (Salimans & Ho 2022), which is well scaled at every
  noise level, where eps says almost nothing about x0 at high noise.

Samplers always receive eps (see ``samplers``), so :func:`eps_from_output` converts.
"""

from __future__ import annotations

import torch
from torch import Tensor

PREDICTIONS = ("eps", "v")


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
    if prediction == "v":
        abar = abar.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def eps_from_output(prediction: str, output: Tensor, x_vp: Tensor, abar: Tensor) -> Tensor:
    """The noise estimate implied by the network's ``output`` at the VP input ``x_vp``."""
    if prediction == "eps":
        return output
    if prediction == "v":
        abar = torch.as_tensor(abar, dtype=output.dtype, device=output.device)
        abar = abar.view(-1, *([1] * (output.ndim - 1))) if abar.ndim else abar
        # eps = s * x_t + a * v, from x_t = a x0 + s eps and v = a eps - s x0, as a^2 + s^2 = 1.
        return (1 - abar).sqrt() * x_vp + abar.sqrt() * output
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def x0_from_eps(x_vp: Tensor, eps: Tensor, abar: Tensor) -> Tensor:
    """The clean-image estimate (x_t - s * eps) / a, with per-row ``abar``."""
    abar = abar.view(-1, *([1] * (x_vp.ndim - 1))).to(x_vp.dtype)
    return (x_vp - (1 - abar).sqrt() * eps) / abar.sqrt()


def loss_weight(prediction: str, snr: Tensor, min_snr_gamma: float | None) -> Tensor:
    """Per-row weight of the MSE loss: 1, or Min-SNR-gamma (Hang et al. 2023).

    Min-SNR weighs the implied x0 error by min(SNR, gamma), so that nearly clean timesteps stop
    dominating the gradient. On eps's loss that is min(SNR, gamma) / SNR; on v's, whose MSE
    equals (SNR + 1) times the x0 error, min(SNR, gamma) / (SNR + 1).
    """
    if min_snr_gamma is None:
        return torch.ones_like(snr)
    clipped = snr.clamp(max=min_snr_gamma)
    return clipped / snr if prediction == "eps" else clipped / (snr + 1)
