"""Sampling options: every choice one run makes, where its default comes from, and its limits.

The pipeline, the command line, the evaluator and every tab of the app describe a run with a
:class:`SamplingOptions` and check it with :meth:`SamplingOptions.validate`, so a limit or a
default is written here once. A trained model's ``config.json`` (section ``sampling``) holds its
own defaults, measured for that model; :func:`resolve` fills a run's unset choices from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from . import render
from .samplers import SAMPLERS, canonical_sampler
from .schedules import SPACINGS, Schedule

MAX_SEED = 2**32 - 1  # what a person types; a browser's number box also keeps it exact
MAX_GUIDANCE = 10.0  # beyond this every model tried here drew saturated blobs
MAX_SPRITES = 1024  # sprites in one call of the pipeline
MAX_RESAMPLE = 10  # RePaint's jump-backs per step; each one costs a full step
MAX_RERANK = 16  # candidates per sprite for best-of-N; each one costs a whole run
GUIDES = ("both", "label", "text")
# A model without a config (built in code) samples with these; every shipped model's config
# names its own measured sampler and steps (benchmarks/steps.py).
FALLBACK = {
    "sampler": "dpmpp_2m",
    "steps": 20,
    "guidance": 1.0,
    "spacing": "uniform",
    "guidance_sigma_min": 0.0,
}


@dataclass(frozen=True)
class SamplingOptions:
    """One run's sampling choices; None means "the model's default" until :func:`resolve`."""

    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    # Guidance acts only at noise levels sigma above this; the steps below it run the
    # conditional network alone (one branch instead of a guided batch). Kynkäänniemi et al.
    # (2024) limit guidance to an interval of noise levels; docs/speed.md measures which end
    # matters for these sprites.
    guidance_sigma_min: float | None = None
    eta: float | None = None
    spacing: str | None = None
    palette: render.Palette = None
    seed: int | None = None
    prompt: str | list[str] | None = None
    guide: str = "both"
    background: render.Colour | None = None  # composite RGBA sprites onto this colour
    guidance_text: float | None = None  # the text's own scale; None: one scale, ``guide``
    negative_prompt: str | list[str] | None = None  # the text guidance steers away from
    rerank: int = 1  # candidates per sprite; SpriteCLIP keeps the best match to the prompt
    palette_lock: bool = False  # palette=k: one k-colour palette for the whole batch
    tileable: bool = False  # circular padding: tiles whose opposite edges continue each other
    outline: render.Colour | None = None  # a one-pixel outline around RGBA sprites

    def validate(self, schedule: Schedule, n: int = 1) -> SamplingOptions:
        """Check every choice (for ``n`` sprites); return the options with the sampler's
        canonical name, or raise ValueError naming the first bad one and what is allowed."""
        sampler = canonical_sampler(self.sampler or "")
        spec = SAMPLERS[sampler]
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise ValueError(f"steps must be an integer, got {steps!r}")
        schedule.check_steps(int(steps))
        _check_number("guidance", self.guidance, 0.0, MAX_GUIDANCE)
        _check_number(
            "guidance_sigma_min", self.guidance_sigma_min, 0.0, float(schedule.sigma(schedule.T))
        )
        if self.eta is not None:
            _check_number("eta", self.eta, 0.0, 1.0)
            if self.eta != 0 and not spec.uses_eta:
                raise ValueError(f"sampler {sampler!r} takes no eta")
        if self.spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {self.spacing!r}")
        check_seed(self.seed, allow_none=True)
        check_sprites(n)
        if self.guide not in GUIDES:
            raise ValueError(f"guide must be one of {GUIDES}, got {self.guide!r}")
        if self.guide == "text" and self.prompt is None:
            raise ValueError("guide='text' needs a prompt=")
        self._check_text_guidance()
        check_rerank(self.rerank)
        if self.rerank > 1 and self.prompt is None:
            raise ValueError(
                "rerank= keeps the candidate that best matches the prompt: give a prompt="
            )
        if self.rerank * n > MAX_SPRITES:
            raise ValueError(
                f"rerank={self.rerank} draws {self.rerank * n} sprites for n={n}; "
                f"at most {MAX_SPRITES} in one call"
            )
        if self.background is not None:
            render.parse_colour(self.background)
        render.check_lock(self.palette, self.palette_lock)
        if not isinstance(self.tileable, (bool, np.bool_)):
            raise ValueError(f"tileable must be True or False, got {self.tileable!r}")
        if self.outline is not None:
            render.parse_colour(self.outline)
        return replace(
            self,
            sampler=sampler,
            steps=int(steps),
            guidance=float(self.guidance),
            guidance_sigma_min=float(self.guidance_sigma_min),
            guidance_text=None if self.guidance_text is None else float(self.guidance_text),
            rerank=int(self.rerank),
        )

    def _check_text_guidance(self) -> None:
        """guidance_text and negative_prompt: each must have a branch of guidance to act in."""
        if self.guidance_text is not None:
            _check_number("guidance_text", self.guidance_text, 0.0, MAX_GUIDANCE)
            if self.prompt is None:
                raise ValueError("guidance_text= scales the prompt's guidance: give a prompt=")
            if self.guide != "both":
                raise ValueError(
                    "guidance_text= gives the text its own scale beside guidance= for the label; "
                    f"it takes guide='both' (the default), got guide={self.guide!r}"
                )
        if self.negative_prompt is None:
            return
        if self.guide == "label":
            raise ValueError(
                "negative_prompt= replaces the text of guidance's unconditional branch, which "
                "guide='label' keeps as the prompt: use guide='both' or 'text'"
            )
        if self.guidance == 1 and self.guidance_text in (None, 1):
            raise ValueError(
                "negative_prompt= acts through guidance, and guidance 1 is the conditional "
                "model alone: set guidance or guidance_text to another value"
            )

    def calls(self) -> int:
        """Network calls of one run (a guided call counts once: it is one batched pass of
        every branch)."""
        return SAMPLERS[canonical_sampler(self.sampler or "")].calls(int(self.steps or 0))

    def work(self, n: int, resample: int = 1) -> int:
        """Sprite-steps of a run of ``n`` sprites (``rerank`` candidates each): what a request
        costs, for budgets."""
        return self.calls() * n * resample * self.rerank

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of ``SpritePipeline.stream``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def resolve(defaults: Mapping[str, Any], options: SamplingOptions) -> SamplingOptions:
    """Fill the unset choices of ``options`` from a model's ``defaults`` (its config's
    ``sampling`` section): the model's sampler, its measured steps for whichever sampler runs,
    its guidance (and the noise level it stops at) and spacing. Not validated: call
    :meth:`SamplingOptions.validate`."""
    sampler = options.sampler or defaults.get("sampler", FALLBACK["sampler"])
    steps = options.steps if options.steps is not None else default_steps(defaults, sampler)
    guidance = options.guidance
    if guidance is None:
        guidance = defaults.get("guidance", FALLBACK["guidance"])
    sigma_min = options.guidance_sigma_min
    if sigma_min is None:
        sigma_min = defaults.get("guidance_sigma_min", FALLBACK["guidance_sigma_min"])
    return replace(
        options,
        sampler=sampler,
        steps=steps,
        guidance=guidance,
        guidance_sigma_min=sigma_min,
        spacing=options.spacing or defaults.get("spacing", FALLBACK["spacing"]),
    )


