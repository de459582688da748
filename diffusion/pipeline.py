"""SpritePipeline: a trained noise model + its schedule + label names = sprites on demand.

The pipeline owns everything between the model and the pixels: the device, seeds, turning a
context into label weights, classifier-free guidance, the view changes between the model's
variance-preserving inputs and the samplers' sigma view, and frames for streaming.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from PIL import Image
from torch import Tensor, nn

from . import objectives, render
from .device import bf16_is_fast, configure_cpu_threads, default_device
from .files import atomic_write
from .hub import resolve_model_dir
from .model import ContextUnet, UnetConfig
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
FORMAT = "sprite-diffusion/1"
Context = str | int | Mapping[str, float] | Sequence[float] | np.ndarray | Tensor | None
TEXT_ENCODER = "text_encoder"  # the sub-folder of a text model that holds its SpriteCLIP


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
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cpu":
            configure_cpu_threads()
        self.model = model.to(self.device).eval()
        self.schedule = schedule
        self.labels = list(labels)
        config = getattr(model, "config", None)
        self.resolution = resolution or getattr(config, "resolution", 16)
        self.channels = getattr(config, "in_channels", 3)
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
        steps, guidance, eta, spacing, palette, seed, prompt, guide) with the unset ones taken
        from the model's defaults. Raises ValueError naming the first bad choice."""
        if choices.get("steps") is None:  # a sampler's measured steps, within this schedule
            sampler = choices.get("sampler") or self.defaults["sampler"]
            choices["steps"] = self.default_steps(sampler)
        options = resolve(self.defaults, SamplingOptions(**choices)).validate(self.schedule, n)
        render.check_palette(options.palette, self.palette)
        if options.prompt is not None:
            self._prompts(options.prompt, n)
        return options

    @property
    def bf16(self) -> bool:
        """Whether the network runs in bf16 autocast: the model's ``precision`` default says
        "bf16" and the device has fast bf16 (see :func:`diffusion.device.bf16_is_fast`)."""
        return self.defaults.get("precision") == "bf16" and bf16_is_fast(self.device)

    @property
    def rgba(self) -> bool:
        """Whether the model draws transparency: its sprites come out RGBA unless a
        ``background=`` is given."""
        return self.channels == 4

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
        """Load a model folder (config.json + model.safetensors) or a Hub model repo id."""
        folder = resolve_model_dir(DEFAULT_MODEL if name_or_path is None else name_or_path)
        config_path, weights_path = folder / "config.json", folder / "model.safetensors"
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{folder} is not a model folder: {path.name} is missing")
        config = json.loads(config_path.read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"{config_path}: not a {FORMAT} config ({config.get('format')=})")
        model = ContextUnet(UnetConfig(**config["model"]))
        safetensors.torch.load_model(model, weights_path, device="cpu")
        text_encoder = None
        if model.config.text_dim:
            text_encoder = SpriteCLIP.from_pretrained(folder / TEXT_ENCODER)
        pipe = cls(
            model,
            Schedule.from_config(config["schedule"]),
            config["labels"],
            device=device,
            defaults=config.get("sampling"),
            text_encoder=text_encoder,
        )
        pipe.config = config
        if "palette" in config:
            pipe.palette = render.palette_from_hex(config["palette"])
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
            **(
                {"palette": render.palette_to_hex(self.palette)} if self.palette is not None else {}
            ),
            **(extra or {}),
        }
        atomic_write(folder / "config.json", json.dumps(config, indent=2))
        atomic_write(
            folder / "model.safetensors", lambda tmp: safetensors.torch.save_model(self.model, tmp)
        )
        if self.text_encoder is not None:
            self.text_encoder.save_pretrained(folder / TEXT_ENCODER)

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

    def _prompts(self, prompt: str | Sequence[str], n: int) -> list[str]:
        """The prompt as a list of 1 or n descriptions, checked; ValueError says what is wrong
        (a label-only model, an empty text, too many word pieces)."""
        if self.text_encoder is None:
            raise ValueError(
                "this model takes no prompt: it was trained on labels only; "
                "load a text model (see the README) or use context="
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not all(isinstance(p, str) for p in prompts) or len(prompts) not in (1, n):
            raise ValueError(f"prompt must be a string or a list of {n} strings")
        if not all(p.strip() for p in prompts):
            raise ValueError("the prompt is empty: describe the sprite in a few words")
        self.text_encoder.tokenize(prompts)  # refuses descriptions of too many word pieces
        return prompts

    def _denoiser(
        self,
        context: Tensor,
        guidance: float,
        timestep: dict[float, float],
        text: Tensor | None = None,
        guide: str = "both",
    ):
        """eps(x, sigma) in the sigma view, with batched classifier-free guidance.

        ``guide`` says what guidance pushes towards: the unconditional half of the batch drops
        the label and the text ("both"), or only the one named. ``timestep`` maps the sigmas a
        sampler walks to their timesteps, so that the usual case is a lookup rather than an
        inversion of the schedule. A v-predicting network's output is turned into eps; a
        self-conditioned one is fed its previous x0 estimate.
        """
        drop_label, drop_text = guide != "text", text is not None and guide != "label"
        guided = guidance != 1 and ((drop_label and bool(context.any())) or drop_text)
        if guided:
            context = torch.cat([context, torch.zeros_like(context) if drop_label else context])
            if text is not None:
                text = torch.cat([text, torch.zeros_like(text) if drop_text else text])
        config = getattr(self.model, "config", None)
        prediction = getattr(config, "prediction", "eps")
        self_condition = getattr(config, "self_condition", False)
        x0_prev: Tensor | None = None
        bf16 = self.bf16

        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            nonlocal x0_prev
            model_in = objectives.vp_input(x, sigma)
            if guided:
                model_in = torch.cat([model_in, model_in])
            s = float(sigma)
            t = timestep[s] if s in timestep else float(self.schedule.t_from_sigma(s))
            t = torch.full((len(model_in),), t, device=self.device)
            extra = {"text": text} if text is not None else {}
            if self_condition:
                prev = torch.zeros_like(x) if x0_prev is None else x0_prev
                extra["x0_prev"] = torch.cat([prev, prev]) if guided else prev
            with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
                out = self.model(model_in, t, context, **extra).float()
            eps = objectives.eps_from_output(prediction, out, model_in, 1 / (1 + sigma**2))
            if guided:
                cond, uncond = eps.chunk(2)
                eps = uncond + guidance * (cond - uncond)
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
        image: np.ndarray | Image.Image | None = None,
        strength: float | None = None,
        mask: np.ndarray | None = None,
        resample: int = 1,
        prompt: str | Sequence[str] | None = None,
        guide: str = "both",
        background: render.Colour | None = None,
    ) -> Iterator[Frame]:
        """Yield a Frame after every step. Unset options take the model's defaults.

        ``prompt`` describes the sprite in words ("red potion", or a list of n descriptions;
        a text model only, see :attr:`supports_text`), alongside ``context``. ``guide`` says
        what ``guidance`` follows: "both" (label and prompt), "label" or "text". Words the model
        never saw in training are read as word pieces; :meth:`unknown_words` lists them and a
        warning names them.

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
        for the raw pixels, "data" to snap to the training palette, or k colours per sprite.
        A model of transparency (:attr:`rgba`) yields RGBA frames with hard alpha; ``background``
        ("#rrggbb", "white" or (r, g, b)) composites them onto that colour and yields RGB. An
        RGB model's sprites are on white already, and ``background`` leaves them so.

        The same seed gives the same pixels: all noise comes from a CPU generator, so a seed
        means the same on every device. ``seed=None`` draws one (see ``Frame.seed``).
        """
        opts = self.options(
            n,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            eta=eta,
            spacing=spacing,
            palette=palette,
            seed=seed,
            prompt=prompt,
            guide=guide,
            background=background,
        )
        sampler, steps, guidance = opts.sampler, opts.steps, opts.guidance
        seed = int(torch.randint(0, MAX_SEED + 1, ())) if seed is None else int(seed)
        text = self.encode_prompt(prompt, n)
        if unknown := self.unknown_words(prompt or []):
            warnings.warn(
                f"words not seen in training, read as word pieces: {', '.join(unknown)}",
                UnknownWordsWarning,
                stacklevel=2,
            )
        start_noise = self._start_noise(noise, n)
        source, keep, strength = self._edit_inputs(image, strength, mask, resample, n)
        spec = SAMPLERS[sampler]
        options = {"eta": spec.default_eta if eta is None else eta} if spec.uses_eta else {}

        ctx = self.encode_context(context, n)
        sigmas = self.schedule.sigmas(steps, opts.spacing)
        # SDEdit runs only the last round(strength * steps) steps of the schedule.
        run = max(1, round(strength * steps))
        sigmas = sigmas[steps - run :]
        generator = torch.Generator("cpu").manual_seed(int(seed))

        def draw(shape: torch.Size) -> Tensor:
            return torch.randn(shape, generator=generator).to(self.device)

        shape = (n, self.channels, self.resolution, self.resolution)
        x_T = draw(torch.Size(shape)) if start_noise is None else start_noise
        sig = sigmas.float().to(self.device)
        if run == steps or source is None:
            # From x_T ~ N(0, I) in the model's view, i.e. sqrt(1 + sigma^2) in the sigma view.
            x = x_T * math.sqrt(1 + float(sigmas[0]) ** 2)
        else:  # the forward process to sigma: x0 + sigma * eps in the sigma view
            x = source + sig[0] * x_T
        ts = self.schedule.t_from_sigma(sigmas).tolist()
        timestep = dict(zip(sig.tolist(), ts, strict=True))
        denoise = self._denoiser(ctx, guidance, timestep, text, guide)
        if keep is not None:
            denoise = _repaint(denoise, source, keep, draw)
        if resample > 1:
            steps_iter = _resampled(spec.fn, denoise, x, sig, draw, resample, options)
        else:
            steps_iter = spec.fn(denoise, x, sig, draw, **options)
        for i, (x, x0) in enumerate(steps_iter, start=1):
            if keep is not None:  # show the known pixels as the image at this noise level
                x = torch.where(keep, source + sig[i] * x_T, x)
                x0 = torch.where(keep, source, x0)
            x_img = render.model_output(render.to_uint8(objectives.vp_input(x, sig[i])))
            x0_img = render.model_output(render.to_uint8(x0))
            if i == run:
                x_img = render.apply_palette(x_img, palette, self.palette)
                x0_img = render.apply_palette(x0_img, palette, self.palette)
                if keep is not None:  # the palette stage must not touch what was kept
                    known = render.model_output(render.to_uint8(source))
                    kept = keep.cpu().numpy().transpose(0, 2, 3, 1)[..., 0]
                    x_img[kept] = x0_img[kept] = known[kept]
            if background is not None and self.rgba:
                x_img, x0_img = (
                    render.composite(x_img, background),
                    render.composite(x0_img, background),
                )
            yield Frame(i, run, ts[i], x_img, x0_img, int(seed))

    def _edit_inputs(
        self, image: Any, strength: float | None, mask: Any, resample: int, n: int
    ) -> tuple[Tensor | None, Tensor | None, float]:
        """Validate image, strength, mask and resample: (image tensor, known-pixel mask,
        strength)."""
        check_resample(resample)
        if resample > 1 and mask is None:
            raise ValueError(f"resample above 1 works only with a mask= (got {resample})")
        if image is None:
            if strength is not None or mask is not None:
                raise ValueError("strength and mask need an image= to start from")
            return None, None, 1.0
        r = self.resolution
        if isinstance(image, Image.Image):
            if image.width != image.height or image.width % r:
                raise ValueError(
                    f"a PIL image must be {r}x{r} or a whole multiple of it, "
                    f"got {image.width}x{image.height}"
                )
            image = np.asarray(image.convert("RGBA").resize((r, r), Image.Resampling.NEAREST))
        image = np.asarray(image)
        shapes = [(r, r, c) for c in (3, 4)] + [(n, r, r, c) for c in (3, 4)]
        if image.dtype != np.uint8 or image.shape not in shapes:
            raise ValueError(
                f"image must be uint8 ({r}, {r}, 3 or 4) or ({n}, {r}, {r}, 3 or 4), "
                f"got {image.dtype} {image.shape}"
            )
        pixels = render.model_pixels(image, self.channels)
        source = render.to_tensor(pixels).expand(n, -1, -1, -1).to(self.device)
        keep = None
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape not in ((r, r), (n, r, r)):
                raise ValueError(
                    f"mask must be bool ({r}, {r}) or ({n}, {r}, {r}), "
                    f"got {mask.dtype} {mask.shape}"
                )
            repaint = torch.from_numpy(mask).reshape(-1, 1, r, r).expand(n, 1, r, r)
            keep = ~repaint.to(self.device)
            strength = 1.0 if strength is None else strength
        if strength is None:
            raise ValueError("image= without a mask needs strength= in (0, 1]")
        if isinstance(strength, bool) or not (
            isinstance(strength, (int, float, np.floating)) and 0 < strength <= 1
        ):
            raise ValueError(f"strength must be a number in (0, 1], got {strength!r}")
        return source, keep, float(strength)

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
        sampler = canonical_sampler(options.get("sampler") or self.defaults["sampler"])
        spec = SAMPLERS[sampler]
        if spec.draws_noise(0.0) or options.get("eta"):
            raise ValueError(f"interpolate needs a deterministic sampler, not {sampler!r}")
        if spec.uses_eta:
            options["eta"] = 0.0
        ends = []
        for context, seed in (a, b):
            generator = torch.Generator("cpu").manual_seed(int(seed))
            shape = (1, self.channels, self.resolution, self.resolution)
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
        shape = (n, self.channels, self.resolution, self.resolution)
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
