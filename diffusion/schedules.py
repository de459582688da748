"""Noise schedules: how much signal survives at each timestep.

A schedule is defined by betas for the discrete steps t = 1..T. Everything else is derived from
``alpha_bar`` (the cumulative product of 1 - beta), with alpha_bar(0) = 1 for the clean image.
Fractional timesteps interpolate log(alpha_bar) linearly, which keeps alpha_bar monotone and lets
samplers and training use continuous time in [0, T].

Two views of the same forward process are used in this package:

- variance preserving ("VP"): x_t = sqrt(abar) * x0 + sqrt(1 - abar) * eps, what the model sees;
- variance exploding ("sigma"): x_t / sqrt(abar) = x0 + sigma * eps, where
  sigma^2 = (1 - abar) / abar; the samplers do their arithmetic here (Karras et al. 2022).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .render import to_tensor, to_uint8

# The named schedules, each a classmethod of Schedule taking T (and its own parameters).
SCHEDULES = ("linear", "cosine", "quadratic")
SPACINGS = ("uniform", "karras")  # how Schedule.sigmas spreads the steps over the noise levels


def make_schedule(kind: str, T: int) -> Schedule:
    """The named schedule ``kind`` (one of SCHEDULES) over T steps, with its usual parameters."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule kind {kind!r}; know {SCHEDULES}")
    return getattr(Schedule, kind)(T=T)


def schedule_curves(T: int, points: int = 200) -> dict[str, dict[str, np.ndarray]]:
    """alpha_bar(t) and log10 SNR(t) of every named schedule at ``points`` timesteps in [1, T]
    (t = 0 is left out: its SNR is infinite), for plotting."""
    t = torch.linspace(1, T, points, dtype=torch.float64)
    curves = {}
    for kind in SCHEDULES:
        schedule = make_schedule(kind, T)
        curves[kind] = {
            "t": t.numpy(),
            "alpha_bar": schedule.alpha_bar(t).numpy(),
            "log10 SNR": torch.log10(schedule.snr(t)).numpy(),
        }
    return curves


def noised_sprites(
    sprite: np.ndarray, t: float, T: int, seed: int = 0
) -> dict[str, tuple[np.ndarray, float, float]]:
    """The forward process at t for a uint8 (H, W, 3) sprite under every named schedule:
    kind -> (uint8 (H, W, 3) x_t, alpha_bar(t), SNR(t)). One noise draw serves every schedule,
    so the pictures differ only by schedule."""
    x0 = to_tensor(sprite).double()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).double()
    tt = torch.tensor([float(t)], dtype=torch.float64)
    out = {}
    for kind in SCHEDULES:
        schedule = make_schedule(kind, T)
        xt = to_uint8(schedule.q_sample(x0, tt, noise))[0]
        out[kind] = (xt, float(schedule.alpha_bar(tt)), float(schedule.snr(tt)))
    return out


