"""One sampling request, from widget values to the page: parsing, validation, cost, streaming.

Every limit of a run itself is the package's: a request is checked by ``SpritePipeline.options``
(``diffusion.options``), which fills the model's defaults, and only the wording of a refusal is
the app's. What a run costs is ``SamplingOptions.work``, held to MAX_WORK. ``run_on_page`` streams
a validated run to the outputs named in OUTPUTS.
"""

from __future__ import annotations

import math
import os
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from diffusion import SAMPLERS, SpritePipeline, palettes, render
from diffusion.options import (
    MAX_GUIDANCE,
    MAX_RERANK,
    MAX_SEED,
    SamplingOptions,
    check_seed,
    guidance_floor,
)
from diffusion.samplers import canonical_sampler

from .errors import InputError, as_sentence, clean_excerpt, is_empty, refused, shorten
from .limits import (
    EXPORTS_OFF,
    GIF_HOLD_MS,
    GIF_MAX_FRAMES,
    LATENT_TILE_PX,
    MAX_BATCH,
    MAX_PROMPT_CHARS,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    MAX_WORK,
    PALETTE_FILE,
    PREVIEW_INTERVAL_S,
    SPRITE_PX,
    TILE_PX,
    TILE_REPEAT,
    TRANSPARENT,
    UNCONDITIONAL,
)
from .studio import Studio, default_steps

# What run_on_page yields, by name; a tab maps each to its component.
OUTPUTS = ("live", "status", "gif", "sheet", "files", "seed", "sprites")
LATENT = "latent"  # and with latent_view=True, this one too: a latent model's latent
PROMPT_ALONE = (
    f"{UNCONDITIONAL} while a prompt is typed: the prompt alone guides. Pick a label to "
    "guide by both."
)

# -- widget values to numbers -----------------------------------------------------------------


def to_float(value: Any) -> float | None:
    """A widget's value as a float (inf and nan included), or None if it is no number."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def to_whole(value: Any) -> int | None:
    """A widget's value as an int when it is a whole number (5.0 is 5), else None."""
    number = to_float(value)
    if number is None or not math.isfinite(number) or number != math.floor(number):
        return None
    return int(number)


