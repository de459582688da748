"""SpritePipeline: a trained noise model + its schedule + label names = sprites on demand.

The pipeline owns everything between the model and the pixels: the device, seeds, turning a
context into label weights, classifier-free guidance, the view changes between the model's
variance-preserving inputs and the samplers' sigma view, and frames for streaming.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import safetensors
import safetensors.torch
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F

from . import objectives, render
from .autoencoder import SpriteVAE
from .device import bf16_is_fast, bf16_pays, configure_cpu_threads, default_device
from .files import atomic_write, read_config, write_config
from .hub import resolve_model_dir
from .model import (
    BOUNDS,
    MAX_PARAMETERS,
    ContextUnet,
    UnetConfig,
    check_whole,
)
from .options import (
    FALLBACK,
    MAX_SEED,
    SamplingOptions,
    check_resample,
    default_steps,
    resolve,
)
from .samplers import SAMPLERS, EpsModel, Noise, Steps, canonical_sampler
from .schedules import Schedule
from .text import SpriteCLIP

# The shipped models: weights/ beside the package in a checkout, diffusion/weights once installed.
_HERE = Path(__file__).resolve().parent
WEIGHTS = next((p for p in (_HERE.parent / "weights", _HERE / "weights") if p.is_dir()), _HERE)
DEFAULT_MODEL = WEIGHTS / "sprites16"
UPSCALER = WEIGHTS / "upscale2x"  # the shipped 2x upscaler (SR3), trained on 32x32 tiles
FORMAT = "sprite-diffusion/1"
Context = str | int | Mapping[str, float] | Sequence[float] | np.ndarray | Tensor | None
TEXT_ENCODER = "text_encoder"  # the sub-folder of a text model that holds its SpriteCLIP
AUTOENCODER = "autoencoder"  # the sub-folder of a latent model that holds its SpriteVAE
PIXEL_CHANNELS = (3, 4)  # RGB, or RGBA for a model of transparency: what the renderer draws


class UnknownWordsWarning(UserWarning):
    """A prompt holds words that no training description used."""


@dataclass(frozen=True)
class Frame:
    """One denoising step, ready to show: uint8 (n, H, W, 3) images, or (n, H, W, 4) with hard
    alpha from a model of transparency (see :attr:`SpritePipeline.rgba`)."""

    step: int  # 1-based
    total: int
    t: float  # timestep of ``x`` after this step; 0 at the end
    x: np.ndarray  # the noisy state
    x0: np.ndarray  # the model's current guess of the clean sprite
    seed: int
    # The last frame of a run with a prompt: SpriteCLIP's score (n,) of each sprite against
    # its prompt (see SpriteCLIP.score).
    scores: np.ndarray | None = None
    # The last frame of a best-of-N run (rerank > 1): which rows of the earlier frames, which
    # hold every candidate, its n sprites are.
    picked: np.ndarray | None = None
    branches: Branches | None = None  # guidance taken apart, with stream(branches=True)
    # A latent model's state: the noisy latent it denoises, float32 (n, h, w, C) in the
    # network's variance-preserving view (about N(0, 1) at the start, the clean latent at the
    # end); ``x`` and ``x0`` are what the autoencoder's decoder makes of it.
    latent: np.ndarray | None = None


@dataclass(frozen=True)
class Branches:
    """Classifier-free guidance at one step taken apart (``stream(branches=True)``), at the
    step's first network call: the noisy input ``x`` (uint8 images like ``Frame.x``); the
    noise the model predicts from it with the condition (label and prompt) and without it,
    float32 (n, H, W, C) in the model's channels, and the guided estimate the sampler used;
    beside each, the clean sprite it implies, x - sigma * eps, as uint8 images like
    ``Frame.x0``."""

    x: np.ndarray
    eps_cond: np.ndarray
    eps_uncond: np.ndarray
    eps: np.ndarray
    x0_cond: np.ndarray
    x0_uncond: np.ndarray
    x0: np.ndarray

    @property
    def difference(self) -> np.ndarray:
        """eps_cond - eps_uncond: what the condition changes in the prediction."""
        return self.eps_cond - self.eps_uncond

    @property
    def guidance_term(self) -> np.ndarray:
        """What guidance adds to the unconditional estimate: eps - eps_uncond, which with one
        scale g is g * :attr:`difference`."""
        return self.eps - self.eps_uncond


class SpritePipeline:
    """Generate sprites with any eps-model ``model(x, t, context) -> eps`` and a Schedule."""

    def __init__(
        self,
        model: nn.Module,
        schedule: Schedule,
        labels: Sequence[str],
        *,
        device: str | torch.device | None = None,
        resolution: int | None = None,
        defaults: Mapping[str, Any] | None = None,
        text_encoder: SpriteCLIP | None = None,
        autoencoder: SpriteVAE | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cpu":
            configure_cpu_threads()
        self.model = model.to(self.device).eval()
        self.schedule = schedule
        self.labels = list(labels)
        config = getattr(model, "config", None)
        side = resolution or getattr(config, "resolution", 16)
        # What the network denoises: pixels, or a latent model's latents.
        self.state_shape = (getattr(config, "in_channels", 3), side, side)
        self.autoencoder = autoencoder.to(self.device).eval() if autoencoder else None
        # The sprites' side and channels, which a latent model's decoder paints.
        self.resolution, self.channels = side, self.state_shape[0]
        if autoencoder is not None:
            vae = autoencoder.config
            if (vae.latent_channels, vae.latent_resolution) != self.state_shape[:2]:
                raise ValueError(
                    f"the autoencoder's latents are {vae.latent_channels}x"
                    f"{vae.latent_resolution}x{vae.latent_resolution}, the network denoises "
                    f"{'x'.join(map(str, self.state_shape))}"
                )
            self.resolution, self.channels = vae.resolution, vae.in_channels
        elif self.channels not in PIXEL_CHANNELS:
            raise ValueError(_needs_autoencoder(self.channels))
        # An upscaler's input side (SR3), 0 for a model that draws from labels and prompts.
        self.low_res = getattr(config, "low_res", 0)
        self.defaults = {**FALLBACK, **(defaults or {})}
        self.config: dict[str, Any] = {}  # the whole config.json of a loaded model
        # The training data's colours, (k, 3) uint8, for the palette stage (palette="data").
        self.palette: np.ndarray | None = None
        if bool(getattr(config, "text_dim", 0)) != (text_encoder is not None):
            raise ValueError("a text model needs its text encoder, and only a text model takes one")
        self.text_encoder = text_encoder.to(self.device).eval() if text_encoder else None

    def default_steps(self, sampler: str) -> int:
        """The step count a sampler runs when none is given: the model's measured choice
        (config ``sampling.sampler_steps``), else the sampler's generic default."""
        return min(default_steps(self.defaults, sampler), self.schedule.T)

    def options(self, n: int = 1, **choices: Any) -> SamplingOptions:
        """Validated sampling options for ``n`` sprites of this model: ``choices`` (sampler,
        steps, guidance, eta, spacing, palette, seed, prompt, guide, guidance_text,
        negative_prompt, rerank, ...) with the unset ones taken from the model's defaults.
        Raises ValueError naming the first bad choice."""
        if choices.get("steps") is None:  # a sampler's measured steps, within this schedule
            sampler = choices.get("sampler") or self.defaults["sampler"]
            choices["steps"] = self.default_steps(sampler)
        options = resolve(self.defaults, SamplingOptions(**choices)).validate(self.schedule, n)
        render.check_palette(options.palette, self.palette)
        if options.outline is not None and not self.rgba:
            raise ValueError("outline= goes around transparent sprites: it needs an RGBA model")
        if options.tileable and not isinstance(self.model, ContextUnet):
            raise ValueError("tileable=True needs a ContextUnet, whose convolutions can wrap")
        if options.tileable and self.autoencoder is not None:
            raise ValueError(
                "tileable=True needs a pixel model: a latent model's decoder does not wrap"
            )
        if options.prompt is not None:
            self._prompts(options.prompt, n)
        if options.negative_prompt is not None:
            self._prompts(options.negative_prompt, n, "negative_prompt")
        return options

    @property
    def bf16(self) -> bool:
        """Whether the network runs in bf16 autocast: the model's ``precision`` default says
        "bf16" and the device has fast bf16 (see :func:`diffusion.device.bf16_is_fast`); on a
        CPU, for batches large enough (:meth:`uses_bf16`)."""
        return self.defaults.get("precision") == "bf16" and bf16_is_fast(self.device)

    def uses_bf16(self, batch: int) -> bool:
        """Whether a network call on ``batch`` inputs runs in bf16 autocast: :attr:`bf16`, and
        on a CPU a batch of at least ``diffusion.device.CPU_BF16_MIN_BATCH``
        (:func:`diffusion.device.bf16_pays`)."""
        return self.bf16 and bf16_pays(self.device, batch)

    @property
    def rgba(self) -> bool:
        """Whether the model draws transparency: its sprites come out RGBA unless a
        ``background=`` is given."""
        return self.channels == 4

    @property
    def latent(self) -> bool:
        """Whether the network denoises an autoencoder's latents rather than pixels."""
        return self.autoencoder is not None

    @property
    def supports_text(self) -> bool:
        """Whether ``prompt=`` works: the model was trained on descriptions as well as labels."""
        return self.text_encoder is not None

    @property
    def samplers(self) -> list[str]:
        return list(SAMPLERS)

    # -- loading and saving -------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike | None = None, *, device: str | None = None
    ) -> SpritePipeline:
        """Load a model folder (config.json + model.safetensors) or a Hub model repo id.

        A folder is checked before anything is allocated: every config field (types and
        :data:`diffusion.model.BOUNDS`), the labels, the schedule, and the names and shapes of
        the weights read from the safetensors header; weights that are NaN or infinite are
        refused once read. Raises ValueError naming the file and what is wrong in it.
        """
        folder = resolve_model_dir(DEFAULT_MODEL if name_or_path is None else name_or_path)
        config_path, weights_path = folder / "config.json", folder / "model.safetensors"
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{folder} is not a model folder: {path.name} is missing")
        config = read_config(config_path)
        if config.get("format") != FORMAT:
            raise ValueError(f"{config_path}: not a {FORMAT} config ({config.get('format')=})")
        try:
            unet = UnetConfig.from_dict(config.get("model"))
            if not config.get("latent") and unet.in_channels not in PIXEL_CHANNELS:
                raise ValueError(_needs_autoencoder(unet.in_channels))
            schedule = _schedule_of(config.get("schedule"))
            labels = _labels_of(config.get("labels"), unet.num_labels)
            defaults = config.get("sampling")
            if defaults is not None and not isinstance(defaults, dict):
                raise ValueError("sampling must be a JSON object of default choices")
            palette = _palette_of(config["palette"]) if "palette" in config else None
        except ValueError as err:
            raise ValueError(f"{config_path}: {err}") from None
        _check_weights(unet, weights_path)
        model = ContextUnet(unet)
        safetensors.torch.load_model(model, weights_path, device="cpu")
        _check_finite(model, weights_path)
        text_encoder = None
        if model.config.text_dim:
            text_encoder = SpriteCLIP.from_pretrained(folder / TEXT_ENCODER)
        autoencoder = None
        if config.get("latent", False) is not False:
            if config["latent"] is not True:
                raise ValueError(f"{config_path}: latent must be true or false")
            if not (folder / AUTOENCODER).is_dir():
                raise ValueError(
                    f"{folder} is a latent model, but its {AUTOENCODER}/ folder is missing"
                )
            autoencoder = SpriteVAE.from_pretrained(folder / AUTOENCODER)
        try:
            pipe = cls(
                model,
                schedule,
                labels,
                device=device,
                defaults=defaults,
                text_encoder=text_encoder,
                autoencoder=autoencoder,
            )
        except ValueError as err:
            raise ValueError(f"{folder}: {err}") from None
        pipe.config = config
        pipe.palette = palette
        return pipe

    def save_pretrained(
        self, folder: str | os.PathLike, extra: Mapping[str, Any] | None = None
    ) -> None:
        """Write config.json and model.safetensors; ``extra`` adds sections (e.g. training)."""
        if not isinstance(self.model, ContextUnet):
            raise TypeError("only a ContextUnet can be saved")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT,
            "model": self.model.config.to_dict(),
            "schedule": self.schedule.to_config(),
            "labels": self.labels,
            "sampling": self.defaults,
            **({"latent": True} if self.autoencoder is not None else {}),
            **(
                {"palette": render.palette_to_hex(self.palette)} if self.palette is not None else {}
            ),
            **(extra or {}),
        }
        write_config(folder / "config.json", config)
        atomic_write(
            folder / "model.safetensors", lambda tmp: safetensors.torch.save_model(self.model, tmp)
        )
        if self.text_encoder is not None:
            self.text_encoder.save_pretrained(folder / TEXT_ENCODER)
        if self.autoencoder is not None:
            self.autoencoder.save_pretrained(folder / AUTOENCODER)

    # -- sampling -----------------------------------------------------------------------------

    def encode_context(self, context: Context, n: int) -> Tensor:
        """Any accepted context -> (n, K) label weights on the pipeline's device."""
        k = len(self.labels)
        if context is None:
            w = torch.zeros(k)
        elif isinstance(context, str):
            if context not in self.labels:
                raise ValueError(f"unknown label {context!r}; choose from {self.labels}")
            w = torch.nn.functional.one_hot(torch.tensor(self.labels.index(context)), k).float()
        elif isinstance(context, (int, np.integer)) and not isinstance(context, bool):
            if not 0 <= context < k:
                raise ValueError(f"label index {context} out of range 0..{k - 1}")
            w = torch.nn.functional.one_hot(torch.tensor(int(context)), k).float()
        elif isinstance(context, Mapping):
            unknown = set(context) - set(self.labels)
            if unknown:
                raise ValueError(f"unknown labels {sorted(unknown)}; choose from {self.labels}")
            w = torch.tensor([float(context.get(name, 0.0)) for name in self.labels])
        else:
            w = torch.as_tensor(np.asarray(context, dtype=np.float32))
            if w.shape not in ((k,), (n, k)):
                raise ValueError(f"context weights must have shape ({k},) or ({n}, {k})")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("label weights must be finite and non-negative")
        return w.float().expand(n, k).to(self.device)

    def unknown_words(self, prompt: str | Sequence[str]) -> list[str]:
        """Words of ``prompt`` that no training description used (read as word pieces)."""
        if self.text_encoder is None:
            return []
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        return list(dict.fromkeys(w for p in prompts for w in self.text_encoder.unknown_words(p)))

    def encode_prompt(self, prompt: str | Sequence[str] | None, n: int) -> Tensor | None:
        """A description, or one per sprite, -> (n, text_dim) on the device; None for none."""
        if prompt is None:
            return None
        return self.text_encoder.encode_text(self._prompts(prompt, n)).expand(n, -1)

    def _words(self, prompt: str | Sequence[str] | None, n: int) -> _Words | None:
        """A description, or one per sprite, as the network reads it (see :class:`_Words`)."""
        if prompt is None:
            return None
        if not getattr(getattr(self.model, "config", None), "cross_attention", ()):
            return _Words(self.encode_prompt(prompt, n))
        text, tokens, mask = self.text_encoder.encode_tokens(self._prompts(prompt, n))
        return _Words(text.expand(n, -1), tokens.expand(n, -1, -1), mask.expand(n, -1))

    def _prompts(self, prompt: str | Sequence[str], n: int, name: str = "prompt") -> list[str]:
        """The prompt (or the ``name`` one) as a list of 1 or n descriptions, checked;
        ValueError says what is wrong (a label-only model, an empty text, too many pieces)."""
        if self.text_encoder is None:
            raise ValueError(
                f"this model takes no {name}: it was trained on labels only; "
                "load a text model (see the README) or use context="
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not all(isinstance(p, str) for p in prompts) or len(prompts) not in (1, n):
            raise ValueError(f"{name} must be a string or a list of {n} strings")
        if not all(p.strip() for p in prompts):
            raise ValueError(f"the {name} is empty: describe the sprite in a few words")
        self.text_encoder.tokenize(prompts)  # refuses descriptions of too many word pieces
        return prompts

    def _denoiser(
        self,
        context: Tensor,
        guidance: float,
        timestep: dict[float, float],
        text: _Words | None = None,
        guide: str = "both",
        tileable: bool = False,
        guidance_text: float | None = None,
        negative: _Words | None = None,
        record: list[tuple[Tensor, ...]] | None = None,
        low: Tensor | None = None,
        guidance_sigma_min: float = 0.0,
    ):
        """eps(x, sigma) in the sigma view, with batched classifier-free guidance.

        ``guide`` says what guidance pushes towards: the unconditional branch drops the label
        and the text ("both"), or only the one named; ``guidance_text`` gives the text its own
        scale, and ``negative`` (a negative prompt's words) stands in for "no text" (see
        :func:`_guidance`). Every branch runs in one batched network call. ``timestep`` maps
        the sigmas a sampler walks to their timesteps, so that the usual case is a lookup
        rather than an inversion of the schedule. A v-predicting network's output is turned
        into eps; a self-conditioned one is fed its previous x0 estimate. ``tileable`` runs the
        network with circular padding (see :func:`_tiling`). Given a
        ``record`` list, every call appends (x, sigma, eps_cond, eps_uncond, eps), running
        both branches whatever the scale. ``low`` is an upscaler's low-resolution input.
        At noise levels ``sigma <= guidance_sigma_min`` the conditions act at scale 1, without
        guidance: the conditional network alone (every nonzero scale set to 1).
        """

        def inputs(scale: float, scale_text: float | None):
            """The plan of guidance at these scales, and its branches' batched inputs."""
            plan = _guidance(
                scale,
                scale_text,
                guide,
                bool(context.any()),
                text is not None,
                negative is not None,
                split=record is not None,
            )
            words = None
            if text is not None or negative is not None:
                blank = (text if text is not None else negative).blank()
                of = {"prompt": blank if text is None else text, "none": blank}
                if negative is not None:
                    of["none"] = negative
                words = _Words.cat([of[w] for _, w in plan.branches])
            labels = torch.cat(
                [context if label else torch.zeros_like(context) for label, _ in plan.branches]
            )
            return plan, labels, words

        guided = inputs(guidance, guidance_text)
        if guided[0].cond == guided[0].uncond and record is not None:
            raise ValueError("branches=True needs something to guide by: a label or a prompt")
        plain = guided
        # Compared in float32, as the samplers walk the sigmas: a floor at a schedule's sigma
        # then holds that step too.
        floor = float(np.float32(guidance_sigma_min))
        if floor > 0:
            text_scale = None if guidance_text is None else float(guidance_text != 0)
            plain = inputs(float(guidance != 0), text_scale)
        config = getattr(self.model, "config", None)
        prediction = getattr(config, "prediction", "eps")
        self_condition = getattr(config, "self_condition", False)
        x0_prev: Tensor | None = None
        network = _tiling(self.model) if tileable else self.model

        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            nonlocal x0_prev
            plan, context, words = guided if float(sigma) > floor else plain
            copies = len(plan.branches)
            model_in = objectives.vp_input(x, sigma)
            if copies > 1:
                model_in = torch.cat([model_in] * copies)
            s = float(sigma)
            t = timestep[s] if s in timestep else float(self.schedule.t_from_sigma(s))
            t = torch.full((len(model_in),), t, device=self.device)
            extra = words.inputs() if words is not None else {}
            if low is not None:
                extra["low"] = torch.cat([low] * copies)
            if self_condition:
                prev = torch.zeros_like(x) if x0_prev is None else x0_prev
                extra["x0_prev"] = torch.cat([prev] * copies)
            bf16 = self.uses_bf16(len(model_in))
            with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
                out = network(model_in, t, context, **extra).float()
            eps = objectives.eps_from_output(prediction, out, model_in, 1 / (1 + sigma**2))
            if copies > 1:
                parts = eps.chunk(copies)
                eps = plan.combine(parts)
                if record is not None:
                    of = dict(zip(plan.branches, parts, strict=True))
                    record.append((x, sigma, of[plan.cond], of[plan.uncond], eps))
            if self_condition:
                x0_prev = (x - sigma * eps).clamp(-1, 1)
            return eps

        return denoise

    @torch.inference_mode()
    def stream(
        self,
        context: Context = None,
        n: int = 1,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        eta: float | None = None,
        spacing: str | None = None,
        palette: render.Palette = None,
        noise: Tensor | np.ndarray | None = None,
        guidance_sigma_min: float | None = None,
        image: np.ndarray | Image.Image | None = None,
        strength: float | None = None,
        mask: np.ndarray | None = None,
        resample: int = 1,
        prompt: str | Sequence[str] | None = None,
        guide: str = "both",
        background: render.Colour | None = None,
        palette_lock: bool = False,
        tileable: bool = False,
        outline: render.Colour | None = None,
        guidance_text: float | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        rerank: int = 1,
        branches: bool = False,
        low_res: np.ndarray | Image.Image | None = None,
    ) -> Iterator[Frame]:
        """Yield a Frame after every step. Unset options take the model's defaults.

        ``prompt`` describes the sprite in words ("red potion", or a list of n descriptions;
        a text model only, see :attr:`supports_text`), alongside ``context``. ``guide`` says
        what ``guidance`` follows: "both" (label and prompt), "label" or "text". Words the model
        never saw in training are read as word pieces; :meth:`unknown_words` lists them and a
        warning names them. ``guidance_text`` gives the prompt its own guidance scale, and
        ``guidance`` is then the label's (dual guidance, see :func:`_guidance`);
        ``negative_prompt`` ("blurry", or n of them) is what guidance steers away from: it
        takes the place of "no text" in the unconditional branch. ``guidance_sigma_min`` limits
        guidance to the noise levels above it (Kynkäänniemi et al. 2024): the steps at or below
        it run the conditional network alone, one branch instead of a guided batch.

        ``rerank=N`` (best of N) draws N candidates of each sprite and keeps the one whose
        SpriteCLIP score against its prompt is highest: the frames before the last hold all
        n·N candidates (sprite i's in rows i·N to i·N + N − 1), the last frame the n kept, with
        ``Frame.picked`` (their rows) and ``Frame.scores``. The last frame of any run with a
        prompt carries ``Frame.scores``.

        ``noise`` (n, C, H, W) is the start noise x_T ~ N(0, I), in place of the seed's draw
        (the seed still drives any later noise): for reproducing a run, or for interpolating.

        ``image`` (uint8 (H, W, 3) or (n, H, W, 3), or a PIL image at the model's resolution or
        a whole multiple of it) starts from a picture instead of pure noise:

        - ``strength`` in (0, 1] (SDEdit, Meng et al. 2022): the image is noised by the forward
          process to the level ``strength`` of the way to pure noise, and the sampler runs the
          remaining ``round(strength * steps)`` steps only (``Frame.total``); 1 is plain
          generation with the same seed.
        - ``mask`` (bool (H, W) or (n, H, W), True = repaint; RePaint, Lugmayr et al. 2022):
          before every network call the known pixels are replaced by the image noised to the
          current level, and the final known pixels are the image's exactly. ``strength``
          defaults to 1 here. ``resample=r`` > 1 adds RePaint's jump-back: each step is taken
          r times, noised back up in between, for better harmony at the mask's edges (each
          step then runs on its own, so multistep samplers take their first-order step).

        ``palette`` is the output stage of the last frame (see ``render.apply_palette``): None
        for the raw pixels, "data" to snap to the training palette, k colours per sprite (with
        ``palette_lock``, k in the whole batch), or a fixed palette: a name ("db16", "db32",
        "pico8", "gameboy"), a list of "#rrggbb" or a .hex/.gpl/.png file (see
        :mod:`diffusion.palettes`). ``outline`` ("#rrggbb") then draws a one-pixel outline
        around each RGBA sprite's opaque pixels. ``tileable`` samples with circular padding, so
        each sprite tiles: its left edge continues its right edge and its top its bottom.
        A model of transparency (:attr:`rgba`) yields RGBA frames with hard alpha; ``background``
        ("#rrggbb", "white" or (r, g, b)) composites them onto that colour and yields RGB. An
        RGB model's sprites are on white already, and ``background`` leaves them so.

        ``branches=True`` adds :class:`Branches` to every frame: guidance taken apart, the
        conditional and unconditional predictions (both run at any scale, 1 and 0 included).

        ``low_res`` is an upscaler's input (:attr:`low_res` > 0, see :meth:`upscale`): the
        sprite to enlarge, uint8 (h, w, 3 or 4) or (n, h, w, 3 or 4) or a PIL image at the
        upscaler's input side; every frame is at the full side.

        A latent model (:attr:`latent`) samples in its autoencoder's latent space and decodes
        every frame; ``Frame.latent`` holds the latent itself. Its edits happen in latent space:
        ``image`` is encoded, and a mask repaints every latent cell that touches a masked pixel.

        The same seed gives the same pixels: all noise comes from a CPU generator, so a seed
        means the same on every device. ``seed=None`` draws one (see ``Frame.seed``).
        """
        opts = self.options(
            n,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            guidance_sigma_min=guidance_sigma_min,
            eta=eta,
            spacing=spacing,
            palette=palette,
            seed=seed,
            prompt=prompt,
            guide=guide,
            background=background,
            palette_lock=palette_lock,
            tileable=tileable,
            outline=outline,
            guidance_text=guidance_text,
            negative_prompt=negative_prompt,
            rerank=rerank,
        )
        sampler, steps, guidance = opts.sampler, opts.steps, opts.guidance
        rerank = opts.rerank
        if rerank > 1 and noise is not None:
            raise ValueError("rerank= draws each candidate's own start noise: it takes no noise=")
        seed = int(torch.randint(0, MAX_SEED + 1, ())) if seed is None else int(seed)
        text = _Words.candidates(self._words(prompt, n), rerank)
        negative = _Words.candidates(self._words(negative_prompt, n), rerank)
        if unknown := self.unknown_words(prompt or []):
            warnings.warn(
                f"words not seen in training, read as word pieces: {', '.join(unknown)}",
                UnknownWordsWarning,
                stacklevel=2,
            )
        start_noise = self._start_noise(noise, n)
        low = _candidates(self._low_input(low_res, n), rerank)
        source, keep, strength, paste = self._edit_inputs(image, strength, mask, resample, n)
        source, keep = _candidates(source, rerank), _candidates(keep, rerank)
        spec = SAMPLERS[sampler]
        options = {"eta": spec.default_eta if eta is None else eta} if spec.uses_eta else {}

        ctx = _candidates(self.encode_context(context, n), rerank)
        sigmas = self.schedule.sigmas(steps, opts.spacing)
        # SDEdit runs only the last round(strength * steps) steps of the schedule.
        run = max(1, round(strength * steps))
        sigmas = sigmas[steps - run :]
        generator = torch.Generator("cpu").manual_seed(int(seed))

        def draw(shape: torch.Size) -> Tensor:
            return torch.randn(shape, generator=generator).to(self.device)

        shape = (n * rerank, *self.state_shape)
        x_T = draw(torch.Size(shape)) if start_noise is None else start_noise
        sig = sigmas.float().to(self.device)
        if run == steps or source is None:
            # From x_T ~ N(0, I) in the model's view, i.e. sqrt(1 + sigma^2) in the sigma view.
            x = x_T * math.sqrt(1 + float(sigmas[0]) ** 2)
        else:  # the forward process to sigma: x0 + sigma * eps in the sigma view
            x = source + sig[0] * x_T
        ts = self.schedule.t_from_sigma(sigmas).tolist()
        timestep = dict(zip(sig.tolist(), ts, strict=True))
        record: list[tuple[Tensor, ...]] | None = [] if branches else None
        denoise = self._denoiser(
            ctx,
            guidance,
            timestep,
            text,
            guide,
            tileable,
            opts.guidance_text,
            negative,
            record,
            low,
            opts.guidance_sigma_min,
        )
        if keep is not None:
            denoise = _repaint(denoise, source, keep, draw)
        if resample > 1:
            steps_iter = _resampled(spec.fn, denoise, x, sig, draw, resample, options)
        else:
            steps_iter = spec.fn(denoise, x, sig, draw, **options)
        scores = picked = None
        for i, (x, x0) in enumerate(steps_iter, start=1):
            if keep is not None:  # show the known pixels as the image at this noise level
                x = torch.where(keep, source + sig[i] * x_T, x)
                x0 = torch.where(keep, source, x0)
            state = objectives.vp_input(x, sig[i])
            x_img, x0_img = self._pixels(state), self._pixels(x0)
            latent = state.permute(0, 2, 3, 1).float().cpu().numpy() if self.latent else None
            if i == run:
                x_img = render.apply_palette(x_img, palette, self.palette, palette_lock)
                x0_img = render.apply_palette(x0_img, palette, self.palette, palette_lock)
                if paste is not None:  # the palette stage must not touch what was kept
                    known, kept = (np.repeat(a, rerank, 0) for a in paste)
                    x_img[kept] = x0_img[kept] = known[kept]
                if outline is not None:
                    x_img, x0_img = render.outline(x_img, outline), render.outline(x0_img, outline)
                if prompt is not None:
                    scores = self._scores(x_img, prompt, n, rerank)
                    best = scores.argmax(1) + rerank * np.arange(n)
                    scores = scores.max(1)
                    if rerank > 1:
                        picked, x_img, x0_img = best, x_img[best], x0_img[best]
                        latent = latent[best] if latent is not None else None
            if background is not None and self.rgba:
                x_img, x0_img = (
                    render.composite(x_img, background),
                    render.composite(x0_img, background),
                )
            parts = None
            if record:
                parts = _branches(record[0], self._picture(background))
                record.clear()
            yield Frame(i, run, ts[i], x_img, x0_img, int(seed), scores, picked, parts, latent)

    def _pixels(self, x: Tensor) -> np.ndarray:
        """The network's state (pixels in [-1, 1], or latents) as the uint8 sprites we hand
        out: a latent model's decoder paints them."""
        if self.autoencoder is not None:
            x = self.autoencoder.decode(x.float())
        return render.model_output(render.to_uint8(x))

    def _picture(self, background: render.Colour | None) -> Callable[[Tensor], np.ndarray]:
        """:meth:`_pixels`, composited onto ``background`` for an RGBA model when one is given."""

        def picture(x: Tensor) -> np.ndarray:
            pixels = self._pixels(x)
            return render.composite(pixels, background) if background and self.rgba else pixels

        return picture

    def _scores(
        self, images: np.ndarray, prompt: str | Sequence[str], n: int, rerank: int
    ) -> np.ndarray:
        """SpriteCLIP's score of each of the n·rerank ``images`` against its prompt, (n, rerank)."""
        prompts = self._prompts(prompt, n)
        texts = prompts if len(prompts) == 1 else [p for p in prompts for _ in range(rerank)]
        return self.text_encoder.score(images, texts).float().cpu().numpy().reshape(n, rerank)

    def _sprites_in(self, image: Any, side: int, n: int, name: str) -> Tensor:
        """An ``image=``-like argument (uint8 (side, side, 3 or 4), (n, side, side, 3 or 4), or
        a PIL image of ``side`` or a whole multiple of it) as (n, C, side, side) in the pixels
        the model works in, on the device; ValueError naming ``name`` otherwise."""
        if isinstance(image, Image.Image):
            if image.width != image.height or image.width % side:
                raise ValueError(
                    f"a PIL image for {name}= must be {side}x{side} or a whole multiple of it, "
                    f"got {image.width}x{image.height}"
                )
            # An RGB picture stays RGB, so that it is read as drawn on white (model_pixels).
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            image = image.convert("RGBA" if alpha else "RGB")
            image = image.resize((side, side), Image.Resampling.NEAREST)
        image = np.asarray(image)
        shapes = [(side, side, c) for c in (3, 4)] + [(n, side, side, c) for c in (3, 4)]
        if image.dtype != np.uint8 or image.shape not in shapes:
            raise ValueError(
                f"{name} must be uint8 ({side}, {side}, 3 or 4) or ({n}, {side}, {side}, 3 or 4), "
                f"got {image.dtype} {image.shape}"
            )
        pixels = render.model_pixels(image, self.channels)
        return render.to_tensor(pixels).expand(n, -1, -1, -1).to(self.device)

    def _low_input(self, image: Any, n: int) -> Tensor | None:
        """An upscaler's low-resolution input, checked (see ``stream(low_res=)``)."""
        r, big = self.low_res, self.resolution
        if not r:
            if image is not None:
                raise ValueError(
                    "this model draws sprites from labels and prompts: low_res= is for an "
                    "upscaler (see SpritePipeline.upscale)"
                )
            return None
        if image is None:
            raise ValueError(
                f"this model is a {r}x{r} -> {big}x{big} upscaler: give it the sprite to enlarge "
                f"as low_res= (or use SpritePipeline.upscale)"
            )
        return self._sprites_in(image, r, n, "low_res")

    def _edit_inputs(
        self, image: Any, strength: float | None, mask: Any, resample: int, n: int
    ) -> tuple[Tensor | None, Tensor | None, float, tuple[np.ndarray, np.ndarray] | None]:
        """Validate image, strength, mask and resample: (the image as the network's state, the
        state's known cells, strength, and for a mask (known pixels, their mask) to paste back
        after the palette stage)."""
        check_resample(resample)
        if resample > 1 and mask is None:
            raise ValueError(f"resample above 1 works only with a mask= (got {resample})")
        if image is None:
            if strength is not None or mask is not None:
                raise ValueError("strength and mask need an image= to start from")
            return None, None, 1.0, None
        r = self.resolution
        pixels = self._sprites_in(image, r, n, "image")
        source = self.autoencoder.encode(pixels)[0] if self.autoencoder is not None else pixels
        keep = paste = None
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape not in ((r, r), (n, r, r)):
                raise ValueError(
                    f"mask must be bool ({r}, {r}) or ({n}, {r}, {r}), "
                    f"got {mask.dtype} {mask.shape}"
                )
            repaint = torch.from_numpy(mask).reshape(-1, 1, r, r).expand(n, 1, r, r)
            paste = (
                render.model_output(render.to_uint8(pixels)),
                ~repaint[:, 0].numpy(),
            )
            if self.autoencoder is not None:  # a latent cell is redrawn if any pixel of it is
                cell = self.autoencoder.config.factor
                repaint = torch.nn.functional.max_pool2d(repaint.float(), cell) > 0
            keep = ~repaint.to(self.device)
            strength = 1.0 if strength is None else strength
        if strength is None:
            raise ValueError("image= without a mask needs strength= in (0, 1]")
        if isinstance(strength, bool) or not (
            isinstance(strength, (int, float, np.floating)) and 0 < strength <= 1
        ):
            raise ValueError(f"strength must be a number in (0, 1], got {strength!r}")
        return source, keep, float(strength), paste

    def interpolate(
        self,
        a: tuple[Context, int],
        b: tuple[Context, int],
        frames: int = 16,
        **options: Any,
    ) -> np.ndarray:
        """A morph between two (context, seed) pairs: uint8 (frames, H, W, 3 or 4).

        The start noise of the two seeds is interpolated spherically (so every frame's noise
        is as Gaussian as the ends') and their label weights linearly; all frames are sampled in
        one batch with a deterministic sampler, so neighbouring frames differ a little and the
        first and last frames are what ``generate(context, n=1, seed=seed)`` draws. ``options``
        as for :meth:`stream` (sampler, steps, guidance, spacing, palette).
        """
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)):
            raise ValueError(f"frames must be an integer, got {frames!r}")
        if not 2 <= frames <= 256:
            raise ValueError(f"frames must be between 2 and 256, got {frames}")
        if "n" in options or "noise" in options or "seed" in options:
            raise ValueError("interpolate sets n, noise and seed itself")
        if options.get("rerank", 1) != 1:
            raise ValueError(
                "a morph's frames are fixed by its two seeds, so there are no candidates to "
                "rerank: pick each end's seed with generate(..., rerank=N) first"
            )
        sampler = canonical_sampler(options.get("sampler") or self.defaults["sampler"])
        spec = SAMPLERS[sampler]
        if spec.draws_noise(0.0) or options.get("eta"):
            raise ValueError(f"interpolate needs a deterministic sampler, not {sampler!r}")
        if spec.uses_eta:
            options["eta"] = 0.0
        ends = []
        for context, seed in (a, b):
            generator = torch.Generator("cpu").manual_seed(int(seed))
            shape = (1, *self.state_shape)
            ends.append(
                (self.encode_context(context, 1).cpu(), torch.randn(shape, generator=generator))
            )
        w = torch.linspace(0, 1, frames)
        weights = torch.lerp(ends[0][0], ends[1][0], w[:, None])
        noise = torch.cat([slerp(ends[0][1], ends[1][1], float(t)) for t in w])
        return self.generate(weights.numpy(), n=frames, noise=noise, seed=0, **options)

    def _start_noise(self, noise: Tensor | np.ndarray | None, n: int) -> Tensor | None:
        if noise is None:
            return None
        shape = (n, *self.state_shape)
        x = torch.as_tensor(np.asarray(noise) if not isinstance(noise, Tensor) else noise)
        if tuple(x.shape) != shape or not x.is_floating_point():
            raise ValueError(
                f"noise must be a float array of shape {shape}, got {x.dtype} {tuple(x.shape)}"
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError("noise must be finite")
        return x.float().to(self.device)

    def generate(self, context: Context = None, n: int = 1, **options: Any) -> np.ndarray:
        """Sample ``n`` sprites: uint8 (n, H, W, 3), or (n, H, W, 4) from a model of
        transparency unless ``background=`` is given. Options as for :meth:`stream`."""
        *_, last = self.stream(context, n, **options)
        return last.x  # the last step lands on t = 0: the clean sprite

    def upscale(self, image: np.ndarray | Image.Image, **options: Any) -> np.ndarray:
        """Enlarge sprites with an upscaler model (:attr:`low_res` > 0; SR3): ``image`` uint8
        (h, w, 3 or 4), (n, h, w, 3 or 4) or a PIL image, at the upscaler's input side, ->
        uint8 (n, H, W, 4) (or RGB with ``background=``). An RGB sprite is read as drawn on
        white. Options as for :meth:`stream`; the sprite's own label is not needed."""
        array = np.asarray(image) if not isinstance(image, Image.Image) else None
        n = len(array) if array is not None and array.ndim == 4 else 1
        *_, last = self.stream(None, n, low_res=image, **options)
        return last.x


def _needs_autoencoder(channels: int) -> str:
    return (
        f"in_channels must be 3 (RGB) or 4 (RGBA), got {channels}: a network of other channels "
        'denoises latents, which a latent model (config "latent": true) decodes with its '
        f"{AUTOENCODER}/"
    )


def _schedule_of(section: Any) -> Schedule:
    """The config's "schedule" section as a Schedule; its T within BOUNDS, so that no schedule
    larger than any model's is ever allocated."""
    if not isinstance(section, dict):
        raise ValueError("schedule must be a JSON object such as {'kind': 'linear', 'T': 500}")
    check_whole("schedule T", section.get("T"), *BOUNDS["T"])
    try:
        return Schedule.from_config(section)
    except TypeError as err:  # an unknown parameter, or a parameter of the wrong type
        raise ValueError(f"schedule {section.get('kind')!r}: {err}") from None


def _labels_of(labels: Any, count: int) -> list[str]:
    if not (isinstance(labels, list) and all(isinstance(x, str) and x for x in labels)):
        raise ValueError("labels must be a list of label names")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels has duplicates: {labels}")
    if len(labels) != count:
        raise ValueError(f"{len(labels)} labels, but the model's num_labels is {count}")
    return labels


def _palette_of(colours: Any) -> np.ndarray:
    hex_colour = re.compile(r"#[0-9a-fA-F]{6}")
    if not (
        isinstance(colours, list)
        and colours
        and all(isinstance(c, str) and hex_colour.fullmatch(c) for c in colours)
    ):
        raise ValueError("palette must be a list of colours like '#1a2b3c'")
    return render.palette_from_hex(colours)


def _check_weights(config: UnetConfig, path: Path) -> None:
    """The tensors of the safetensors file at ``path`` against the network ``config``
    describes, by name and shape, from the file's header alone (nothing is allocated)."""
    if (count := config.parameter_count()) > MAX_PARAMETERS:
        raise ValueError(
            f"{path.parent / 'config.json'}: that network has {count:,} weights; the most "
            f"a model may have is {MAX_PARAMETERS:,}"
        )
    with torch.device("meta"):
        wanted = {k: tuple(v.shape) for k, v in ContextUnet(config).state_dict().items()}
    try:
        with safetensors.safe_open(path, "pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (safetensors.SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    labels = found.get("label_emb.weight")
    if labels is not None and len(labels) == 2 and labels[1] != config.num_labels:
        raise ValueError(
            f"{path}: the weights were trained with {labels[1]} labels, but config.json has "
            f"{config.num_labels}"
        )
    missing, unexpected = sorted(set(wanted) - set(found)), sorted(set(found) - set(wanted))
    if missing or unexpected:
        raise ValueError(
            f"{path}: the weights are not the network config.json describes (missing "
            f"{missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, shape in wanted.items():
        if found[name] != shape:
            raise ValueError(
                f"{path}: {name} is {found[name]}, but config.json's network needs {shape}"
            )


def _check_finite(model: nn.Module, path: Path) -> None:
    for name, tensor in model.state_dict().items():
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{path}: {name} holds NaN or infinite values; the weights are broken")


Branch = tuple[bool, str]  # (with the label?, "prompt" or "none"): one input of guidance


@dataclass(frozen=True)
class _Guidance:
    """The branches one guided step runs (in this order, in one batch) and how their noise
    estimates add up: eps[base] + the sum of scale * (eps[plus] - eps[minus]) over terms."""

    branches: tuple[Branch, ...]
    base: Branch
    terms: tuple[tuple[float, Branch, Branch], ...]
    cond: Branch  # everything the run is conditioned on
    uncond: Branch  # what guidance pushes away from

    def combine(self, eps: Sequence[Tensor]) -> Tensor:
        of = dict(zip(self.branches, eps, strict=True))
        out = of[self.base]
        for scale, plus, minus in self.terms:
            out = out + scale * (of[plus] - of[minus])
        return out


def _guidance(
    guidance: float,
    guidance_text: float | None,
    guide: str,
    label: bool,
    prompt: bool,
    negative: bool,
    split: bool = False,
) -> _Guidance:
    """Classifier-free guidance (Ho & Salimans 2022) for a run with or without a ``label``,
    ``prompt`` and ``negative`` prompt; ∅ below is "no text", or the negative prompt when there
    is one (as in Stable Diffusion, whose negative prompt replaces the unconditional text).

    One scale g (``guidance_text`` None): eps = eps(u) + g (eps(label, prompt) - eps(u)), where
    the unconditional u drops what ``guide`` names: (no label, ∅) for "both", (label, ∅) for
    "text", (no label, prompt) for "label".

    Two scales, g_l = ``guidance`` and g_t = ``guidance_text``: InstructPix2Pix's dual guidance
    (Brooks et al. 2023), which pushes from nothing to the label, then from the label to the
    label and the prompt:
    eps = eps(-, ∅) + g_l (eps(label, ∅) - eps(-, ∅)) + g_t (eps(label, prompt) - eps(label, ∅)).
    g_t = 0 is label guidance alone, as without a prompt; g_l = 1 is guide="text" at scale g_t.

    Branches that are the same input (no label; neither prompt nor negative) are merged, terms of
    scale 0 dropped, and a first term of scale 1 replaces its base, so that a step runs as few
    branches as its sum needs: guidance 1 runs the conditional network alone. ``split`` keeps
    every branch and term, so that the conditional and unconditional estimates can be shown.
    """

    def branch(with_label: bool, text: str) -> Branch:
        return with_label and label, text if prompt or negative else "none"

    full, empty, label_only = branch(True, "prompt"), branch(False, "none"), branch(True, "none")
    if guidance_text is not None:
        base = empty
        terms = [(guidance, label_only, empty), (guidance_text, full, label_only)]
    else:
        base = {"both": empty, "text": label_only, "label": branch(False, "prompt")}[guide]
        terms = [(guidance, full, base)]
    uncond = base
    if not split:
        terms = [term for term in terms if term[0] != 0 and term[1] != term[2]]
        while terms and terms[0][0] == 1 and terms[0][2] == base:
            base = terms.pop(0)[1]
    used = {base, *(b for _, plus, minus in terms for b in (plus, minus))}
    order = [(True, "prompt"), (True, "none"), (False, "prompt"), (False, "none")]
    return _Guidance(tuple(b for b in order if b in used), base, tuple(terms), full, uncond)


def _branches(call: tuple[Tensor, ...], picture: Callable[[Tensor], np.ndarray]) -> Branches:
    """A recorded network call (x, sigma, eps_cond, eps_uncond, eps) as :class:`Branches`,
    its images made by ``picture``."""
    x, sigma, *eps = call
    arrays = [e.permute(0, 2, 3, 1).float().cpu().numpy() for e in eps]
    noisy = picture(objectives.vp_input(x, sigma))
    return Branches(noisy, *arrays, *(picture(x - sigma * e) for e in eps))


class _Words(NamedTuple):
    """A prompt (one per row) as the network reads it: its pooled embedding (n, text_dim),
    and for a network with cross-attention its token states (n, L, text_dim) and their mask
    (n, L) of real tokens (see SpriteCLIP.encode_tokens)."""

    text: Tensor
    tokens: Tensor | None = None
    token_mask: Tensor | None = None

    def inputs(self) -> dict[str, Tensor]:
        """The network's keyword arguments for these words."""
        if self.tokens is None:
            return {"text": self.text}
        return {"text": self.text, "tokens": self.tokens, "token_mask": self.token_mask}

    def blank(self) -> _Words:
        """No text for as many rows: the zero embedding and no token, as text dropout trains."""
        if self.tokens is None:
            return _Words(torch.zeros_like(self.text))
        n, _, width = self.tokens.shape
        return _Words(
            torch.zeros_like(self.text),
            self.tokens.new_zeros(n, 1, width),
            self.token_mask.new_zeros(n, 1),
        )

    @staticmethod
    def cat(parts: Sequence[_Words]) -> _Words:
        """The rows of ``parts`` in one batch, token states padded to the longest."""
        text = torch.cat([p.text for p in parts])
        if parts[0].tokens is None:
            return _Words(text)
        longest = max(p.tokens.shape[1] for p in parts)
        pad = [longest - p.tokens.shape[1] for p in parts]
        tokens = torch.cat([F.pad(p.tokens, (0, 0, 0, k)) for p, k in zip(parts, pad, strict=True)])
        mask = torch.cat([F.pad(p.token_mask, (0, k)) for p, k in zip(parts, pad, strict=True)])
        return _Words(text, tokens, mask)

    @staticmethod
    def candidates(words: _Words | None, rerank: int) -> _Words | None:
        """Each row repeated for each of its sprite's ``rerank`` candidates, side by side."""
        if words is None:
            return None
        return _Words(*(_candidates(part, rerank) for part in words))


def _candidates(x: Tensor | None, rerank: int) -> Tensor | None:
    """Per-sprite inputs repeated for each of a sprite's ``rerank`` candidates, side by side."""
    return x if x is None or rerank == 1 else x.repeat_interleave(rerank, 0)


def _tiling(model: nn.Module) -> Callable[..., Tensor]:
    """``model`` as a network of tiles: circular padding (a ContextUnet's ``circular=True``),
    and each call sees its input rolled by a new offset and gives its output rolled back. The
    U-Net is not wholly shift-invariant (its bottleneck map and its pooling grid have fixed
    places), so without the rolls the fixed places would keep a faint seam where the picture
    wraps; with them no place is special."""
    calls = 0

    def network(x: Tensor, t: Tensor, context: Tensor, **extra: Tensor | None) -> Tensor:
        nonlocal calls
        h, w = x.shape[-2:]
        # Steps 5 and 3 are prime to any power-of-two side: every row and column gets its turn.
        shift = ((5 * calls) % h, (3 * calls) % w)
        calls += 1
        extra = {
            k: torch.roll(v, shift, (-2, -1)) if k == "x0_prev" else v for k, v in extra.items()
        }
        out = model(torch.roll(x, shift, (-2, -1)), t, context, circular=True, **extra)
        return torch.roll(out, (-shift[0], -shift[1]), (-2, -1))

    return network


def _repaint(denoise: EpsModel, source: Tensor, keep: Tensor, draw: Noise) -> EpsModel:
    """RePaint's step: the network sees the known pixels as the source image noised to the
    current level (fresh noise every call), and the pixels to repaint as the sampler has them."""

    def repainting(x: Tensor, sigma: Tensor) -> Tensor:
        return denoise(torch.where(keep, source + sigma * draw(x.shape), x), sigma)

    return repainting


def _resampled(
    sampler: Callable[..., Steps],
    denoise: EpsModel,
    x: Tensor,
    sigmas: Tensor,
    draw: Noise,
    times: int,
    options: dict[str, Any],
) -> Steps:
    """RePaint's jump-back: every step taken ``times`` times, noised back up to its start level
    (forward process from sigma_next to sigma) between the tries."""
    for sigma, sigma_next in pairwise(sigmas):
        pair = torch.stack([sigma, sigma_next])
        for attempt in range(times):
            x_next, x0 = next(sampler(denoise, x, pair, draw, **options))
            if attempt < times - 1:
                x = x_next + (sigma**2 - sigma_next**2).sqrt() * draw(x.shape)
        x = x_next
        yield x, x0


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1), along the great circle."""
    cos = (a * b).sum() / (a.norm() * b.norm())
    omega = torch.arccos(cos.clamp(-1, 1))
    if float(omega) < 1e-6:  # (nearly) parallel: the straight line is the arc
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
