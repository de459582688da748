"""A 2D toy diffusion: data whose exact denoiser is known, to watch the samplers at work.

The data are points in the plane drawn from a mixture of isotropic Gaussians (a few blobs, or
many small ones laid along a ring, a spiral or a sprite's silhouette). Under the forward process
the mixture stays a mixture, so the best possible denoiser, the posterior mean E[x0 | x], has a
closed form, and so has the noise estimate E[eps | x] that a perfectly trained network would
output. :meth:`Mixture.eps` is that estimate with the samplers' contract,
``eps_model(x, sigma) -> eps`` in the sigma view (see ``samplers``), so the package's samplers
run on the toy unchanged, on tensors of shape (n, 2).

In the sigma view x = x0 + sigma * eps, component k (mean mu_k, standard deviation s_k, weight
w_k) becomes N(mu_k, (s_k^2 + sigma^2) I); with r_k(x) the posterior weight of component k,

    E[x0 | x] = sum_k r_k(x) * (mu_k + s_k^2 / (s_k^2 + sigma^2) * (x - mu_k))
    E[eps | x] = (x - E[x0 | x]) / sigma = sigma * sum_k r_k(x) * (x - mu_k) / (s_k^2 + sigma^2)

:class:`Toy` puts a mixture under a :class:`~diffusion.schedules.Schedule` and answers in the
variance-preserving view the network sees, x_t = sqrt(abar) * x0 + sqrt(1 - abar) * eps, where
pure noise is N(0, I): the forward process, reverse paths of any sampler, the noise field and
the density at any t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .options import SamplingOptions
from .samplers import SAMPLERS
from .schedules import Schedule

SHAPES = ("gaussians", "ring", "spiral", "sprite")
MAX_POINTS = 10_000  # points in one run: plenty for a picture, milliseconds per step
# The small components that draw a ring, a spiral or a silhouette: narrow enough to read as
# a line or a pixel, wide enough that neighbours overlap into one shape.
_FINE_STD = 0.04


@dataclass(frozen=True)
class Mixture:
    """A mixture of isotropic 2D Gaussians: ``means`` (K, 2), ``stds`` (K,), ``weights`` (K,)
    summing to 1, all float64."""

    means: Tensor
    stds: Tensor
    weights: Tensor

    @classmethod
    def of(
        cls,
        means: np.ndarray | Tensor,
        stds: float | np.ndarray | Tensor,
        weights: np.ndarray | Tensor | None = None,
    ) -> Mixture:
        """A mixture from its means, one std (or one per component) and weights (default
        equal; they are normalised). Raises ValueError for a malformed or degenerate one."""
        means = torch.as_tensor(np.asarray(means), dtype=torch.float64)
        if means.ndim != 2 or means.shape[1] != 2 or len(means) == 0:
            raise ValueError(f"means must have shape (K, 2), got {tuple(means.shape)}")
        k = len(means)
        stds = torch.as_tensor(np.asarray(stds), dtype=torch.float64).expand(k).clone()
        weights = torch.ones(k, dtype=torch.float64) if weights is None else weights
        weights = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        if weights.shape != (k,) or not bool((weights >= 0).all()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be K non-negative numbers, not all 0")
        if not bool((stds > 0).all()) or not bool(torch.isfinite(means).all()):
            raise ValueError("stds must be positive and means finite")
        return cls(means, stds, weights / weights.sum())

    @classmethod
    def shape(cls, name: str, sprite: np.ndarray | None = None) -> Mixture:
        """One of SHAPES, within about [-1, 1]^2 like the sprites' pixels: three blobs of
        unequal weight, a ring, a spiral, or the silhouette of ``sprite`` (uint8 (H, W, 3 or
        4); needed for "sprite" only)."""
        if name == "gaussians":
            means = [[-0.8, -0.45], [0.8, -0.45], [0.0, 0.75]]
            return cls.of(means, [0.25, 0.15, 0.2], [0.5, 0.3, 0.2])
        if name == "ring":
            angle = np.linspace(0, 2 * np.pi, 40, endpoint=False)
            return cls.of(np.stack([np.cos(angle), np.sin(angle)], 1), _FINE_STD)
        if name == "spiral":
            turn = np.linspace(0, 1, 60)
            angle, radius = 3.5 * np.pi * turn, 0.2 + 0.85 * turn
            means = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
            return cls.of(means, _FINE_STD, radius)  # even density along the curve
        if name == "sprite":
            if sprite is None:
                raise ValueError('the "sprite" shape needs a sprite')
            return cls.silhouette(sprite)
        raise ValueError(f"unknown shape {name!r}; choose from {SHAPES}")

    @classmethod
    def silhouette(cls, sprite: np.ndarray) -> Mixture:
        """One small component per drawn pixel of ``sprite`` (uint8 (H, W, 4): alpha > 0;
        (H, W, 3): not white), the picture upright and fit into [-1, 1]^2."""
        sprite = np.asarray(sprite)
        if sprite.dtype != np.uint8 or sprite.ndim != 3 or sprite.shape[2] not in (3, 4):
            raise ValueError(
                f"sprite must be uint8 (H, W, 3 or 4), got {sprite.dtype} {sprite.shape}"
            )
        if sprite.shape[2] == 4:
            drawn = sprite[..., 3] > 0
        else:
            drawn = (255 - sprite.astype(int)).sum(-1) > 30  # RGB sprites are drawn on white
        rows, cols = np.nonzero(drawn)
        if len(rows) == 0:
            raise ValueError("the sprite has no drawn pixels: its silhouette is empty")
        h, w = drawn.shape
        pixel = 2 / max(h, w)
        means = np.stack(
            [(cols + 0.5) * pixel - w * pixel / 2, h * pixel / 2 - (rows + 0.5) * pixel], 1
        )
        return cls.of(means, pixel / 3)

    def mean(self) -> Tensor:
        """The mixture's mean, (2,)."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """The mixture's covariance, (2, 2): the spread of the means plus each component's own."""
        centred = self.means - self.mean()
        spread = (self.weights[:, None] * centred).T @ centred
        return spread + float(self.weights @ self.stds**2) * torch.eye(2, dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` points drawn from the mixture, float64 (n, 2)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * noise

    def _posterior(self, x: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """(r, d, v): posterior weights r (n, K) of the components given x in the sigma view,
        offsets d = x - mu_k (n, K, 2) and variances v = s_k^2 + sigma^2 (K,)."""
        v = self.stds**2 + torch.as_tensor(sigma, dtype=torch.float64) ** 2
        d = x.double()[:, None, :] - self.means[None]
        # log of w_k N(x; mu_k, v_k I) up to a constant; a 2D Gaussian's normaliser is 1 / v_k.
        logits = self.weights.log() - (d**2).sum(-1) / (2 * v) - v.log()
        return logits.softmax(1), d, v

    def eps(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """E[eps | x] for x = x0 + sigma * eps (the sigma view): the noise estimate of a
        perfect network, with the samplers' EpsModel contract. Shape and dtype of ``x``."""
        r, d, v = self._posterior(x, sigma)
        eps = torch.as_tensor(sigma, dtype=torch.float64) * (r[..., None] * d / v[:, None]).sum(1)
        return eps.to(x.dtype)

    def denoise(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """E[x0 | x] for x = x0 + sigma * eps: the posterior mean, the best possible denoiser."""
        r, d, v = self._posterior(x, sigma)
        shrunk = self.means + (self.stds**2 / v)[:, None] * d  # E[x0 | x, component k]
        return (r[..., None] * shrunk).sum(1).to(x.dtype)

    def log_density(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """log p(x) of the data noised to ``sigma`` in the sigma view (sigma = 0: the data)."""
        v = self.stds**2 + torch.as_tensor(sigma, dtype=torch.float64) ** 2
        d2 = ((x.double()[:, None, :] - self.means[None]) ** 2).sum(-1)
        return (self.weights.log() - d2 / (2 * v) - torch.log(2 * math.pi * v)).logsumexp(1)


@dataclass(frozen=True)
class ReversePath:
    """A reverse run of ``n`` points, every state kept, in the VP view (pure noise ~ N(0, I))."""

    sampler: str
    steps: int
    t: np.ndarray  # (steps + 1,) timesteps from T down to 0
    x: np.ndarray  # (steps + 1, n, 2): x[0] the start noise, x[i] after step i, x[-1] samples
    x0: np.ndarray  # (steps, n, 2): the denoiser's guess of the clean points at each step
    calls: int  # calls of the denoiser: what the run would cost with a network


class Toy:
    """A :class:`Mixture` under a noise schedule, seen as the network sees the sprites: in the
    variance-preserving view, x_t = sqrt(abar(t)) * x0 + sqrt(1 - abar(t)) * eps."""

    def __init__(self, mixture: Mixture, schedule: Schedule) -> None:
        self.mixture = mixture
        self.schedule = schedule

    def _scale(self, t: float) -> tuple[Tensor, float]:
        """(sigma(t), sqrt(1 + sigma^2)): the sigma view is the VP view times the latter."""
        sigma = self.schedule.sigma(float(t))
        return sigma, float((1 + sigma**2).sqrt())

    def forward(self, x0: Tensor, t: float, noise: Tensor) -> Tensor:
        """The forward process: the points ``x0`` (n, 2) noised to ``t`` with ``noise``."""
        return self.schedule.q_sample(x0, torch.full((len(x0),), float(t)), noise)

    def forward_frames(self, n: int, ts: list[float], seed: int = 0) -> np.ndarray:
        """``n`` data points noised to each t of ``ts``, one noise draw per point throughout,
        so that each point drifts smoothly as t grows: (len(ts), n, 2)."""
        _check_points(n)
        generator = torch.Generator().manual_seed(seed)
        x0 = self.mixture.sample(n, generator)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return np.stack([self.forward(x0, t, noise).numpy() for t in ts])

    def density(self, points: np.ndarray, t: float = 0.0) -> np.ndarray:
        """The density of x_t at ``points`` (m, 2): the data (t = 0) or the data noised to t."""
        sigma, c = self._scale(t)
        # x_t is the sigma view scaled by 1 / c; a density in the plane scales by c^2.
        x = torch.as_tensor(points, dtype=torch.float64) * c
        return (self.mixture.log_density(x, sigma).exp() * c**2).numpy()

    def field(self, points: np.ndarray, t: float) -> np.ndarray:
        """E[eps | x_t] at ``points`` (m, 2): the noise a perfect network sees there at t.
        Minus it points the way denoising moves a point; divided by sqrt(1 - abar(t)) it is
        the score, the gradient of log p_t."""
        sigma, c = self._scale(t)
        return self.mixture.eps(torch.as_tensor(points, dtype=torch.float64) * c, sigma).numpy()

    def reverse(
        self,
        sampler: str,
        steps: int,
        n: int,
        seed: int = 0,
        eta: float | None = None,
        spacing: str = "uniform",
    ) -> ReversePath:
        """Run the package's ``sampler`` in ``steps`` steps from ``n`` points of pure noise, as
        the pipeline runs it on sprites (same sigmas, start scaling and eta default), with
        the exact denoiser for a network. Raises ValueError naming a bad choice."""
        options = SamplingOptions(
            sampler=sampler,
            steps=steps,
            guidance=1.0,
            guidance_sigma_min=0.0,
            eta=eta,
            spacing=spacing,
            seed=seed,
        ).validate(self.schedule)
        _check_points(n)
        spec = SAMPLERS[options.sampler]
        extra = {"eta": spec.default_eta if eta is None else eta} if spec.uses_eta else {}
        generator = torch.Generator().manual_seed(seed)

        def draw(shape: torch.Size) -> Tensor:
            return torch.randn(shape, generator=generator, dtype=torch.float64)

        calls = 0

        def eps_model(x: Tensor, sigma: Tensor) -> Tensor:
            nonlocal calls
            calls += 1
            return self.mixture.eps(x, sigma)

        sigmas = self.schedule.sigmas(options.steps, spacing)
        scale = (1 + sigmas**2).sqrt()
        x_T = draw(torch.Size((n, 2)))  # N(0, I) in the VP view
        states, guesses = [x_T], []
        run = spec.fn(eps_model, x_T * scale[0], sigmas, draw, **extra)
        for i, (x, x0) in enumerate(run, start=1):
            states.append(x / scale[i])
            guesses.append(x0)
        t = self.schedule.t_from_sigma(sigmas).numpy()
        return ReversePath(
            options.sampler,
            options.steps,
            t,
            torch.stack(states).numpy(),
            torch.stack(guesses).numpy(),
            calls,
        )


def _check_points(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_POINTS:
        raise ValueError(f"n must be a number of points from 1 to {MAX_POINTS}, got {n!r}")