class Schedule:
    """A noise schedule over T discrete steps, usable at fractional timesteps."""

    def __init__(self, betas: Tensor, kind: str = "custom", **params: float) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 1:
            raise ValueError("betas must be a non-empty 1-D tensor")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta must lie in (0, 1)")
        self.betas = betas
        self.T = len(betas)
        self.kind = kind
        self.params = params
        zero = torch.zeros(1, dtype=torch.float64)
        # float64 so that the tiny alpha_bar at t = T of a cosine schedule keeps its precision.
        self._log_abar = torch.cat([zero, torch.cumsum(torch.log1p(-betas), 0)])

    @classmethod
    def linear(cls, T: int = 500, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
        """The DDPM schedule (the course uses T=500, 1e-4 to 0.02)."""
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        return cls(betas, "linear", T=T, beta_start=beta_start, beta_end=beta_end)

    @classmethod
    def quadratic(cls, T: int = 500, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
        """Betas linear in sqrt(beta): gentler early steps than ``linear``."""
        root = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64)
        return cls(root**2, "quadratic", T=T, beta_start=beta_start, beta_end=beta_end)

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
        """Nichol & Dhariwal (2021): alpha_bar follows cos^2, betas clipped at ``max_beta``."""
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
        return cls(betas, "cosine", T=T, s=s, max_beta=max_beta)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Schedule:
        """Rebuild a schedule saved with :meth:`to_config`."""
        params = {k: v for k, v in config.items() if k != "kind"}
        if config.get("kind") not in SCHEDULES:
            raise ValueError(f"unknown schedule kind {config.get('kind')!r}; know {SCHEDULES}")
        return getattr(cls, config["kind"])(**params)

    def to_config(self) -> dict[str, Any]:
        if self.kind not in SCHEDULES:
            raise ValueError("only the named schedules can be saved to a config")
        return {"kind": self.kind, **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"Schedule.{self.kind}({args})"

    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        """log(alpha_bar) at timesteps ``t`` in [0, T], linear between integer steps."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if bool(((t < 0) | (t > self.T)).any()):
            raise ValueError(f"timesteps must lie in [0, {self.T}]")
        lo = t.floor().long().clamp(max=self.T - 1)
        frac = t - lo
        table = self._log_abar.to(t.device)
        return table[lo] * (1 - frac) + table[lo + 1] * frac

    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """Cumulative signal fraction alpha_bar(t), a float64 tensor shaped like ``t``."""
        return self.log_alpha_bar(t).exp()

    def sigma(self, t: Tensor | float) -> Tensor:
        """Noise-to-signal ratio sqrt((1 - abar) / abar) at ``t`` (0 at t = 0)."""
        return torch.expm1(-self.log_alpha_bar(t)).sqrt()

    def snr(self, t: Tensor | float) -> Tensor:
        """Signal-to-noise ratio abar / (1 - abar) = 1 / sigma^2 (inf at t = 0)."""
        return 1 / torch.expm1(-self.log_alpha_bar(t))

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`sigma`: the fractional timestep with that noise level."""
        target = -torch.log1p(torch.as_tensor(sigma, dtype=torch.float64) ** 2)
        table = self._log_abar.to(target.device)
        # log_abar decreases with t; search on its negation, which increases.
        hi = torch.searchsorted(-table, -target).clamp(1, self.T)
        lo_v, hi_v = table[hi - 1], table[hi]
        frac = ((lo_v - target) / (lo_v - hi_v)).clamp(0, 1)
        return (hi - 1 + frac).clamp(0, self.T)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The forward process: x_t = sqrt(abar) * x0 + sqrt(1 - abar) * noise, per row of ``t``."""
        abar = self.alpha_bar(t).to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def check_steps(self, steps: int) -> None:
        """Raise ValueError unless a sampler can walk this schedule in ``steps`` steps: 1..T."""
        if not 1 <= steps <= self.T:
            raise ValueError(f"steps must be between 1 and {self.T}, got {steps}")

    def sigmas(self, steps: int, spacing: str = "uniform", rho: float = 7.0) -> Tensor:
        """The ``steps + 1`` noise levels a sampler walks through, from t = T down to 0.

        ``uniform``: timesteps T * (steps - i) / steps for i = 0..steps-1, then 0. With steps = T
        this is every integer step, as in DDPM; with fewer it is DDIM's evenly strided sequence,
        always starting from t = T (pure noise). ``karras``: Karras et al. (2022) spacing between
        sigma(1) and sigma(T), denser at low noise, with exponent ``rho``.
        """
        self.check_steps(steps)
        if spacing == "uniform":
            t = torch.arange(steps, 0, -1, dtype=torch.float64) * self.T / steps
            sig = self.sigma(t)
        elif spacing == "karras":
            lo, hi = self.sigma(1.0) ** (1 / rho), self.sigma(float(self.T)) ** (1 / rho)
            ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
            sig = (hi + ramp * (lo - hi)) ** rho
        else:
            raise ValueError(f"unknown spacing {spacing!r}; use one of {SPACINGS}")
        return torch.cat([sig, sig.new_zeros(1)])
