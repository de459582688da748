"""The Generate tab: pick a label and a sampler, watch the denoising live, download GIF and PNG."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import gradio as gr
import numpy as np

from diffusion import SAMPLERS, SpritePipeline, render

from .context import (
    CONCURRENCY,
    IMAGE_HEIGHT,
    MAX_BATCH,
    MAX_GUIDANCE,
    PALETTE_CHOICES,
    UNCONDITIONAL,
    InputError,
    Studio,
    check_seed,
    check_work,
    finite,
    guarded,
    parse_palette,
    random_seed,
    session_of,
    sheet,
    shorten,
    sprite_image,
    whole,
)
from .shell import Shell

# A new preview at least this often (5 a second), whatever the step count; never more often,
# since the browser cannot draw hundreds of images a second.
PREVIEW_INTERVAL_S = 0.2
GIF_MAX_FRAMES = 60
GIF_HOLD_MS = 1500
GIF_MS_RANGE = (20, 500)
MAX_PROMPT_CHARS = 80
PROMPT_EXAMPLES = [
    ("red potion", "food"),
    ("skeleton warrior", "hero"),
    ("fire ant", "creature"),
    ("golden sword", "weapon_spell"),
    ("dark snowy oak", "terrain"),
]
PREVIEW_CHOICES = [("noisy state x_t", "noisy"), ("predicted clean image x̂₀", "clean")]


@dataclass(frozen=True)
class GenerateRequest:
    """A validated generate request, ready for ``SpritePipeline.stream``."""

    context: str | dict[str, float] | None
    sampler: str
    steps: int
    guidance: float
    seed: int
    n: int
    eta: float | None
    palette: str | int | None = None
    prompt: str | None = None
    unknown_words: tuple[str, ...] = ()  # words of the prompt that training never used
    # For the Edit tab: image=, strength=, mask= and resample= of SpritePipeline.stream.
    edit: dict[str, Any] | None = field(default=None, compare=False)

    def describe(self) -> str:
        if isinstance(self.context, dict):
            what = " + ".join(f"{w:g}×{name}" for name, w in self.context.items())
        else:
            what = self.context or "unconditional"
        if self.prompt:
            what = f'"{self.prompt}" ({what})'
        eta = f" · eta {self.eta:g}" if self.eta is not None else ""
        palette = f" · palette {self.palette}" if self.palette is not None else ""
        edit = ""
        if self.edit:
            kind = "repaint" if self.edit.get("mask") is not None else "variation"
            edit = f" · {kind}, strength {self.edit['strength']:g}"
        return (
            f"{self.n} × {what}{edit} · {self.sampler} · {self.steps} steps · "
            f"guidance {self.guidance:g}{eta}{palette} · seed {self.seed}{self.word_note()}"
        )

    def word_note(self) -> str:
        if not self.unknown_words:
            return ""
        return f" · new words, read as word pieces: {', '.join(self.unknown_words)}"

    def stream_options(self) -> dict[str, Any]:
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
            **(self.edit or {}),
        }


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


def mix_text(labels: Sequence[str], weights: Sequence[float]) -> str:
    """The mix string for per-label slider weights (zero weights left out)."""
    return ", ".join(f"{name}:{w:g}" for name, w in zip(labels, weights, strict=True) if w > 0)


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
) -> GenerateRequest:
    """Check every generate input against ``pipe``; raise InputError naming the bad one.

    Nothing is silently changed: out-of-range values are refused with what is allowed.
    """
    if sampler not in pipe.samplers:
        raise InputError(
            f"Unknown sampler {shorten(sampler)}. Choose one of: {', '.join(pipe.samplers)}."
        )
    context: str | dict[str, float] | None = parse_mix(mix, pipe.labels)
    if context is None and label not in (None, "", UNCONDITIONAL):
        if label not in pipe.labels:
            raise InputError(
                f"Unknown label {shorten(label)}. Choose one of: {', '.join(pipe.labels)} "
                f"(or {UNCONDITIONAL!r} for no label)."
            )
        context = label
    spec = SAMPLERS[sampler]
    req = GenerateRequest(
        context=context,
        sampler=sampler,
        steps=whole(steps, f"Steps for {sampler}", 1, pipe.schedule.T),
        guidance=finite(guidance, "Guidance", 0.0, MAX_GUIDANCE),
        seed=check_seed(seed),
        n=whole(n, "Batch size", 1, MAX_BATCH),
        # eta only means something for samplers that inject noise; elsewhere it is ignored.
        eta=finite(eta, "Eta", 0.0, 1.0) if spec.uses_eta and eta is not None else None,
        palette=parse_palette(palette, pipe),
        prompt=check_prompt(pipe, prompt),
    )
    if req.prompt:
        req = replace(req, unknown_words=tuple(pipe.unknown_words(req.prompt)))
    check_work(req.sampler, req.steps, req.n)
    return req


def check_prompt(pipe: SpritePipeline, prompt: Any) -> str | None:
    """A stripped prompt, or None for an empty box; refused for a model without text."""
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


class GenerateTab:
    """Controls, handlers and wiring of the Generate tab."""

    title = "Generate"

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    # -- the handler --------------------------------------------------------------------------

    def generate(
        self,
        label: str | None,
        sampler: str,
        steps: Any,
        guidance: Any,
        seed: Any,
        n: Any,
        eta: Any = None,
        model: str | None = None,
        mix: str | None = "",
        preview: str = "noisy",
        gif_ms: Any = 80,
        palette: Any = "raw",
        prompt: str | None = "",
        request: gr.Request | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream a run: live previews with progress, then the sheet, the GIF and the files.

        Yields {output name: value}. The preview updates by time (every PREVIEW_INTERVAL_S), and
        at the end shows the final sheet. After Stop, the GIF holds the frames so far and the
        sheet the model's current guess of the clean sprites.
        """
        session = session_of(request)
        # Entered first, so that a refused run also gives back its place in the queue.
        with self.studio.sessions.job(session) as clicked:
            pipe = self.studio.pipe(model)
            req = validate_request(
                pipe, label, sampler, steps, guidance, seed, n, eta, mix, palette, prompt
            )
            if preview not in ("noisy", "clean"):
                raise InputError("Preview must be 'noisy' (x_t) or 'clean' (predicted x̂₀).")
            frame_ms = whole(gif_ms, "GIF frame time (ms)", *GIF_MS_RANGE)
            yield from run_on_page(
                self.studio, pipe, req, preview == "clean", frame_ms, session, clicked
            )

    # -- the layout ---------------------------------------------------------------------------

    def build(self, shell: Shell, tab: gr.Tab) -> None:
        pipe0 = shell.default_pipe
        d0 = pipe0.defaults
        spec0 = SAMPLERS[d0["sampler"]]
        mix_slots = max(len(p.labels) for p in self.studio.models.values())
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                self.label = gr.Dropdown(
                    [*pipe0.labels, UNCONDITIONAL], value=pipe0.labels[0], label="Label"
                )
                with gr.Column(visible=pipe0.supports_text) as self.prompt_box:
                    self.prompt = gr.Textbox(
                        "",
                        label="Prompt (optional)",
                        placeholder="describe it in a few words, e.g. red potion",
                        max_lines=1,
                        elem_id="prompt",
                    )
                self.sampler = gr.Dropdown(pipe0.samplers, value=d0["sampler"], label="Sampler")
                self.sampler_info = gr.Markdown(sampler_info(d0["sampler"]))
                # A number box, not a slider: a slider silently clamps what is typed into it.
                self.steps = gr.Number(
                    value=d0["steps"],
                    label="Steps",
                    info=f"1 to {pipe0.schedule.T}",
                    precision=None,
                    elem_id="steps",
                )
                with gr.Row():
                    self.run_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                    self.stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                # Below the button, so that Generate stays in view on a phone.
                with gr.Column(visible=pipe0.supports_text) as self.prompt_examples:
                    gr.Examples(
                        [list(row) for row in PROMPT_EXAMPLES],
                        [self.prompt, self.label],
                        label="Try a prompt (fills prompt and label)",
                        elem_id="prompt-examples",
                    )
                with gr.Accordion("Options", open=False, elem_id="options"):
                    self.guidance = gr.Number(
                        value=d0["guidance"],
                        label="Guidance scale",
                        info=f"0 to {MAX_GUIDANCE:g}; 1 = plain conditional model, higher "
                        "follows the label harder",
                        precision=None,
                    )
                    self.eta = gr.Slider(
                        0,
                        1,
                        value=spec0.default_eta or 0.0,
                        step=0.05,
                        label="Eta (fresh noise per step)",
                        visible=spec0.uses_eta,
                    )
                    with gr.Row(equal_height=True):
                        self.seed = gr.Number(value=0, precision=None, label="Seed", scale=3)
                        self.dice = gr.Button("🎲 Random", scale=1, min_width=90, elem_id="dice")
                    self.n = gr.Slider(1, MAX_BATCH, value=16, step=1, label="Batch size")
                    self.palette = gr.Dropdown(
                        PALETTE_CHOICES,
                        value=d0.get("palette", "raw"),
                        label="Palette",
                        info="Snap the finished sprites to the training palette, or to a few "
                        "colours each",
                    )
                    self.preview = gr.Radio(PREVIEW_CHOICES, value="noisy", label="Preview")
                    self.gif_ms = gr.Slider(
                        *GIF_MS_RANGE, value=80, step=10, label="GIF speed (ms per frame)"
                    )
                    gr.Markdown(
                        "**Mix labels**: give several labels a weight to blend them. While any "
                        "weight is above 0, the mix replaces the label above."
                    )
                    self.weights = [
                        gr.Slider(
                            0,
                            1,
                            value=0,
                            step=0.05,
                            label=pipe0.labels[i] if i < len(pipe0.labels) else "",
                            visible=i < len(pipe0.labels),
                        )
                        for i in range(mix_slots)
                    ]
                    self.mix = gr.Textbox(
                        "", label="Mix (label:weight, ...)", placeholder="e.g. hero:0.5, food:0.5"
                    )
                    self.clear_mix = gr.Button("Clear mix", size="sm")
            with gr.Column(scale=2):
                self.status = gr.Markdown("Press **Generate**.", elem_id="status")
                with gr.Row():
                    self.live = sprite_image(
                        "Sprites (live while drawing)",
                        format="png",
                        height=IMAGE_HEIGHT,
                        elem_id="live",
                    )
                    self.gif = sprite_image(
                        "Denoising animation (GIF)",
                        type="filepath",
                        height=IMAGE_HEIGHT,
                        elem_id="gif",
                    )
                # The sheet's PNG path, for the /generate API; the page shows it as "live".
                self.sheet = gr.Image(type="filepath", visible=False)
                self.files = gr.File(label="Downloads", file_count="multiple")
        self.wire(shell)

    def wire(self, shell: Shell) -> None:
        studio = self.studio
        inputs = [
            self.label,
            self.sampler,
            self.steps,
            self.guidance,
            self.seed,
            self.n,
            self.eta,
            shell.model,
            self.mix,
            self.preview,
            self.gif_ms,
            self.palette,
            self.prompt,
        ]
        outputs = {
            "live": self.live,
            "status": self.status,
            "gif": self.gif,
            "sheet": self.sheet,
            "files": self.files,
            "seed": self.seed,
            "sprites": shell.sprites,
        }
        generate = shell.gpu(guarded(self.generate, outputs))
        run = {
            "fn": generate,
            "inputs": inputs,
            "outputs": list(outputs.values()),
            "concurrency_id": "sampling",
            "concurrency_limit": CONCURRENCY,
            "show_progress": "minimal",
        }
        # The click is noted outside the queue first, so Stop works while the run waits.
        self.run_btn.click(studio.click, api_visibility="private", queue=False).success(
            api_name="generate",
            api_description="Sample sprites; streams previews, ends with GIF + PNG.",
            **run,
        )
        examples = gr.Examples(
            example_rows(shell.default_pipe),
            [self.label, self.sampler, self.steps, self.guidance, self.seed, self.n],
            label="Examples: click one to run it",
            cache_examples=False,
        )
        examples.load_input_event.then(studio.click, api_visibility="private", queue=False).success(
            api_visibility="private", **run
        )
        self.stop_btn.click(studio.stop, api_visibility="private", queue=False)
        self.dice.click(random_seed, None, self.seed, api_visibility="private", queue=False)

        def on_sampler(sampler_name: str, model_name: str) -> dict:
            # A sampler picked by hand brings the model's step count for it (measured, see
            # benchmarks/steps.py); an example keeps its own.
            if sampler_name not in SAMPLERS:
                return {}
            pipe = studio.pipe(model_name)
            return {self.steps: min(pipe.default_steps(sampler_name), pipe.schedule.T)}

        def describe_sampler(sampler_name: str) -> dict:
            spec = SAMPLERS.get(sampler_name)
            if spec is None:
                return {}
            eta = gr.update(visible=spec.uses_eta, value=spec.default_eta or 0.0)
            return {self.eta: eta, self.sampler_info: sampler_info(sampler_name)}

        self.sampler.input(
            on_sampler,
            [self.sampler, shell.model],
            [self.steps],
            api_visibility="private",
            queue=False,
        )
        self.sampler.change(
            describe_sampler,
            self.sampler,
            [self.eta, self.sampler_info],
            api_visibility="private",
            queue=False,
        )

        def on_weights(model_name: str, *values: float) -> str:
            labels = studio.pipe(model_name).labels
            return mix_text(labels, values[: len(labels)])  # hidden spare sliders are ignored

        for w in self.weights:
            w.input(
                on_weights, [shell.model, *self.weights], self.mix, api_visibility="private",
                queue=False,
            )  # fmt: skip
        self.clear_mix.click(
            lambda: {**{w: 0.0 for w in self.weights}, self.mix: ""},
            None,
            [*self.weights, self.mix],
            api_visibility="private",
            queue=False,
        )

    def on_model(self, pipe: SpritePipeline) -> dict:
        """Updates for a newly picked model."""
        d = pipe.defaults
        spec = SAMPLERS[d["sampler"]]
        T = pipe.schedule.T
        return {
            self.label: gr.update(choices=[*pipe.labels, UNCONDITIONAL], value=pipe.labels[0]),
            self.prompt_box: gr.update(visible=pipe.supports_text),
            self.prompt_examples: gr.update(visible=pipe.supports_text),
            self.prompt: "",
            self.sampler: gr.update(choices=pipe.samplers, value=d["sampler"]),
            self.steps: gr.update(value=min(d["steps"], T), info=f"1 to {T}"),
            self.guidance: d["guidance"],
            self.eta: gr.update(visible=spec.uses_eta, value=spec.default_eta or 0.0),
            self.sampler_info: sampler_info(d["sampler"]),
            self.palette: d.get("palette", "raw"),
            self.mix: "",
            **{
                w: gr.update(label=pipe.labels[i], visible=True, value=0)
                if i < len(pipe.labels)
                else gr.update(visible=False, value=0)
                for i, w in enumerate(self.weights)
            },
        }


