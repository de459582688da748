"""One sampling request, from widget values to the page: parsing, validation, cost, streaming.

Every limit of a run itself is the package's: a request is checked by ``SpritePipeline.options``
(``diffusion.options``), which fills the model's defaults, and only the wording of a refusal is
the app's. What a run costs is ``SamplingOptions.work``, held to MAX_WORK. ``run_on_page`` streams
a validated run to the outputs named in OUTPUTS.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from diffusion import SAMPLERS, SpritePipeline, render
from diffusion.options import MAX_GUIDANCE, MAX_SEED, SamplingOptions, check_seed
from diffusion.samplers import canonical_sampler

from .errors import InputError, as_sentence, is_empty, refused, shorten
from .limits import (
    GIF_HOLD_MS,
    GIF_MAX_FRAMES,
    MAX_BATCH,
    MAX_PROMPT_CHARS,
    MAX_WORK,
    PREVIEW_INTERVAL_S,
    SCALE,
    TRANSPARENT,
    UNCONDITIONAL,
)
from .studio import Studio, default_steps

# What run_on_page yields, by name; a tab maps each to its component.
OUTPUTS = ("live", "status", "gif", "sheet", "files", "seed", "sprites")
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


def parse_palette(value: Any) -> render.Palette:
    """A palette choice ("raw", "data" or a colour count) -> the pipeline's ``palette=``; the
    model's check comes with the other options."""
    if is_empty(value):
        return None
    try:
        return render.parse_palette(str(value))
    except ValueError:
        raise InputError(
            f"Palette must be raw, data or a number of colours (got {shorten(value)})."
        ) from None


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
    prompt = " ".join(str(prompt).split())
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
) -> SamplingOptions:
    """The widget values as ``pipe.options`` for ``n`` sprites, or an InputError in the app's
    wording that names the box to change.

    ``pipe.options`` refuses the first bad choice in the package's words; handing it the
    choices one at a time tells which box was at fault.
    """
    try:
        name = canonical_sampler(str(sampler))
    except ValueError:
        raise InputError(
            f"Unknown sampler {shorten(sampler)}. Choose one of: {', '.join(SAMPLERS)}."
        ) from None
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
    chosen = parse_palette(palette)
    if chosen is not None:

        def bad_palette(err: ValueError) -> InputError:
            if chosen == "data":
                return InputError(
                    "This model has no training palette: choose 'raw' or a colour count."
                )
            return InputError(as_sentence(err))

        add("palette", chosen, bad_palette)
    if prompt is not None:
        add("prompt", prompt, lambda err: InputError(f"This prompt cannot be used: {err}."))
    if not is_empty(background) and background != TRANSPARENT:
        add(
            "background",
            str(background),
            lambda err: refused("Background", "'transparent' or a colour like #ffffff", background),
        )
    return options


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

    def describe(self) -> str:
        """One line: what is drawn, how, and anything the person should know about it."""
        if isinstance(self.context, dict):
            what = " + ".join(f"{w:g}×{name}" for name, w in self.context.items())
        else:
            what = self.context or ("no label" if self.prompt else "unconditional")
        if self.prompt:
            what = f'"{self.prompt}" ({what})'
        eta = f" · eta {self.eta:g}" if self.eta is not None else ""
        palette = f" · palette {self.palette}" if self.palette is not None else ""
        edit = ""
        if self.edit:
            kind = "repaint" if self.edit.get("mask") is not None else "variation"
            edit = f" · {kind}, strength {self.edit['strength']:g}"
        notes = "".join(f" · {note}" for note in self.notes)
        return (
            f"{self.n} × {what}{edit} · {self.sampler} · {self.steps} steps · "
            f"guidance {self.guidance:g}{eta}{palette} · seed {self.seed}{self.word_note()}{notes}"
        )

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
            **(self.edit or {}),
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
) -> Request:
    """Check every input of a run against ``pipe``; raise InputError naming the bad one.

    Nothing is silently changed: out-of-range values are refused with what is allowed. A run
    is refused here, before anything on the page changes, or not at all. ``resample`` is
    RePaint's tries per step, for the cost.
    """
    context: str | dict[str, float] | None = parse_mix(mix, pipe.labels)
    if context is None:
        context = parse_label(pipe, label)
    count = whole(n, "Batch size", 1, MAX_BATCH)
    prompt = check_prompt(pipe, prompt)
    options = sampling_options(
        pipe, count, sampler, steps, guidance, eta, palette, prompt, background
    )
    seed = parse_seed(seed)
    tries = f" × {resample} tries a step" if resample > 1 else ""
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
        seed=seed,
        n=count,
        eta=options.eta,
        palette=options.palette,
        prompt=prompt,
        unknown_words=tuple(pipe.unknown_words(prompt)) if prompt else (),
        work=options.work(count, resample),
        background=options.background if pipe.rgba else None,
    )


# -- streaming a run to the page --------------------------------------------------------------


def sheet(images: np.ndarray) -> Image.Image:
    """Sprites as they are saved: a grid enlarged SCALE times, transparent where they are."""
    return render.grid(images, SCALE)


def on_page(images: np.ndarray) -> Image.Image:
    """Sprites as the page shows them: a sheet, with clear pixels over a checkerboard."""
    return render.checkerboard(sheet(images))


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
) -> Iterator[dict[str, Any]]:
    """Stream one validated run to the page: {output name: value} updates (see OUTPUTS),
    previews by time, the GIF and PNG at the end."""
    sessions = studio.sessions
    if sessions.stopped_since(session, clicked):  # Stop pressed while it was queued
        yield {"status": f"stopped before the first step: {req.describe()}"}
        return
    # Clear the last run's results so they are not mistaken for this one's. Every preview sends
    # these again: Gradio (6.31) answers an output left out of an update by building a new
    # component and filing it in the session's config under a new id, so a session that
    # streamed many runs grew by a few components a run (benchmarks.soak).
    cleared = {"gif": None, "sheet": None, "files": None, "seed": req.seed}
    yield {"live": None, "status": f"starting: {req.describe()}", **cleared}
    keep = set(pick_steps(req.steps, GIF_MAX_FRAMES))
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
                yield {"live": on_page(pixels), "status": status, **cleared}
    except ValueError as err:  # a check the request missed: the package's words, as a sentence
        raise InputError(as_sentence(err)) from None
    elapsed = time.perf_counter() - start
    rate = format_ms(elapsed, frame.step)
    if stopped:
        final, sprites = frame.x0, gr.skip()
        status = (
            f"stopped at step {frame.step}/{frame.total}: {req.describe()} - {rate}. "
            "The sheet shows the model's guess x̂₀ so far."
        )
    else:
        final, sprites = frame.x, frame.x
        status = f"done: {req.describe()} - {rate}, {elapsed:.2f} s in all"
    with studio.store.run() as folder:
        gif_path = render.save_gif(
            [sheet(pixels) for pixels in kept],
            folder / "denoising.gif",
            frame_ms=frame_ms,
            hold_ms=GIF_HOLD_MS,
        )
        png_path = render.save_png(sheet(final), folder / "sprites.png")
        page = (
            png_path
            if final.shape[-1] == 3
            else render.save_png(on_page(final), folder / "shown.png")
        )
        yield {
            "live": page,
            "status": status,
            "gif": gif_path,
            "sheet": png_path,
            "files": [gif_path, png_path],
            "seed": req.seed,
            "sprites": sprites,
        }
