"""Samplers: walk from pure noise to a sprite through a list of noise levels.

Every sampler is one short generator over a *denoiser*, in the style of k-diffusion. They all work
in the sigma view of the forward process, x = x0 + sigma * eps (see ``schedules``), where the
probability-flow ODE is simply dx/dsigma = eps, so each sampler is a familiar ODE/SDE step:

    denoise(x, sigma) -> eps        the model's noise estimate, guidance already applied
    sampler(denoise, x, sigmas, noise, **options) yields (x_next, x0) once per step

``sigmas`` (from ``Schedule.sigmas``) has steps + 1 entries ending in 0, so the last step lands on
the clean image; ``noise(shape)`` draws the fresh Gaussian noise of stochastic samplers.
Samplers never touch the model, the device or the schedule: the pipeline handles all of that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]
Noise = Callable[[torch.Size], Tensor]
Steps = Iterator[tuple[Tensor, Tensor]]


def _ancestral(sigma: Tensor, sigma_next: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """Split the step to ``sigma_next`` into a deterministic part and fresh noise ``sigma_up``.

    This is DDIM's eta-step written with sigmas: eta = 0 is DDIM, eta = 1 is DDPM's posterior
    sample (variance beta-tilde), at any stride.
    """
    up = eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt()
    up = torch.minimum(up, sigma_next)
    return (sigma_next**2 - up**2).sqrt(), up


def ddim(denoise: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise, eta: float = 0.0) -> Steps:
    """DDIM (Song et al. 2021); deterministic at eta = 0, DDPM-like at eta = 1."""
    for sigma, sigma_next in pairwise(sigmas):
        eps = denoise(x, sigma)
        x0 = x - sigma * eps
        down, up = _ancestral(sigma, sigma_next, eta)
        x = x0 + down * eps
        if up > 0:
            x = x + up * noise(x.shape)
        yield x, x0


def ddpm(denoise: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise) -> Steps:
    """DDPM ancestral sampling (Ho et al. 2020), generalised to strided steps: DDIM with eta = 1."""
    return ddim(denoise, x, sigmas, noise, eta=1.0)


def euler_ancestral(
    denoise: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise, eta: float = 1.0
) -> Steps:
    """Euler ancestral (k-diffusion): an Euler step down to sigma_down, then noise up to sigma_next.

    In the sigma view this is the same update as DDIM with the same eta (Karras et al. 2022,
    Sec. 4); it is kept under its own name, with eta = 1 by default, as users know it.
    """
    return ddim(denoise, x, sigmas, noise, eta=eta)


def heun(denoise: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise) -> Steps:
    """Heun's second-order method (Karras et al. 2022): two model calls a step, one on the last."""
    for sigma, sigma_next in pairwise(sigmas):
        eps = denoise(x, sigma)
        x0 = x - sigma * eps
        x_euler = x + (sigma_next - sigma) * eps
        if sigma_next > 0:
            eps_next = denoise(x_euler, sigma_next)
            x = x + (sigma_next - sigma) * (eps + eps_next) / 2
        else:
            x = x_euler
        yield x, x0


def _adams_bashforth(history: list[Tensor]) -> Tensor:
    """Combine past eps estimates (newest last) into one, with Adams-Bashforth weights."""
    weights = {1: [1], 2: [-1 / 2, 3 / 2], 3: [5 / 12, -16 / 12, 23 / 12]}
    w = weights.get(len(history), [-9 / 24, 37 / 24, -59 / 24, 55 / 24])
    return sum(wi * e for wi, e in zip(w, history[-len(w) :], strict=True))


def pndm(denoise: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise) -> Steps:
    """PLMS from PNDM (Liu et al. 2022): DDIM steps driven by a 4th-order multistep eps.

    The first three steps use lower-order Adams-Bashforth (as diffusers' PNDM with
    ``skip_prk_steps``), so every step costs one model call.
    """
    history: list[Tensor] = []
    for sigma, sigma_next in pairwise(sigmas):
        history = [*history[-3:], denoise(x, sigma)]
        eps = _adams_bashforth(history)
        x0 = x - sigma * eps
        x = x0 + sigma_next * eps
        yield x, x0


def _lms_coefficient(sigmas: np.ndarray, i: int, j: int, order: int) -> float:
    """Integral over [sigma_i, sigma_i+1] of the Lagrange basis polynomial of point i - j."""
    nodes = [sigmas[i - k] for k in range(order) if k != j]
    poly = np.polynomial.Polynomial.fromroots(nodes) if nodes else np.polynomial.Polynomial([1.0])
    antiderivative = (poly / np.prod([sigmas[i - j] - n for n in nodes])).integ()
    return float(antiderivative(sigmas[i + 1]) - antiderivative(sigmas[i]))


def lms(denoise: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise, order: int = 4) -> Steps:
    """Linear multistep (k-diffusion): integrate a polynomial through the last ``order`` eps."""
    sig = sigmas.double().cpu().numpy()
    history: list[Tensor] = []
    for i, sigma in enumerate(sigmas[:-1]):
        eps = denoise(x, sigma)
        x0 = x - sigma * eps
        history = [eps, *history[: order - 1]]
        x = x + sum(_lms_coefficient(sig, i, j, len(history)) * e for j, e in enumerate(history))
        yield x, x0


def dpmpp_2m(denoise: Denoiser, x: Tensor, sigmas: Tensor, noise: Noise) -> Steps:
    """DPM-Solver++(2M) (Lu et al. 2022), as in k-diffusion: second order from one call a step.

    It steps in lambda = -log(sigma) and extrapolates x0 from the last two estimates; the first
    step, and the last one (to sigma = 0), are first order.
    """
    old_x0, h_last = None, None
    for sigma, sigma_next in pairwise(sigmas):
        x0 = x - sigma * denoise(x, sigma)
        if sigma_next == 0:
            x = x0
        else:
            h = sigma.log() - sigma_next.log()
            d = x0
            if old_x0 is not None:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
            x = (sigma_next / sigma) * x - torch.expm1(-h) * d
            h_last = h
        old_x0 = x0
        yield x, x0


@dataclass(frozen=True)
class SamplerSpec:
    """What the pipeline and the UI need to know about a sampler."""

    fn: Callable[..., Steps]
    default_steps: int
    uses_eta: bool = False
    default_eta: float | None = None
    calls_per_step: float = 1.0
    description: str = ""

    def calls(self, steps: int) -> int:
        """Network calls for ``steps`` steps (Heun's last step is a single Euler call)."""
        return round(steps * self.calls_per_step) - (1 if self.calls_per_step > 1 else 0)


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(ddpm, 500, description="DDPM ancestral sampling (stochastic)"),
    "ddim": SamplerSpec(ddim, 25, True, 0.0, description="DDIM; eta adds noise, 0 = deterministic"),
    "pndm": SamplerSpec(pndm, 25, description="PLMS: 4th-order multistep DDIM"),
    "lms": SamplerSpec(lms, 25, description="k-diffusion linear multistep, order 4"),
    "euler_ancestral": SamplerSpec(
        euler_ancestral, 30, True, 1.0, description="Euler ancestral (stochastic)"
    ),
    "heun": SamplerSpec(heun, 15, calls_per_step=2.0, description="Heun 2nd order, 2 calls/step"),
    "dpmpp_2m": SamplerSpec(dpmpp_2m, 20, description="DPM-Solver++(2M): best at few steps"),
}
