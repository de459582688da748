"""Samplers: walk from pure noise to a sprite through a list of noise levels.

Every sampler is one short generator over an *eps model*, in the style of k-diffusion. They all
work in the sigma view of the forward process, x = x0 + sigma * eps (see ``schedules``), where the
probability-flow ODE is simply dx/dsigma = eps, so each sampler is a familiar ODE/SDE step:

    eps_model(x, sigma) -> eps      the model's noise estimate, guidance already applied
    sampler(eps_model, x, sigmas, noise, **options) yields (x_next, x0) once per step

(k-diffusion's samplers take a *denoiser* D(x, sigma) = x0 instead; the two are the same
information, x0 = x - sigma * eps.) ``sigmas`` (from ``Schedule.sigmas``) has steps + 1 entries
ending in 0, so the last step lands on the clean image; ``noise(shape)`` draws the fresh Gaussian
noise of stochastic samplers. Samplers never touch the model, the device or the schedule: the
pipeline handles all of that. ``SAMPLERS`` lists them by name; :func:`canonical_sampler` also
accepts the old names in ``SAMPLER_ALIASES``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from torch import Tensor

EpsModel = Callable[[Tensor, Tensor], Tensor]
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


def ddim(eps_model: EpsModel, x: Tensor, sigmas: Tensor, noise: Noise, eta: float = 0.0) -> Steps:
    """DDIM (Song et al. 2021); deterministic at eta = 0, DDPM-like at eta = 1."""
    for sigma, sigma_next in pairwise(sigmas):
        eps = eps_model(x, sigma)
        x0 = x - sigma * eps
        down, up = _ancestral(sigma, sigma_next, eta)
        x = x0 + down * eps
        if up > 0:
            x = x + up * noise(x.shape)
        yield x, x0


def ddpm(eps_model: EpsModel, x: Tensor, sigmas: Tensor, noise: Noise) -> Steps:
    """DDPM ancestral sampling (Ho et al. 2020), generalised to strided steps: DDIM with eta = 1."""
    return ddim(eps_model, x, sigmas, noise, eta=1.0)


def euler_ancestral(
    eps_model: EpsModel, x: Tensor, sigmas: Tensor, noise: Noise, eta: float = 1.0
) -> Steps:
    """Euler ancestral (k-diffusion): an Euler step down to sigma_down, then noise up to sigma_next.

    In the sigma view this is the same update as DDIM with the same eta (Karras et al. 2022,
    Sec. 4); it is kept under its own name, with eta = 1 by default, as users know it.
    """
    return ddim(eps_model, x, sigmas, noise, eta=eta)


# The default total churn (EDM's S_churn): with gamma = s_churn / steps per step (capped at
# sqrt(2) - 1), 6 gives gamma = 0.4 at 15 steps, 0.24 at 25 and 0.2 at 30: a clear dose of fresh
# noise at the step counts the app runs, fading as steps grow so the run tends to one fixed SDE.
S_CHURN = 6.0


def _churn_steps(
    eps_model: EpsModel,
    x: Tensor,
    sigmas: Tensor,
    noise: Noise,
    *,
    second_order: bool,
    eta: float,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
) -> Steps:
    """Karras et al. 2022 ("EDM"), Algorithm 2: churn, then an Euler or a Heun step.

    Churn first moves the sample back *up* the noise ladder, from sigma to
    sigma_hat = sigma * (1 + gamma), by adding fresh Gaussian noise of variance
    sigma_hat^2 - sigma^2 (times s_noise^2): the forward process run a little, so if x was a sample
    at sigma it is one at sigma_hat. The ODE step from sigma_hat down to sigma_next then removes
    more noise than was added. The fresh noise washes out part of the errors earlier steps made
    (a Langevin-like correction, EDM Sec. 4), which is why this helps at few steps.

    gamma = eta * min(s_churn / steps, sqrt(2) - 1) where s_tmin <= sigma <= s_tmax, else 0, with
    steps = len(sigmas) - 1: s_churn is the churn of the whole run, spread over its steps, and the
    cap stops one step from more than doubling the noise variance. eta = 1 is EDM's gamma exactly
    (k-diffusion's and diffusers' ``s_churn``); eta = 0 adds no noise and leaves the plain ODE step.
    """
    gamma_max = eta * min(s_churn / (len(sigmas) - 1), math.sqrt(2) - 1)
    for sigma, sigma_next in pairwise(sigmas):
        gamma = gamma_max if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + (sigma_hat**2 - sigma**2).sqrt() * s_noise * noise(x.shape)
        eps = eps_model(x, sigma_hat)
        x0 = x - sigma_hat * eps
        x_euler = x + (sigma_next - sigma_hat) * eps
        if second_order and sigma_next > 0:
            # Heun: average the slope at both ends of the step (trapezoidal rule). The last step,
            # to sigma = 0, stays Euler: eps is undefined there (x0 = x).
            eps_next = eps_model(x_euler, sigma_next)
            x = x + (sigma_next - sigma_hat) * (eps + eps_next) / 2
        else:
            x = x_euler
        yield x, x0


def euler_churn(
    eps_model: EpsModel,
    x: Tensor,
    sigmas: Tensor,
    noise: Noise,
    eta: float = 1.0,
    s_churn: float = S_CHURN,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> Steps:
    """EDM's stochastic sampler with Euler steps (Karras et al. 2022, Algorithm 2 with first-order
    steps; k-diffusion's ``sample_euler`` and diffusers' ``EulerDiscreteScheduler`` with
    ``s_churn``): one model call a step. ``eta`` scales the churn: 0 is the plain Euler ODE step,
    i.e. DDIM. See :func:`_churn_steps` for what the options mean."""
    churn = {"s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
    return _churn_steps(eps_model, x, sigmas, noise, second_order=False, eta=eta, **churn)


def heun_churn(
    eps_model: EpsModel,
    x: Tensor,
    sigmas: Tensor,
    noise: Noise,
    eta: float = 1.0,
    s_churn: float = S_CHURN,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> Steps:
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2; k-diffusion's ``sample_heun``
    with ``s_churn``): churn, then a Heun step; two model calls a step, one on the last. ``eta``
    scales the churn: 0 is exactly :func:`heun`. See :func:`_churn_steps` for the options."""
    churn = {"s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
    return _churn_steps(eps_model, x, sigmas, noise, second_order=True, eta=eta, **churn)


def heun(eps_model: EpsModel, x: Tensor, sigmas: Tensor, noise: Noise) -> Steps:
    """Heun's second-order method (Karras et al. 2022): two model calls a step, one on the last.

    The deterministic sampler of EDM (Algorithm 1): :func:`heun_churn` without churn.
    """
    return heun_churn(eps_model, x, sigmas, noise, eta=0.0)


def _adams_bashforth(history: list[Tensor]) -> Tensor:
    """Combine past eps estimates (newest last) into one, with Adams-Bashforth weights."""
    weights = {1: [1], 2: [-1 / 2, 3 / 2], 3: [5 / 12, -16 / 12, 23 / 12]}
    w = weights.get(len(history), [-9 / 24, 37 / 24, -59 / 24, 55 / 24])
    return sum(wi * e for wi, e in zip(w, history[-len(w) :], strict=True))


def plms(eps_model: EpsModel, x: Tensor, sigmas: Tensor, noise: Noise) -> Steps:
    """PLMS from PNDM (Liu et al. 2022): DDIM steps driven by a 4th-order multistep eps.

    The first three steps use lower-order Adams-Bashforth (as diffusers' PNDM with
    ``skip_prk_steps``), so every step costs one model call.
    """
    history: list[Tensor] = []
    for sigma, sigma_next in pairwise(sigmas):
        history = [*history[-3:], eps_model(x, sigma)]
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


def lms(eps_model: EpsModel, x: Tensor, sigmas: Tensor, noise: Noise, order: int = 4) -> Steps:
    """Linear multistep (k-diffusion): integrate a polynomial through the last ``order`` eps."""
    sig = sigmas.double().cpu().numpy()
    history: list[Tensor] = []
    for i, sigma in enumerate(sigmas[:-1]):
        eps = eps_model(x, sigma)
        x0 = x - sigma * eps
        history = [eps, *history[: order - 1]]
        x = x + sum(_lms_coefficient(sig, i, j, len(history)) * e for j, e in enumerate(history))
        yield x, x0


def dpmpp_2m_sde(
    eps_model: EpsModel, x: Tensor, sigmas: Tensor, noise: Noise, eta: float = 1.0
) -> Steps:
    """DPM-Solver++(2M) SDE: the SDE variant of DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095),
    as k-diffusion's ``sample_dpmpp_2m_sde`` with its default midpoint solver and s_noise = 1,
    and diffusers' ``sde-dpmsolver++``. One model call a step.

    It is an *exponential integrator* in lambda = -log(sigma): with the step h = lambda_next -
    lambda and the x0 estimate held fixed over the step, the linear part of the reverse SDE
    (eta = 1; Song et al. 2021) or of the probability-flow ODE (eta = 0) is solved exactly. With
    a = e^{-(1 + eta) h} (and e^{-h} = sigma_next / sigma):

        x_next = a * x + (1 - a) * x0 + sigma_next * sqrt(1 - e^{-2 eta h}) * z

    a blend of the current sample and its x0 estimate, where fresh noise z replaces the part of
    the old noise that the SDE forgets, so that x_next has noise level sigma_next again. "2M"
    (second order, multistep): x0 is extrapolated linearly in lambda from this estimate and the
    previous one, at no extra model call. The first step has no previous estimate and the last
    one (to sigma = 0) returns x0 itself: both are first order. eta in [0, 1] scales the noise;
    eta = 0 is :func:`dpmpp_2m` exactly.
    """
    old_x0, h_last = None, None
    for sigma, sigma_next in pairwise(sigmas):
        x0 = x - sigma * eps_model(x, sigma)
        if sigma_next == 0:
            x = x0
        else:
            h = sigma.log() - sigma_next.log()
            d = x0
            if old_x0 is not None:
                # The midpoint rule: x0 extrapolated to half a step on, with r = h_last / h
                # turning the slope (x0 - old_x0) / h_last into the step's own units.
                r = h_last / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
            x = (sigma_next / sigma) * (-eta * h).exp() * x - torch.expm1(-(1 + eta) * h) * d
            if eta > 0:
                x = x + sigma_next * (-torch.expm1(-2 * eta * h)).sqrt() * noise(x.shape)
            h_last = h
        old_x0 = x0
        yield x, x0


def dpmpp_2m(eps_model: EpsModel, x: Tensor, sigmas: Tensor, noise: Noise) -> Steps:
    """DPM-Solver++(2M) (Lu et al. 2022), as in k-diffusion: second order from one call a step.

    It steps in lambda = -log(sigma) and extrapolates x0 from the last two estimates; the first
    step, and the last one (to sigma = 0), are first order. It is :func:`dpmpp_2m_sde` with
    eta = 0, the probability-flow ODE: x_next = (sigma_next / sigma) x + (1 - sigma_next / sigma)
    x0_extrapolated.
    """
    return dpmpp_2m_sde(eps_model, x, sigmas, noise, eta=0.0)


@dataclass(frozen=True)
class SamplerSpec:
    """What the pipeline and the UI need to know about a sampler.

    ``stochastic``: whether it draws fresh noise after the start noise x_T at its default
    settings (so the seed matters all the way); for a sampler that takes eta this is
    default_eta > 0, and :meth:`draws_noise` answers for any eta.
    """

    fn: Callable[..., Steps]
    default_steps: int
    uses_eta: bool = False
    default_eta: float | None = None
    stochastic: bool = False
    calls_per_step: float = 1.0
    description: str = ""

    def calls(self, steps: int) -> int:
        """Network calls for ``steps`` steps (Heun's last step is a single Euler call)."""
        return round(steps * self.calls_per_step) - (1 if self.calls_per_step > 1 else 0)

    def draws_noise(self, eta: float | None = None) -> bool:
        """Whether a run with this ``eta`` (None: the default) draws fresh noise along the way."""
        if self.uses_eta:
            return (self.default_eta if eta is None else eta) > 0
        return self.stochastic


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(
        ddpm, 500, stochastic=True, description="DDPM ancestral sampling (stochastic)"
    ),
    "ddim": SamplerSpec(
        ddim,
        25,
        uses_eta=True,
        default_eta=0.0,
        description="DDIM; eta adds noise, 0 = deterministic",
    ),
    "plms": SamplerSpec(plms, 25, description="PLMS (PNDM): 4th-order multistep DDIM"),
    "lms": SamplerSpec(lms, 25, description="k-diffusion linear multistep, order 4"),
    "euler_ancestral": SamplerSpec(
        euler_ancestral,
        30,
        uses_eta=True,
        default_eta=1.0,
        stochastic=True,
        description="Euler ancestral (stochastic)",
    ),
    "heun": SamplerSpec(heun, 15, calls_per_step=2.0, description="Heun 2nd order, 2 calls/step"),
    "dpmpp_2m": SamplerSpec(
        dpmpp_2m, 20, description="DPM-Solver++(2M): 2nd order from one call a step, deterministic"
    ),
    "dpmpp_2m_sde": SamplerSpec(
        dpmpp_2m_sde,
        25,
        uses_eta=True,
        default_eta=1.0,
        stochastic=True,
        description="DPM-Solver++(2M) SDE: adds noise each step; eta 0 = dpmpp_2m",
    ),
    "euler_churn": SamplerSpec(
        euler_churn,
        30,
        uses_eta=True,
        default_eta=1.0,
        stochastic=True,
        description="Karras (EDM) churn + Euler step; eta scales the churn, 0 = DDIM",
    ),
    "heun_churn": SamplerSpec(
        heun_churn,
        15,
        uses_eta=True,
        default_eta=1.0,
        stochastic=True,
        calls_per_step=2.0,
        description="Karras (EDM) churn + Heun step, 2 calls/step; eta 0 = heun",
    ),
}

# Old names still accepted (configs, saved settings): name -> its key in SAMPLERS.
SAMPLER_ALIASES: dict[str, str] = {"pndm": "plms"}


def canonical_sampler(name: str) -> str:
    """The SAMPLERS key for ``name``: itself, or the sampler an alias stands for."""
    canonical = SAMPLER_ALIASES.get(name, name)
    if canonical not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {list(SAMPLERS)}")
    return canonical
