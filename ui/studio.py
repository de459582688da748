"""The studio every tab works with: the models, the output store and the sessions, and the
sprites a tab can start from (a fresh draw, this session's last run, an upload).

No diffusion maths here (that is the ``diffusion`` package) and no layout (each tab has its own).
"""

from __future__ import annotations

import io
import logging
import os
import secrets

import gradio as gr
import numpy as np
from PIL import Image, UnidentifiedImageError

from diffusion import SpritePipeline, render
from diffusion.options import MAX_SEED
from diffusion.samplers import canonical_sampler

from .errors import InputError, article, shorten
from .limits import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS
from .sessions import Sessions, busy, session_of
from .storage import OutputStore

log = logging.getLogger("sprite_studio")


def random_seed() -> int:
    """A seed drawn from every seed a run accepts."""
    return secrets.randbelow(MAX_SEED + 1)


def default_sampler(pipe: SpritePipeline) -> str:
    """The sampler the model's config recommends, by its name in SAMPLERS."""
    return canonical_sampler(pipe.defaults["sampler"])


def default_steps(pipe: SpritePipeline, sampler: str) -> int:
    """The steps ``sampler`` runs on ``pipe`` when a person has not chosen: the model's
    measured choice, else the sampler's own, and never more than the schedule has."""
    return min(pipe.default_steps(sampler), pipe.schedule.T)


def default_palette(pipe: SpritePipeline) -> render.Palette:
    """The palette stage the model's config recommends (None: raw), as ``palette=`` takes it;
    raw for a model without the training palette its config names."""
    chosen = pipe.defaults.get("palette")
    palette = None if chosen is None else render.parse_palette(str(chosen))
    if palette == "data" and pipe.palette is None:
        return None
    return palette


UNREADABLE = "That file is not an image we can read. Upload a PNG (or GIF, JPEG, WebP, BMP)."
TOO_MANY_PIXELS = (
    f"That image has more than {MAX_UPLOAD_PIXELS:,} pixels; sprites are much smaller."
)


def open_upload(source: str | os.PathLike | bytes) -> Image.Image:
    """An uploaded image (a file, or its bytes) opened but not yet decoded, once its size and
    its pixel count (read from its header alone) are within the limits; an InputError saying
    why not otherwise. So a small file that unpacks to gigapixels is never decoded."""
    try:
        size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
    except OSError:  # not a file here (a URL, a path elsewhere)
        raise InputError(UNREADABLE) from None
    if size > MAX_UPLOAD_BYTES:
        raise InputError(
            f"That file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 2**20:.0f} MB."
        )
    try:
        im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError:
        raise InputError(TOO_MANY_PIXELS) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError(UNREADABLE) from None
    if im.width * im.height > MAX_UPLOAD_PIXELS:
        im.close()
        raise InputError(f"That image is {im.width}×{im.height} pixels. {TOO_MANY_PIXELS}")
    return im


def load_upload(
    path: str | os.PathLike, resolution: int, alpha: bool = False
) -> tuple[np.ndarray, str]:
    """An uploaded image file -> ((resolution, resolution, 3) uint8 sprite, or 4 channels with
    its transparency kept when ``alpha``, and what was done to it), or an InputError saying why
    not (see :func:`open_upload`). See ``render.to_sprite`` for how a picture becomes a sprite."""
    with open_upload(path) as im:
        try:
            sprite = render.to_sprite(im, resolution, alpha)
        except (OSError, ValueError, SyntaxError):  # a valid header over truncated or bad data
            raise InputError(UNREADABLE) from None
        return sprite, upload_note(im.width, im.height, resolution)


def upload_note(width: int, height: int, resolution: int) -> str:
    """What became of a ``width`` x ``height`` upload on its way to a sprite."""
    r = resolution
    if width == height == r:
        return f"your upload, {r}×{r}"
    if width == height:
        return f"your upload, resized from {width}×{height} to {r}×{r}"
    side = min(width, height)
    resized = f" and resized to {r}×{r}" if side != r else ""
    return (
        f"your upload, {width}×{height}: cropped to the {side}×{side} square in its middle{resized}"
    )