def guidance_floor(sigma_min: float, sigma: str = "σ") -> str:
    """How every report names a guidance floor: " above noise level σ 1", or "" for none
    (guidance at every step). ``sigma="sigma"`` spells it in ASCII, for the model cards."""
    return f" above noise level {sigma} {sigma_min:g}" if sigma_min else ""


def default_steps(defaults: Mapping[str, Any], sampler: str) -> int:
    """The steps ``sampler`` runs when none are given: the model's measured choice (config
    ``sampling.sampler_steps``), else the sampler's generic default."""
    name = canonical_sampler(sampler)
    if name == canonical_sampler(defaults.get("sampler", FALLBACK["sampler"])):
        return int(defaults.get("steps", FALLBACK["steps"]))
    measured = {canonical_sampler(k): v for k, v in defaults.get("sampler_steps", {}).items()}
    return int(measured.get(name, SAMPLERS[name].default_steps))


def check_seed(seed: Any, allow_none: bool = False) -> None:
    """Raise ValueError unless ``seed`` is a whole number in [0, MAX_SEED] (or None, if allowed)."""
    if seed is None and allow_none:
        return
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {seed}")


def check_sprites(n: Any) -> None:
    """Raise ValueError unless ``n`` sprites can be drawn in one call."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_SPRITES:
        raise ValueError(f"n must be between 1 and {MAX_SPRITES}, got {n!r}")


def check_resample(resample: Any) -> None:
    """Raise ValueError unless ``resample`` is a whole number of tries per step in range."""
    if isinstance(resample, bool) or not isinstance(resample, (int, np.integer)):
        raise ValueError(f"resample must be an integer, got {resample!r}")
    if not 1 <= resample <= MAX_RESAMPLE:
        raise ValueError(f"resample must be 1 to {MAX_RESAMPLE}, got {resample}")


def check_rerank(rerank: Any) -> None:
    """Raise ValueError unless ``rerank`` is a whole number of candidates per sprite in range."""
    if isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)):
        raise ValueError(f"rerank must be a whole number of candidates, got {rerank!r}")
    if not 1 <= rerank <= MAX_RERANK:
        raise ValueError(f"rerank must be 1 to {MAX_RERANK} candidates per sprite, got {rerank}")


def _check_number(name: str, value: Any, low: float, high: float) -> None:
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