def run_on_page(
    studio: Studio,
    pipe: SpritePipeline,
    req: GenerateRequest,
    show_x0: bool,
    frame_ms: int,
    session: str | None,
    clicked: float,
) -> Iterator[dict[str, Any]]:
    """Stream one validated run to the page: {output name: value} updates (live, status, gif,
    sheet, files, seed, sprites), previews by time, the GIF and PNG at the end."""
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
                yield {"live": sheet(pixels), "status": status, **cleared}
    except ValueError as err:  # the pipeline's own checks: pass its message on
        raise InputError(str(err)) from None
    elapsed = time.perf_counter() - start
    rate = format_ms(elapsed, frame.step)
    if stopped:
        final, sprites = sheet(frame.x0), gr.skip()
        status = (
            f"stopped at step {frame.step}/{frame.total}: {req.describe()} - {rate}. "
            "The sheet shows the model's guess x̂₀ so far."
        )
    else:
        final, sprites = sheet(frame.x), frame.x
        status = f"done: {req.describe()} - {rate}, {elapsed:.2f} s in all"
    with studio.store.run() as folder:
        gif_path = render.save_gif(
            [sheet(pixels) for pixels in kept],
            folder / "denoising.gif",
            frame_ms=frame_ms,
            hold_ms=GIF_HOLD_MS,
        )
        png_path = render.save_png(final, folder / "sprites.png")
        yield {
            "live": png_path,
            "status": status,
            "gif": gif_path,
            "sheet": png_path,
            "files": [gif_path, png_path],
            "seed": req.seed,
            "sprites": sprites,
        }


def sampler_info(sampler: str) -> str:
    spec = SAMPLERS.get(sampler)
    return f"*{spec.description}*" if spec else ""


def example_rows(pipe: SpritePipeline) -> list[list]:
    d = pipe.defaults
    if not {"hero", "creature", "food", "weapon_spell"} <= set(pipe.labels):
        return [[pipe.labels[0], d["sampler"], d["steps"], d["guidance"], 0, 16]]
    return [
        ["hero", d["sampler"], d["steps"], d["guidance"], 0, 16],
        ["creature", "ddim", 50, 3.0, 42, 9],
        ["food", "euler_ancestral", 30, 2.0, 7, 4],
        ["weapon_spell", "heun", 15, 2.0, 123, 16],
    ]