def split_models(
    models: dict[str, SpritePipeline],
) -> tuple[dict[str, SpritePipeline], SpritePipeline | None]:
    """``models`` as (the models that draw sprites, by name, in their order; the first
    upscaler, or None): an upscaler (``pipe.low_res`` > 0) only enlarges sprites another
    model drew, so it is offered as "Upscale 2x", never as a model to draw with."""
    upscalers = [pipe for pipe in models.values() if pipe.low_res]
    drawers = {name: pipe for name, pipe in models.items() if not pipe.low_res}
    return drawers, (upscalers[0] if upscalers else None)


class Studio:
    """The models, the upscaler, the output store and the sessions: what every tab's handlers
    work with. ``models`` may include an upscaler (see :func:`split_models`)."""

    def __init__(self, models: dict[str, SpritePipeline], store: OutputStore | None = None) -> None:
        self.models, self.upscaler = split_models(models)
        if not self.models:
            raise ValueError("Sprite Diffusion Studio needs at least one model that draws sprites")
        self.store = store or OutputStore()
        self.default_model = next(iter(self.models))
        self.sessions = Sessions()

    def pipe(self, model: str | None) -> SpritePipeline:
        """The pipeline of the model called ``model`` (the first one when none is named)."""
        if not model:
            return self.models[self.default_model]
        if not isinstance(model, str) or model not in self.models:
            raise InputError(
                f"Unknown model {shorten(model)}. Available: {', '.join(self.models)}."
            )
        return self.models[model]

    def can_upscale(self, pipe: SpritePipeline) -> bool:
        """Whether the upscaler takes the sprites ``pipe`` draws: there is one, and its input
        side is their side."""
        return self.upscaler is not None and self.upscaler.low_res == pipe.resolution

    def draw_sprite(self, model: str | None, label: str | None = None) -> tuple[np.ndarray, str]:
        """One fresh sprite of ``label`` (any, by default) drawn as Generate draws it by
        default (the model's sampler, steps, guidance and palette), and a line saying what it
        is."""
        pipe = self.pipe(model)
        label = label if label in pipe.labels else secrets.choice(pipe.labels)
        options = pipe.options(
            1,
            steps=default_steps(pipe, default_sampler(pipe)),
            seed=random_seed(),
            palette=default_palette(pipe),
        )
        sprite = pipe.generate(context=label, n=1, **options.as_kwargs())[0]
        return sprite, (
            f"{article(label)} **{label}**, drawn with {options.sampler} in {options.steps} "
            f"steps, seed {options.seed}"
        )

    def upload(self, model: str | None, path: str | None) -> tuple[np.ndarray, str]:
        """The sprite of an uploaded file for ``model``, and what was done to it; an
        InputError (and nothing changed) for a file that is no picture."""
        if not path:
            raise InputError("Choose an image file to upload.")
        pipe = self.pipe(model)
        return load_upload(path, pipe.resolution, alpha=pipe.rgba)

    @staticmethod
    def last_sprite(sprites: np.ndarray | None) -> np.ndarray:
        """The first sprite of this session's last Generate run."""
        if sprites is None or len(sprites) == 0:
            raise InputError("Nothing generated yet in this session: use the Generate tab first.")
        return sprites[0]

    def stop(self, request: gr.Request) -> None:
        """Ask this session's running (or waiting) generate or compare to end at its next step."""
        self.sessions.press_stop(session_of(request))

    def click(self, request: gr.Request) -> None:
        """A run was asked for: note it (for Stop), or refuse a session with too many going."""
        if not self.sessions.click(session_of(request)):
            refusal = busy()
            log.info("refused click: %s", refusal.message)
            raise refusal