def whole(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high] (a limit of the app's own), or an InputError."""
    number = to_whole(value)
    if number is None or not low <= number <= high:
        raise refused(name, f"a whole number from {low} to {high}", value)
    return number


def finite(value: Any, name: str, low: float, high: float) -> float:
    """``value`` as a float in [low, high] (a limit of the app's own), or an InputError."""
    number = to_float(value)
    if number is None or not (math.isfinite(number) and low <= number <= high):
        raise refused(name, f"a number from {low:g} to {high:g}", value)
    return number


def parse_seed(seed: Any, name: str = "Seed") -> int:
    """A seed box's value as a seed ``diffusion.options.check_seed`` accepts, or an InputError."""
    if is_empty(seed):
        raise InputError(f"Enter a {name.lower()} (a whole number), or press 🎲 Random for one.")
    number = to_whole(seed)
    try:
        check_seed(number)
    except ValueError:
        raise refused(name, f"a whole number from 0 to {MAX_SEED}", seed) from None
    return number


def parse_palette(value: Any, upload: Any = None) -> render.Palette:
    """A palette choice ("raw", "data", a colour count, a palette's name, colours
    "#rrggbb,#rrggbb", or PALETTE_FILE for the uploaded palette file ``upload``) -> the
    pipeline's ``palette=``; the model's check comes with the other options. A path on the
    server is never a choice: only an upload is read."""
    if is_empty(value):
        return None
    if value == PALETTE_FILE:
        return palette_file(upload)
    text = str(value).strip()
    named = text.lower() in palettes.NAMED or text.startswith("#")
    try:
        if named or text in ("raw", "none", "data") or text.isdigit():
            return render.parse_palette(text)
    except ValueError as err:
        raise InputError(f"That palette cannot be used: {err}.") from None
    raise InputError(
        f"Palette must be raw, data, a number of colours, one of {', '.join(palettes.NAMED)}, "
        f"or your palette file (got {shorten(value)})."
    )


def palette_file(upload: Any) -> tuple[str, ...]:
    """An uploaded palette file (.hex, .gpl or .png) -> its colours ("#rrggbb", ...), or an
    InputError that says what is wrong and what is accepted."""
    if is_empty(upload):
        raise InputError(
            f"Upload a palette file ({', '.join(palettes.FILE_TYPES)}), or pick another palette."
        )
    path = str(upload)
    if os.path.getsize(path) > MAX_UPLOAD_BYTES:
        raise InputError(f"That palette file is over {MAX_UPLOAD_BYTES / 2**20:.0f} MB.")
    if path.lower().endswith(".png"):
        try:
            with Image.open(path) as image:
                too_big = image.width * image.height > MAX_UPLOAD_PIXELS
        except (OSError, ValueError, Image.DecompressionBombError):
            too_big = False  # unreadable: palettes.read says so
        if too_big:
            raise InputError("That palette picture is far too large: a palette is a few swatches.")
    try:
        return tuple(palettes.to_hex(palettes.read(path)))
    except ValueError as err:
        raise InputError(f"That palette file cannot be used: {err}.") from None


def parse_label(pipe: SpritePipeline, label: str | None) -> str | None:
    """A label choice -> the label, or None for no label."""
    if label in (None, "", UNCONDITIONAL):
        return None
    if label not in pipe.labels:
        raise InputError(
            f"Unknown label {shorten(label)}. Choose one of: {', '.join(pipe.labels)} "
            f"(or {UNCONDITIONAL!r} for no label)."
        )
    return label


def parse_mix(text: str | None, labels: Sequence[str]) -> dict[str, float] | None:
    """``"hero:0.7, food:0.3"`` -> {"hero": 0.7, "food": 0.3}; empty text -> None."""
    if not text or not str(text).strip():
        return None
    mix: dict[str, float] = {}
    for part in str(text).split(","):
        if not part.strip():
            continue
        name, sep, weight = part.partition(":")
        name = name.strip()
        if not sep:
            raise InputError(
                f"Mix entry {shorten(part.strip())} must look like label:weight, e.g. hero:0.5."
            )
        if name not in labels:
            raise InputError(
                f"Unknown label {shorten(name)} in the mix. Labels: {', '.join(labels)}."
            )
        mix[name] = finite(weight.strip(), f"The weight of {name!r}", 0.0, 1.0)
    if not any(mix.values()):
        raise InputError(
            "Every mix weight is 0: give at least one label a weight, or clear the mix."
        )
    return {name: w for name, w in mix.items() if w > 0}


def check_prompt(pipe: SpritePipeline, prompt: Any) -> str | None:
    """A prompt with its spaces tidied, or None for an empty box; refused for a model without
    text and past MAX_PROMPT_CHARS (the text encoder's own limit comes with the options)."""
    if prompt is None or not str(prompt).strip():
        return None
    # Control and format characters mean nothing to the tokenizer, which drops them too; kept,
    # they would be echoed into the status line.
    prompt = " ".join(clean_excerpt(prompt, len(str(prompt))).split())
    if not prompt:
        return None
    if not pipe.supports_text:
        raise InputError(
            "This model was trained on labels only and takes no prompt: clear the prompt, or "
            "pick a text model."
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(
            f"The prompt is {len(prompt)} characters long; keep it to a few words "
            f"(at most {MAX_PROMPT_CHARS} characters)."
        )
    return prompt


def prompt_label(
    pipe: SpritePipeline, prompt: str | None, before: str | None, label: str | None
) -> str | None:
    """The label to switch to as a prompt is typed into an empty box (``before``: its text
    until now): UNCONDITIONAL in place of the model's first label, the one a page starts with,
    which would otherwise outweigh the prompt. None leaves the label as it is."""
    started = is_empty(before) and not is_empty(prompt)
    return UNCONDITIONAL if started and label == pipe.labels[0] else None


# -- validation through the package -----------------------------------------------------------


def parse_sampler(sampler: Any) -> str:
    """A sampler's name or alias -> its name in SAMPLERS, or an InputError listing them."""
    try:
        return canonical_sampler(str(sampler))
    except ValueError:
        raise InputError(
            f"Unknown sampler {shorten(sampler)}. Choose one of: {', '.join(SAMPLERS)}."
        ) from None


def sampling_options(
    pipe: SpritePipeline,
    n: int,
    sampler: Any,
    steps: Any,
    guidance: Any,
    eta: Any = None,
    palette: Any = None,
    prompt: str | None = None,
    background: Any = None,
    palette_file: Any = None,
    palette_lock: Any = False,
    tileable: Any = False,
    outline: Any = None,
    guidance_text: Any = None,
    negative_prompt: str | None = None,
    rerank: Any = 1,
) -> SamplingOptions:
    """The widget values as ``pipe.options`` for ``n`` sprites, or an InputError in the app's
    wording that names the box to change. ``guidance_text`` empty means one guidance scale
    for label and text; ``negative_prompt`` and ``rerank`` (best of N) need a text model.

    ``pipe.options`` refuses the first bad choice in the package's words; handing it the
    choices one at a time tells which box was at fault.
    """
    name = parse_sampler(sampler)
    given: dict[str, Any] = {"sampler": name}
    options: SamplingOptions | None = None

    def add(choice: str, value: Any, refusal: Callable[[ValueError], InputError]) -> None:
        nonlocal options
        given[choice] = value
        try:
            options = pipe.options(n, **given)
        except ValueError as err:
            raise refusal(err) from None

    steps_box = (f"Steps for {name}", f"a whole number from 1 to {pipe.schedule.T}", steps)
    if to_whole(steps) is None:
        raise refused(*steps_box)
    add("steps", to_whole(steps), lambda err: refused(*steps_box))
    guidance_box = ("Guidance", f"a number from 0 to {MAX_GUIDANCE:g}", guidance)
    if to_float(guidance) is None:
        raise refused(*guidance_box)
    add("guidance", to_float(guidance), lambda err: refused(*guidance_box))
    # eta only means something for samplers that inject noise; elsewhere it is ignored.
    if SAMPLERS[name].uses_eta and not is_empty(eta):
        number = to_float(eta)
        add("eta", eta if number is None else number, lambda err: InputError(as_sentence(err)))
    chosen = parse_palette(palette, palette_file)
    if chosen is not None:

        def bad_palette(err: ValueError) -> InputError:
            if chosen == "data":
                return InputError(
                    "This model has no training palette: choose 'raw' or a colour count."
                )
            return InputError(as_sentence(err))

        add("palette", chosen, bad_palette)
    if palette_lock:
        add(
            "palette_lock",
            True,
            lambda err: InputError(
                "One palette for the batch picks that many colours: choose a palette of "
                "'at most N colours', or untick the lock."
            ),
        )
    if tileable:
        add("tileable", True, lambda err: InputError(as_sentence(err)))
    if not is_empty(outline):
        add(
            "outline",
            str(outline).strip(),
            lambda err: refused("Outline", "none or a colour like #000000", outline),
        )
    if prompt is not None:
        add("prompt", prompt, lambda err: InputError(f"This prompt cannot be used: {err}."))
    add_text_guidance(add, prompt, guidance_text, negative_prompt, rerank)
    if not is_empty(background) and background != TRANSPARENT:
        add(
            "background",
            str(background),
            lambda err: refused("Background", "'transparent' or a colour like #ffffff", background),
        )
    return options


def add_text_guidance(
    add: Callable[[str, Any, Callable[[ValueError], InputError]], None],
    prompt: str | None,
    guidance_text: Any,
    negative_prompt: str | None,
    rerank: Any,
) -> None:
    """The text's own guidance scale, the negative prompt and best of N, checked in turn by
    ``add`` (see :func:`sampling_options`), each refusal naming its box."""
    if not is_empty(guidance_text):
        box = ("Text guidance", f"empty or a number from 0 to {MAX_GUIDANCE:g}", guidance_text)
        if to_float(guidance_text) is None:
            raise refused(*box)

        def bad_scale(err: ValueError) -> InputError:
            if prompt is None:
                return InputError(
                    "Text guidance scales the prompt: type a prompt, or empty Text guidance."
                )
            return refused(*box)

        add("guidance_text", to_float(guidance_text), bad_scale)
    if negative_prompt is not None:
        add(
            "negative_prompt",
            negative_prompt,
            lambda err: InputError(
                "A negative prompt works through guidance: set Guidance (or Text guidance) "
                "to another value than 1, or clear the negative prompt."
                if "guidance 1" in str(err)
                else f"This negative prompt cannot be used: {err}."
            ),
        )
    tries = whole(rerank, "Best of", 1, MAX_RERANK)
    if tries > 1:
        add(
            "rerank",
            tries,
            lambda err: InputError(
                "Best of N keeps the candidate that best matches the prompt: type a prompt, "
                "or set Best of to 1."
                if prompt is None
                else as_sentence(err)
            ),
        )


def check_work(work: int, breakdown: str, advice: str, what: str = "run") -> None:
    """Refuse one request of ``work`` sprite-steps that would hold a worker for minutes."""
    if work > MAX_WORK:
        raise InputError(
            f"That {what} needs {work:,} sprite-steps ({breakdown}); the limit is "
            f"{MAX_WORK:,}. {advice}"
        )


def largest_batch(options: SamplingOptions, resample: int = 1, limit: int = MAX_BATCH) -> int:
    """The most sprites (up to ``limit``) one run of ``options`` may draw within MAX_WORK."""
    return max(1, min(limit, MAX_WORK // options.work(1, resample)))


def fit_sampler(
    pipe: SpritePipeline, sampler: str, n: Any, resample: Any = 1
) -> tuple[int, int, str]:
    """What a picked ``sampler`` brings: (its steps on this model, the batch ``n`` cut to fit
    MAX_WORK at those steps, a sentence saying so when it was cut, else "")."""
    steps = default_steps(pipe, sampler)
    options = pipe.options(sampler=sampler, steps=steps)
    tries = to_whole(resample) or 1
    wanted = to_whole(n) or 1
    fitted = min(wanted, largest_batch(options, tries))
    if fitted == wanted:
        return steps, wanted, ""
    note = (
        f"Batch set to {fitted}: {wanted} sprites × {steps} steps of {options.sampler} would "
        f"be {options.work(wanted, tries):,} sprite-steps, over the limit of {MAX_WORK:,}."
    )
    return steps, fitted, note


@dataclass(frozen=True)
class Request:
    """A validated request, ready for ``SpritePipeline.stream``."""

    context: str | dict[str, float] | None
    sampler: str
    steps: int
    guidance: float
    seed: int
    n: int
    eta: float | None
    palette: render.Palette = None
    prompt: str | None = None
    unknown_words: tuple[str, ...] = ()  # words of the prompt that training never used
    # For the Edit tab: image=, strength=, mask= and resample= of SpritePipeline.stream.
    edit: dict[str, Any] | None = field(default=None, compare=False)
    notes: tuple[str, ...] = ()  # anything else the status should say about the run
    work: int = field(default=0, compare=False)  # sprite-steps: SamplingOptions.work
    background: str | None = None  # an RGBA model's sprites composited onto it; None: clear
    palette_lock: bool = False  # one palette for the batch
    tileable: bool = False  # seamless tiles, shown laid TILE_REPEAT x TILE_REPEAT
    outline: str | None = None  # a one-pixel outline of this colour
    exports: int | None = None  # the scale of the game downloads; None: the GIF and PNG only
    guidance_text: float | None = None  # the prompt's own guidance scale
    negative_prompt: str | None = None  # what guidance steers away from
    guidance_sigma_min: float = 0.0  # the model's: no guidance at noise levels at or below it
    rerank: int = 1  # best of N: candidates per sprite, SpriteCLIP keeps one
    # For an upscale: the sprites to enlarge, low_res= of SpritePipeline.stream.
    low_res: np.ndarray | None = field(default=None, compare=False)

    def describe(self) -> str:
        """One line: what is drawn, how, and anything the person should know about it."""
        if isinstance(self.context, dict):
            what = " + ".join(f"{w:g}×{name}" for name, w in self.context.items())
        else:
            what = self.context or ("no label" if self.prompt else "unconditional")
        if self.prompt:
            what = f'"{self.prompt}" ({what})'
        if self.low_res is not None:
            side = self.low_res.shape[1]
            what = f"upscaled from {side}×{side}"
        eta = f" · eta {self.eta:g}" if self.eta is not None else ""
        palette = ""
        if self.palette is not None:
            lock = ", one for the batch" if self.palette_lock else ""
            palette = f" · palette {render.palette_name(self.palette)}{lock}"
        palette += " · tileable" if self.tileable else ""
        palette += f" · outline {self.outline}" if self.outline else ""
        edit = ""
        if self.edit:
            kind = "repaint" if self.edit.get("mask") is not None else "variation"
            edit = f" · {kind}, strength {self.edit['strength']:g}"
        notes = "".join(f" · {note}" for note in self.notes)
        return (
            f"{self.n} × {what}{edit} · {self.sampler} · {self.steps} steps · "
            f"{self.guidance_note()}{eta}{palette} · seed {self.seed}{self.word_note()}{notes}"
        )

    def done(self, elapsed: float, steps: int, score: str = "") -> str:
        """The status of the finished run: what was drawn, then its time per step and in all
        (``benchmarks.concurrency`` reads the "s in all")."""
        rate = format_ms(elapsed, steps)
        return f"done: {self.describe()}{score} - {rate}, {elapsed:.2f} s in all"

    def guidance_note(self) -> str:
        """Which conditions guided the run and how hard, e.g. "guidance 2 (label + text)",
        "guidance label 2, text 3", with the negative prompt and best of N."""
        label, text = self.context is not None, self.prompt is not None
        above = guidance_floor(self.guidance_sigma_min)
        if self.guidance_text is not None:
            scales = [f"label {self.guidance:g}"] if label else []
            note = "guidance " + ", ".join([*scales, f"text {self.guidance_text:g}"]) + above
        else:
            texts = text or self.negative_prompt is not None
            guided = [name for name, on in (("label", label), ("text", texts)) if on]
            if not guided:  # with no condition, every branch is the unconditional one
                note = "unguided"
            elif self.guidance == 1:
                note = "guidance 1"
            else:
                note = f"guidance {self.guidance:g} ({' + '.join(guided)}){above}"
        if self.negative_prompt:
            note += f' · away from "{self.negative_prompt}"'
        if self.rerank > 1:
            note += f" · best of {self.rerank} by SpriteCLIP"
        return note

    def word_note(self) -> str:
        if not self.unknown_words:
            return ""
        return f" · new words, read as word pieces: {', '.join(self.unknown_words)}"

    def stream_options(self) -> dict[str, Any]:
        """Keyword arguments of ``SpritePipeline.stream`` for this request."""
        return {
            "context": self.context,
            "n": self.n,
            "sampler": self.sampler,
            "steps": self.steps,
            "guidance": self.guidance,
            "seed": self.seed,
            "eta": self.eta,
            "palette": self.palette,
            "prompt": self.prompt,
            "background": self.background,
            "palette_lock": self.palette_lock,
            "tileable": self.tileable,
            "outline": self.outline,
            "guidance_text": self.guidance_text,
            "negative_prompt": self.negative_prompt,
            "rerank": self.rerank,
            **(self.edit or {}),
            **({"low_res": self.low_res} if self.low_res is not None else {}),
        }


def validate_request(
    pipe: SpritePipeline,
    label: str | None,
    sampler: str,
    steps: Any,
    guidance: Any,
    seed: Any,
    n: Any,
    eta: Any = None,
    mix: str | None = None,
    palette: Any = None,
    prompt: str | None = None,
    resample: int = 1,
    background: Any = None,
    palette_file: Any = None,
    palette_lock: Any = False,
    tileable: Any = False,
    outline: Any = None,
    exports: Any = None,
    guidance_text: Any = None,
    negative_prompt: str | None = None,
    rerank: Any = 1,
) -> Request:
    """Check every input of a run against ``pipe``; raise InputError naming the bad one.

    Nothing is silently changed: out-of-range values are refused with what is allowed. A run
    is refused here, before anything on the page changes, or not at all. ``resample`` is
    RePaint's tries per step, for the cost. ``palette_file`` is an uploaded palette (used when
    ``palette`` is PALETTE_FILE); ``exports`` the scale of the game downloads (None or "off":
    none).
    """
    context: str | dict[str, float] | None = parse_mix(mix, pipe.labels)
    if context is None:
        context = parse_label(pipe, label)
    count = whole(n, "Batch size", 1, MAX_BATCH)
    prompt = check_prompt(pipe, prompt)
    negative = check_prompt(pipe, negative_prompt)
    options = sampling_options(
        pipe, count, sampler, steps, guidance, eta, palette, prompt, background,
        palette_file, bool(palette_lock), bool(tileable), outline, guidance_text, negative,
        rerank,
    )  # fmt: skip
    seed = parse_seed(seed)
    scale = None
    if not is_empty(exports) and exports != EXPORTS_OFF:
        scale = to_whole(exports)
        if scale not in render.EXPORT_SCALES:
            scales = ", ".join(map(str, render.EXPORT_SCALES))
            raise refused("Game download scale", f"off or one of {scales}", exports)
    tries = f" × {resample} tries a step" if resample > 1 else ""
    tries += f" × best of {options.rerank}" if options.rerank > 1 else ""
    check_work(
        options.work(count, resample),
        f"{options.calls():,} network calls × {count} sprites{tries}",
        "Use fewer steps or a smaller batch.",
    )
    return Request(
        context=context,
        sampler=options.sampler,
        steps=options.steps,
        guidance=options.guidance,
        guidance_sigma_min=options.guidance_sigma_min,
        seed=seed,
        n=count,
        eta=options.eta,
        palette=options.palette,
        prompt=prompt,
        unknown_words=tuple(pipe.unknown_words(prompt)) if prompt else (),
        work=options.work(count, resample),
        background=options.background if pipe.rgba else None,
        palette_lock=options.palette_lock,
        tileable=options.tileable,
        outline=options.outline,
        exports=scale,
        guidance_text=options.guidance_text,
        negative_prompt=options.negative_prompt,
        rerank=options.rerank,
    )


# -- streaming a run to the page --------------------------------------------------------------


def enlargement(side: int, px: int = SPRITE_PX) -> int:
    """How many times a sprite ``side`` pixels wide is enlarged to be about ``px`` wide."""
    return max(1, px // side)


def sheet(images: np.ndarray) -> Image.Image:
    """Sprites as they are saved: a grid, each sprite enlarged to about SPRITE_PX, transparent
    where they are."""
    return render.grid(images, enlargement(images.shape[-2]))


def on_page(images: np.ndarray) -> Image.Image:
    """Sprites as the page shows them: a sheet, with clear pixels over a checkerboard."""
    return render.checkerboard(sheet(images))


def preview(images: np.ndarray) -> Image.Image:
    """A streamed frame: :func:`on_page`'s picture at one pixel per sprite pixel, which the
    browser enlarges as crisply (the ``pixel`` CSS class), for a scale² smaller cost to draw,
    encode and send each frame."""
    scale = enlargement(images.shape[-2])
    square = max(1, render.CHECKER_PX // scale)
    return render.checkerboard(render.grid(images, 1), square)


def game_files(
    folder: Path, sprites: np.ndarray, frames: Sequence[np.ndarray], scale: int, name: str,
    frame_ms: int,
) -> list[str]:  # fmt: skip
    """The downloads a game maker takes to an engine, written to ``folder``: the sprites as a
    sheet + Aseprite JSON at ``scale`` (tag ``name``), the denoising ``frames`` as one (a row
    and a tag per sprite), and a zip of every sprite alone at each of EXPORT_SCALES."""
    n, steps = len(sprites), len(frames)
    batch = render.save_sheet(sprites, folder / "sheet.png", scale=scale, tags=[(name, 0, n - 1)])
    # Sprite by sprite, step by step: one row (and one animation tag) per sprite.
    by_sprite = np.stack(frames, axis=1).reshape(n * steps, *sprites.shape[1:])
    tags = [(f"sprite {i + 1}", i * steps, (i + 1) * steps - 1) for i in range(n)]
    denoising = render.save_sheet(
        by_sprite, folder / "denoising-sheet.png", steps, scale, tags=tags, frame_ms=frame_ms
    )
    alone = folder / "one-by-one"
    alone.mkdir()
    singles = render.save_sprites(sprites, alone, name, render.EXPORT_SCALES)
    archive = folder / f"{name}-sprites.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in singles:
            zipped.write(path, os.path.basename(path))
    json_of = [str(Path(p).with_suffix(".json")) for p in (batch, denoising)]
    return [batch, json_of[0], denoising, json_of[1], str(archive)]


def upscaled_files(folder: Path, sprites: np.ndarray) -> list[str]:
    """An upscale's downloads, written to ``folder``: the first sprite as a PNG of its own
    size, and with several, all of them so in a zip (a list of sixteen links is no help)."""
    singles = render.save_sprites(sprites, folder, "upscaled")
    if len(singles) == 1:
        return singles
    archive = folder / "upscaled-sprites.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in singles:
            zipped.write(path, os.path.basename(path))
    return [singles[0], str(archive)]


def latent_picture(latent: np.ndarray) -> Image.Image:
    """The first sprite's latent of ``Frame.latent`` (n, h, w, C) as the page shows it: one
    grey tile per channel (``render.latent_channels``), each about LATENT_TILE_PX wide."""
    return render.latent_channels(latent[0], enlargement(latent.shape[2], LATENT_TILE_PX))


def latent_update(latent: np.ndarray | None, wanted: bool) -> dict[str, Any]:
    """{LATENT: the latent's picture, or None for a pixel model} when ``wanted``, else {}."""
    if not wanted:
        return {}
    return {LATENT: None if latent is None else latent_picture(latent)}


def pick_steps(total: int, limit: int) -> list[int]:
    """At most ``limit`` of the steps 1..total, evenly spread, always including the last."""
    if total < 1 or limit < 1:
        return []
    if total <= limit:
        return list(range(1, total + 1))
    return sorted({round(total * (i + 1) / limit) for i in range(limit)})


def format_ms(seconds: float, steps: int) -> str:
    """Time per step, e.g. ``4 ms/step``; one decimal below 10 ms so fast models do not read 0."""
    ms = 1000 * seconds / max(steps, 1)
    return f"{ms:.0f} ms/step" if ms >= 10 else f"{ms:.1f} ms/step"


def progress_text(step: int, total: int, elapsed: float, t: float) -> str:
    """``step 12/50 · 24% · 3.1 s left · 65 ms/step · t = 380``."""
    left = elapsed / step * (total - step)
    return (
        f"step {step}/{total} · {100 * step // total}% · {left:.1f} s left · "
        f"{format_ms(elapsed, step)} · t = {t:.0f}"
    )


def run_on_page(
    studio: Studio,
    pipe: SpritePipeline,
    req: Request,
    show_x0: bool,
    frame_ms: int,
    session: str | None,
    clicked: float,
    latent_view: bool = False,
) -> Iterator[dict[str, Any]]:
    """Stream one validated run to the page: {output name: value} updates (see OUTPUTS),
    previews by time, the GIF and PNG at the end. With ``latent_view`` every update also
    holds LATENT: for a latent model, the picture of its first sprite's latent at that step
    (:func:`latent_picture`), else None."""
    sessions = studio.sessions
    if sessions.stopped_since(session, clicked):  # Stop pressed while it was queued
        yield {"status": f"stopped before the first step: {req.describe()}"}
        return
    # Clear the last run's results so they are not mistaken for this one's. Every preview sends
    # these again: Gradio (6.31) answers an output left out of an update by building a new
    # component and filing it in the session's config under a new id, so a session that
    # streamed many runs grew by a few components a run (benchmarks.soak).
    cleared = {"gif": None, "sheet": None, "files": None, "seed": req.seed}
    if latent_view:
        cleared[LATENT] = None
    yield {"live": None, "status": f"starting: {req.describe()}", **cleared}
    keep = set(pick_steps(req.steps, GIF_MAX_FRAMES))

    def laid(pixels: np.ndarray) -> np.ndarray:
        """What the page shows of a frame: a tileable run's tiles laid TILE_REPEAT x TILE_REPEAT
        from the first preview to the GIF, so the seams can be watched closing."""
        return render.tile(pixels, TILE_REPEAT) if req.tileable else pixels

    kept: list[np.ndarray] = []  # raw frames for the GIF; a few KB each until rendered
    start, shown, stopped = time.perf_counter(), -float("inf"), False
    try:
        for frame in pipe.stream(**req.stream_options()):
            pixels = frame.x0 if show_x0 else frame.x
            stopped = sessions.stopped_since(session, clicked)
            if frame.step in keep or stopped or frame.step == frame.total:
                kept.append(pixels)
            if stopped:
                break
            now = time.perf_counter()
            if frame.step < frame.total and now - shown >= PREVIEW_INTERVAL_S:
                shown = now
                status = progress_text(frame.step, frame.total, now - start, frame.t)
                yield {
                    "live": preview(laid(pixels)),
                    "status": status,
                    **cleared,
                    **latent_update(frame.latent, latent_view),
                }
    except ValueError as err:  # a check the request missed: the package's words, as a sentence
        raise InputError(as_sentence(err)) from None
    elapsed = time.perf_counter() - start
    if stopped:
        final, sprites = frame.x0, gr.skip()
        rate = format_ms(elapsed, frame.step)
        status = (
            f"stopped at step {frame.step}/{frame.total}: {req.describe()} - {rate}. "
            "The sheet shows the model's guess x̂₀ so far."
        )
    else:
        final, sprites = frame.x, frame.x
        if frame.picked is not None:  # best of N: the GIF follows the candidates kept
            kept = [pixels[frame.picked] for pixels in kept[:-1]] + kept[-1:]
        score = ""
        if frame.scores is not None:
            score = f" · SpriteCLIP score {float(frame.scores.mean()):.3f}"
        status = req.done(elapsed, frame.step, score)
    # A sheet's sprites are enlarged to about SPRITE_PX, a tileable run's laid tiles to TILE_PX.
    scale = enlargement(final.shape[-2], TILE_PX if req.tileable else SPRITE_PX)
    with studio.store.run() as folder:
        gif_path = render.save_gif(
            [render.grid(laid(pixels), 1) for pixels in kept],
            folder / "denoising.gif",
            frame_ms=frame_ms,
            hold_ms=GIF_HOLD_MS,
            scale=scale,
        )
        png_path = render.save_png(sheet(final), folder / "sprites.png")
        page = (
            png_path
            if final.shape[-1] == 3
            else render.save_png(on_page(final), folder / "shown.png")
        )
        files = [gif_path, png_path]
        if req.tileable:  # the page shows each tile laid 3x3, so a seam would show
            tiles = render.grid(laid(final), scale)
            files.append(render.save_png(tiles, folder / "tiles-3x3.png"))
            page = render.save_png(render.checkerboard(tiles), folder / "shown-tiles.png")
            status += f" · shown laid {TILE_REPEAT}×{TILE_REPEAT}"
        if req.exports and not stopped:
            name = req.context if isinstance(req.context, str) else "sprites"
            files += game_files(folder, final, kept, req.exports, name, frame_ms)
        if req.low_res is not None and not stopped:  # an upscale: the sprites at their new size
            files += upscaled_files(folder, final)
        yield {
            "live": page,
            "status": status,
            "gif": gif_path,
            "sheet": png_path,
            "files": files,
            "seed": req.seed,
            "sprites": sprites,
            **latent_update(frame.latent, latent_view),
        }
