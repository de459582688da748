"""Sprite Diffusion Studio: watch a diffusion model paint 16x16 pixel-art sprites, step by step.

This file is the Gradio UI only. Every bit of diffusion maths lives in the ``diffusion`` package;
here we validate input, stream frames to the browser, and write the PNG/GIF files people download.

    python app.py        # serves every model folder under weights/ on http://127.0.0.1:7860

Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, as for any Gradio app.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from diffusion import SAMPLERS, Schedule, SpritePipeline, render

try:  # On a ZeroGPU Space, @spaces.GPU borrows a GPU per call; everywhere else it is not needed.
    import spaces
except ImportError:
    spaces = None

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

MAX_BATCH = 16
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 10.0
IMAGE_HEIGHT = 340  # px on the page; the browser scales with image-rendering: pixelated
SCALE = 8  # a 16 px sprite becomes 128 px: big enough to see, nearest-neighbour so still crisp
# The browser cannot draw hundreds of images a second; a few dozen updates read as smooth motion.
PREVIEW_UPDATES = 24
GIF_MAX_FRAMES = 60
GIF_HOLD_MS = 1500
GIF_MS_RANGE = (20, 500)
# Compare runs every (sampler, steps) pair; this caps the network calls one click may cost.
COMPARE_BUDGET = 4000
COMPARE_STEPS = (5, 10, 20, 50, 100, 250, 500, 1000)
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096
CONCURRENCY = 2  # sampling is CPU/GPU bound: more parallel runs only make each one slower
QUEUE_SIZE = 64
KEEP_RUNS = 64  # output folders kept on disk; older ones are deleted as new runs start
# Gradio copies every file it serves into its cache; sweep copies older than 30 min every 10 min.
DELETE_CACHE = (600, 1800)
UNCONDITIONAL = "(none)"
PREVIEW_CHOICES = [("noisy state x_t", "noisy"), ("predicted clean image x̂₀", "clean")]
SCHEDULES: dict[str, Callable[[int], Schedule]] = {
    "linear": Schedule.linear,
    "cosine": Schedule.cosine,
    "quadratic": Schedule.quadratic,
}

CSS = """
.pixel img, .pixel canvas { image-rendering: pixelated; }
#status { min-height: 2.5em; }
"""


# -- validation -------------------------------------------------------------------------------


class InputError(gr.Error):
    """A bad input: shown to the user, kept out of the server log (it is no fault of the server)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, print_exception=False)


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

    def describe(self) -> str:
        if isinstance(self.context, dict):
            what = " + ".join(f"{w:g}×{name}" for name, w in self.context.items())
        else:
            what = self.context or "unconditional"
        eta = f" · eta {self.eta:g}" if self.eta is not None else ""
        return (
            f"{self.n} × {what} · {self.sampler} · {self.steps} steps · "
            f"guidance {self.guidance:g}{eta} · seed {self.seed}"
        )


def _whole(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or an InputError that says what is allowed."""
    message = f"{name} must be a whole number from {low} to {high} (got {value!r})."
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(message) from None
    if not math.isfinite(number) or number != round(number) or not low <= number <= high:
        raise InputError(message)
    return int(number)


def _finite(value: Any, name: str, low: float, high: float) -> float:
    message = f"{name} must be a number from {low:g} to {high:g} (got {value!r})."
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(message) from None
    if not (math.isfinite(number) and low <= number <= high):
        raise InputError(message)
    return number


def parse_mix(text: str | None, labels: Sequence[str]) -> dict[str, float] | None:
    """``"hero:0.7, food:0.3"`` -> {"hero": 0.7, "food": 0.3}; empty text -> None."""
    if not text or not text.strip():
        return None
    mix: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, weight = part.partition(":")
        name = name.strip()
        if not sep:
            raise InputError(
                f"Mix entry {part.strip()!r} must look like label:weight, e.g. hero:0.5."
            )
        if name not in labels:
            raise InputError(f"Unknown label {name!r} in the mix. Labels: {', '.join(labels)}.")
        mix[name] = _finite(weight.strip(), f"The weight of {name!r}", 0.0, 1.0)
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
) -> GenerateRequest:
    """Check every generate input against ``pipe``; raise InputError naming the bad one."""
    if sampler not in pipe.samplers:
        raise InputError(f"Unknown sampler {sampler!r}. Choose one of: {', '.join(pipe.samplers)}.")
    context: str | dict[str, float] | None = parse_mix(mix, pipe.labels)
    if context is None and label not in (None, "", UNCONDITIONAL):
        if label not in pipe.labels:
            raise InputError(
                f"Unknown label {label!r}. Choose one of: {', '.join(pipe.labels)} "
                f"(or {UNCONDITIONAL!r} for no label)."
            )
        context = label
    spec = SAMPLERS[sampler]
    if seed is None or seed == "":
        raise InputError("Enter a seed (a whole number), or press 🎲 for a random one.")
    return GenerateRequest(
        context=context,
        sampler=sampler,
        steps=_whole(steps, f"Steps for {sampler}", 1, pipe.schedule.T),
        guidance=_finite(guidance, "Guidance", 0.0, MAX_GUIDANCE),
        seed=_whole(seed, "Seed", 0, MAX_SEED),
        n=_whole(n, "Batch size", 1, MAX_BATCH),
        # eta only means something for samplers that inject noise; elsewhere it is ignored.
        eta=_finite(eta, "Eta", 0.0, 1.0) if spec.uses_eta and eta is not None else None,
    )


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def load_upload(path: str | os.PathLike, resolution: int) -> np.ndarray:
    """An uploaded image file -> (resolution, resolution, 3) uint8, or an InputError saying why not.

    Transparent pixels become white, the sprites' background; other sizes are centre-cropped
    to a square and resized (box filter down, nearest-neighbour up) to what the model draws.
    """
    size = os.path.getsize(path)
    if size > MAX_UPLOAD_BYTES:
        raise InputError(
            f"That file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 2**20:.0f} MB."
        )
    unreadable = "That file is not an image we can read. Upload a PNG (or GIF, JPEG, WebP, BMP)."
    too_big = f"That image has more than {MAX_UPLOAD_PIXELS:,} pixels; sprites are much smaller."
    try:
        im = Image.open(path)
    except Image.DecompressionBombError:
        raise InputError(too_big) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputError(unreadable) from None
    with im:
        # Checked before decoding so a small file that unpacks to gigapixels is never loaded.
        if im.width * im.height > MAX_UPLOAD_PIXELS:
            raise InputError(f"That image is {im.width}×{im.height} pixels. {too_big}")
        try:
            rgba = im.convert("RGBA")
        except (OSError, ValueError):  # a valid header over truncated or corrupt data
            raise InputError(unreadable) from None
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    shrinking = min(rgb.size) > resolution
    method = Image.Resampling.BOX if shrinking else Image.Resampling.NEAREST
    return np.asarray(ImageOps.fit(rgb, (resolution, resolution), method=method))


# -- frames, files and timing -----------------------------------------------------------------


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


class OutputStore:
    """One folder per run under a private temp root; only the newest ``keep`` folders survive.

    Gradio serves copies from its own cache (swept by ``delete_cache``), so a run folder is only
    needed while its files are being written and copied.
    """

    def __init__(self, root: str | os.PathLike | None = None, keep: int = KEEP_RUNS) -> None:
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="sprite-studio-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._lock = threading.Lock()

    def new_run(self) -> Path:
        with self._lock:
            run = self.root / f"{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"
            run.mkdir()
            runs = sorted(p for p in self.root.iterdir() if p.is_dir())
            for old in runs[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
            return run


def sprite_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [-1, 1], the range the forward process works in."""
    x = torch.tensor(np.asarray(image)).permute(2, 0, 1)[None].float()
    return x / 127.5 - 1


def schedule_curves(T: int, points: int = 200) -> pd.DataFrame:
    """alpha_bar(t) and log10 SNR(t) of every schedule, long format for gr.LinePlot."""
    t = torch.linspace(1, T, points, dtype=torch.float64)
    rows = []
    for name, make in SCHEDULES.items():
        schedule = make(T)
        abar = schedule.alpha_bar(t).numpy()
        log_snr = torch.log10(schedule.snr(t)).numpy()
        rows.append(pd.DataFrame({"t": t.numpy(), "alpha_bar": abar, "log10 SNR": log_snr}))
        rows[-1]["schedule"] = name
    return pd.concat(rows, ignore_index=True)


# -- the handlers -----------------------------------------------------------------------------


class StopFlags:
    """When each browser session last pressed Stop, so its running loop can end cleanly.

    Gradio's own ``cancels`` kills the handler from outside, which leaves the page showing
    "Error" when it races with a streamed update; a flag checked every step does not, and lets
    a stopped run still hand back the frames it has drawn.
    """

    FORGET_AFTER_S = 3600

    def __init__(self) -> None:
        self._pressed: dict[str, float] = {}
        self._lock = threading.Lock()

    def press(self, session: str | None) -> None:
        if session is None:
            return
        now = time.monotonic()
        with self._lock:
            self._pressed = {
                k: v for k, v in self._pressed.items() if now - v < self.FORGET_AFTER_S
            }
            self._pressed[session] = now

    def pressed_since(self, session: str | None, since: float) -> bool:
        """Whether ``session`` pressed Stop after ``since`` (a ``time.monotonic()`` value)."""
        return session is not None and self._pressed.get(session, -math.inf) > since


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


class Studio:
    """The app's handlers over a set of named pipelines; no Gradio layout in here."""

    def __init__(self, models: dict[str, SpritePipeline], store: OutputStore | None = None):
        if not models:
            raise ValueError("Sprite Diffusion Studio needs at least one model")
        self.models = dict(models)
        self.store = store or OutputStore()
        self.default_model = next(iter(self.models))
        self.stops = StopFlags()
        self._schedules: dict[int, dict[str, Schedule]] = {}

    def pipe(self, model: str | None) -> SpritePipeline:
        if not model:
            return self.models[self.default_model]
        if model not in self.models:
            raise InputError(f"Unknown model {model!r}. Available: {', '.join(self.models)}.")
        return self.models[model]

    def generate(
        self,
        label: str | None,
        sampler: str,
        steps: float,
        guidance: float,
        seed: float,
        n: float,
        eta: float | None = None,
        model: str | None = None,
        mix: str | None = "",
        preview: str = "noisy",
        gif_ms: float = 80,
        request: gr.Request | None = None,
    ) -> Iterator[tuple]:
        """Stream a run: live previews with progress, then the GIF, the sheet and the files.

        Yields (preview, status, gif, sheet, files, seed, sprites): 7 outputs. After Stop, the
        GIF holds the frames so far and the sheet the model's current guess of the clean sprites.
        """
        pipe = self.pipe(model)
        req = validate_request(pipe, label, sampler, steps, guidance, seed, n, eta, mix)
        if preview not in ("noisy", "clean"):
            raise InputError("Preview must be 'noisy' (x_t) or 'clean' (predicted x̂₀).")
        frame_ms = _whole(gif_ms, "GIF frame time (ms)", *GIF_MS_RANGE)
        live = set(pick_steps(req.steps, PREVIEW_UPDATES))
        keep = set(pick_steps(req.steps, GIF_MAX_FRAMES))
        run = self.store.new_run()
        # Clear the last run's results so they are not mistaken for this one's.
        yield None, f"starting: {req.describe()}", None, None, None, req.seed, gr.skip()

        kept: list[np.ndarray] = []  # raw frames for the GIF; a few KB each until rendered
        session, began = _session(request), time.monotonic()
        start = time.perf_counter()
        frame, stopped = None, False
        try:
            for frame in pipe.stream(
                context=req.context,
                n=req.n,
                sampler=req.sampler,
                steps=req.steps,
                guidance=req.guidance,
                seed=req.seed,
                eta=req.eta,
            ):
                pixels = frame.x if preview == "noisy" else frame.x0
                stopped = self.stops.pressed_since(session, began)
                if frame.step in keep or stopped:
                    kept.append(pixels)
                if stopped:
                    break
                if frame.step in live and frame.step < frame.total:
                    rate = format_ms(time.perf_counter() - start, frame.step)
                    status = f"step {frame.step}/{frame.total} - {rate} · t = {frame.t:.0f}"
                    yield render.grid(pixels, SCALE), status, *[gr.skip()] * 5
        except ValueError as err:  # the pipeline's own checks: pass its message on
            raise InputError(str(err)) from None
        elapsed = time.perf_counter() - start

        rate = format_ms(elapsed, frame.step)
        if stopped:
            sheet, sprites = render.grid(frame.x0, SCALE), gr.skip()
            status = (
                f"stopped at step {frame.step}/{frame.total}: {req.describe()} - {rate}. "
                "The sheet shows the model's guess x̂₀ so far."
            )
        else:
            sheet, sprites = render.grid(frame.x, SCALE), frame.x
            status = f"done: {req.describe()} - {rate}, {elapsed:.2f} s in all"
        gif_path = render.save_gif(
            [render.grid(pixels, SCALE) for pixels in kept],
            run / "denoising.gif",
            frame_ms=frame_ms,
            hold_ms=GIF_HOLD_MS,
        )
        png_path = render.save_png(sheet, run / "sprites.png")
        yield sheet, status, gif_path, png_path, [gif_path, png_path], req.seed, sprites

    def stop(self, request: gr.Request) -> None:
        """Ask this session's running generate or compare to end at its next step."""
        self.stops.press(_session(request))

    def noised(self, model: str | None, sprite: np.ndarray | None, t: float) -> tuple:
        """The sprite noised at ``t`` by each schedule: (linear, cosine, quadratic, table)."""
        pipe = self.pipe(model)
        if sprite is None:
            return None, None, None, "Draw a sprite or upload one first."
        T = pipe.schedule.T
        t = _finite(t, "t", 0, T)
        schedules = self._schedules.setdefault(T, {k: make(T) for k, make in SCHEDULES.items()})
        x0 = sprite_tensor(sprite)
        # One fixed noise draw for every schedule, so the columns differ only by schedule.
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
        scale = max(1, 192 // max(sprite.shape[:2]))
        images = []
        lines = [f"**t = {t:.0f}** of {T}", "", "| schedule | ᾱ(t) | SNR |", "|---|---|---|"]
        for name, schedule in schedules.items():
            tt = torch.tensor([t], dtype=torch.float64)
            xt = schedule.q_sample(x0.double(), tt, noise.double())
            images.append(render.grid(render.to_uint8(xt), scale))
            abar, snr = float(schedule.alpha_bar(tt)), float(schedule.snr(tt))
            lines.append(f"| {name} | {abar:.4f} | {'∞' if math.isinf(snr) else f'{snr:.3g}'} |")
        return (*images, "\n".join(lines))

    def draw_sprite(self, model: str | None, label: str | None) -> tuple[np.ndarray, str]:
        """One fresh sprite with the model's recommended settings, for the forward-process tab."""
        pipe = self.pipe(model)
        label = label if label in pipe.labels else secrets.choice(pipe.labels)
        seed = random_seed()
        sprite = pipe.generate(context=label, n=1, seed=seed)[0]
        d = pipe.defaults
        return (
            sprite,
            f"a **{label}**, drawn with {d['sampler']} in {d['steps']} steps, seed {seed}",
        )

    def use_upload(self, model: str | None, path: str | None) -> tuple[np.ndarray, str]:
        pipe = self.pipe(model)
        if not path:
            raise InputError("Choose an image file to upload.")
        sprite = load_upload(path, pipe.resolution)
        return sprite, f"your upload, resized to {pipe.resolution}×{pipe.resolution}"

    def use_last(self, sprites: np.ndarray | None) -> tuple[np.ndarray, str]:
        if sprites is None or len(sprites) == 0:
            raise InputError("Nothing generated yet in this session: use the Generate tab first.")
        return sprites[0], "the first sprite of your last Generate run"

    def compare(
        self,
        model: str | None,
        label: str | None,
        samplers: Sequence[str],
        steps: Sequence[float],
        guidance: float,
        seed: float,
        n: float,
        request: gr.Request | None = None,
    ) -> Iterator[tuple[list[tuple[str, str]], pd.DataFrame]]:
        """Same seed and label through each (sampler, steps) pair; yields as each one finishes."""
        pipe = self.pipe(model)
        if not samplers:
            raise InputError("Tick at least one sampler to compare.")
        if not steps:
            raise InputError("Tick at least one step count to compare.")
        counts = sorted({_whole(s, "Each step count", 1, pipe.schedule.T) for s in steps})
        reqs = [
            validate_request(pipe, label, s, k, guidance, seed, n)
            for s in dict.fromkeys(samplers)
            for k in counts
        ]
        cost = sum(r.steps * SAMPLERS[r.sampler].calls_per_step for r in reqs)
        if cost > COMPARE_BUDGET:
            raise InputError(
                f"That comparison needs {cost:.0f} network calls; the limit is {COMPARE_BUDGET}. "
                "Tick fewer samplers or smaller step counts."
            )
        run = self.store.new_run()
        session, began = _session(request), time.monotonic()
        gallery: list[tuple[str, str]] = []
        rows: list[dict[str, Any]] = []
        for r in reqs:
            start = time.perf_counter()
            try:
                for frame in pipe.stream(
                    context=r.context,
                    n=r.n,
                    sampler=r.sampler,
                    steps=r.steps,
                    guidance=r.guidance,
                    seed=r.seed,
                ):
                    if self.stops.pressed_since(session, began):
                        return
                    images = frame.x
            except ValueError as err:
                raise InputError(str(err)) from None
            seconds = time.perf_counter() - start
            path = render.save_png(render.grid(images, SCALE), run / f"{r.sampler}-{r.steps}.png")
            gallery.append((path, f"{r.sampler} · {r.steps} steps · {seconds:.2f} s"))
            rows.append(
                {
                    "sampler": r.sampler,
                    "steps": r.steps,
                    "seconds": round(seconds, 3),
                    "ms/step": round(1000 * seconds / r.steps, 1),
                }
            )
            yield gallery, pd.DataFrame(rows)


# -- the page ---------------------------------------------------------------------------------


def _gpu(fn: Callable) -> Callable:
    """Borrow a ZeroGPU GPU for ``fn`` on Spaces; unchanged elsewhere."""
    return spaces.GPU(fn) if spaces is not None else fn


def _model_info(name: str, pipe: SpritePipeline) -> str:
    d = pipe.defaults
    return (
        f"**{name}**: {pipe.resolution}×{pipe.resolution} sprites, labels "
        f"{', '.join(pipe.labels)}; {pipe.schedule.kind} schedule, T = {pipe.schedule.T}; "
        f"recommended {d['sampler']}, {d['steps']} steps, guidance {d['guidance']:g}."
    )


def _sampler_info(sampler: str) -> str:
    spec = SAMPLERS.get(sampler)
    return f"*{spec.description}*" if spec else ""


def _sprite_image(label: str, **kwargs: Any) -> gr.Image:
    """An output image of sprites, drawn with hard pixel edges (the ``pixel`` CSS class)."""
    return gr.Image(label=label, elem_classes="pixel", interactive=False, **kwargs)


def build_demo(models: dict[str, SpritePipeline], store: OutputStore | None = None) -> gr.Blocks:
    """The whole UI over ``models`` (name -> pipeline); the first one is selected at start."""
    studio = Studio(models, store)
    name0 = studio.default_model
    pipe0 = studio.models[name0]
    d0 = pipe0.defaults
    spec0 = SAMPLERS[d0["sampler"]]
    mix_slots = max(len(p.labels) for p in studio.models.values())

    with gr.Blocks(title="Sprite Diffusion Studio", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(
            "# 👾 Sprite Diffusion Studio\n"
            "Watch a diffusion model paint pixel-art sprites out of pure noise, step by step. "
            "Every picture here is drawn by the model (or uploaded by you)."
        )
        with gr.Row():
            model = gr.Dropdown(
                list(studio.models), value=name0, label="Model", scale=1, min_width=200
            )
            model_info = gr.Markdown(_model_info(name0, pipe0))
        sprites = gr.State(None)  # the last generated batch, for the forward-process tab

        with gr.Tabs():
            with gr.Tab("🎨 Generate"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        label = gr.Dropdown(
                            [*pipe0.labels, UNCONDITIONAL], value=pipe0.labels[0], label="Label"
                        )
                        with gr.Accordion("Advanced: mix labels", open=False):
                            gr.Markdown(
                                "Give several labels a weight to blend them. While any weight is "
                                "above 0, the mix replaces the label above."
                            )
                            weights = [
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
                            mix = gr.Textbox(
                                "",
                                label="Mix (label:weight, ...)",
                                placeholder="e.g. hero:0.5, creature:0.5",
                            )
                            clear_mix = gr.Button("Clear mix", size="sm")
                        sampler = gr.Dropdown(pipe0.samplers, value=d0["sampler"], label="Sampler")
                        sampler_info = gr.Markdown(_sampler_info(d0["sampler"]))
                        steps = gr.Slider(
                            1, pipe0.schedule.T, value=d0["steps"], step=1, label="Steps"
                        )
                        guidance = gr.Slider(
                            0,
                            MAX_GUIDANCE,
                            value=d0["guidance"],
                            step=0.1,
                            label="Guidance scale",
                            info="1 = plain conditional model; higher follows the label harder",
                        )
                        eta = gr.Slider(
                            0,
                            1,
                            value=spec0.default_eta or 0.0,
                            step=0.05,
                            label="Eta (fresh noise per step)",
                            visible=spec0.uses_eta,
                        )
                        with gr.Row(equal_height=True):
                            seed = gr.Number(value=0, precision=0, label="Seed", scale=3)
                            dice = gr.Button("🎲", scale=1, min_width=50)
                        n = gr.Slider(1, MAX_BATCH, value=16, step=1, label="Batch size")
                        preview = gr.Radio(PREVIEW_CHOICES, value="noisy", label="Preview")
                        gif_ms = gr.Slider(
                            *GIF_MS_RANGE, value=80, step=10, label="GIF speed (ms per frame)"
                        )
                        with gr.Row():
                            run_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                    with gr.Column(scale=2):
                        status = gr.Markdown(
                            "Press **Generate**.", label="Status", elem_id="status"
                        )
                        with gr.Row():
                            live = _sprite_image(
                                "Live preview", format="png", height=IMAGE_HEIGHT, elem_id="live"
                            )
                            gif = _sprite_image(
                                "Denoising animation (GIF)",
                                type="filepath",
                                height=IMAGE_HEIGHT,
                                elem_id="gif",
                            )
                        sheet = _sprite_image(
                            "Sprite sheet (PNG)", type="filepath", height=IMAGE_HEIGHT
                        )
                        files = gr.File(label="Downloads", file_count="multiple")
                gen_inputs = [
                    label,
                    sampler,
                    steps,
                    guidance,
                    seed,
                    n,
                    eta,
                    model,
                    mix,
                    preview,
                    gif_ms,
                ]
                gen_outputs = [live, status, gif, sheet, files, seed, sprites]
                generate_fn = _gpu(studio.generate)
                run_btn.click(
                    generate_fn,
                    gen_inputs,
                    gen_outputs,
                    api_name="generate",
                    api_description="Sample sprites; streams previews, ends with GIF + PNG.",
                    concurrency_id="sampling",
                    concurrency_limit=CONCURRENCY,
                    show_progress="minimal",
                )
                examples = gr.Examples(
                    [
                        ["hero", "dpmpp_2m", 20, 2.0, 0, 16],
                        ["creature", "ddim", 50, 3.0, 42, 9],
                        ["food", "euler_ancestral", 30, 2.0, 7, 4],
                        ["weapon_spell", "heun", 15, 2.0, 123, 16],
                    ]
                    if {"hero", "creature", "food", "weapon_spell"} <= set(pipe0.labels)
                    else [[pipe0.labels[0], d0["sampler"], d0["steps"], d0["guidance"], 0, 16]],
                    [label, sampler, steps, guidance, seed, n],
                    label="Examples: click one to run it",
                    cache_examples=False,
                )
                examples.load_input_event.then(
                    generate_fn,
                    gen_inputs,
                    gen_outputs,
                    api_visibility="private",
                    concurrency_id="sampling",
                    concurrency_limit=CONCURRENCY,
                    show_progress="minimal",
                )

            with gr.Tab("🌫️ Forward process") as forward_tab:
                gr.Markdown(
                    "Training teaches the model to undo this: the forward process mixes a clean "
                    "sprite with Gaussian noise, x_t = √ᾱ(t)·x₀ + √(1−ᾱ(t))·ε. The same sprite "
                    "and the same noise, through three schedules."
                )
                source_sprite = gr.State(None)
                with gr.Row():
                    draw_btn = gr.Button("🎲 Draw a new sprite")
                    last_btn = gr.Button("Use my last generated sprite")
                    upload = gr.File(
                        label="…or upload a PNG",
                        file_types=[".png", ".gif", ".jpg", ".jpeg", ".webp", ".bmp"],
                    )
                source_info = gr.Markdown()
                t = gr.Slider(
                    0, pipe0.schedule.T, value=pipe0.schedule.T // 4, step=1, label="Timestep t"
                )
                with gr.Row():
                    noisy = [_sprite_image(name, format="png") for name in SCHEDULES]
                    noise_table = gr.Markdown()
                curves = schedule_curves(pipe0.schedule.T)
                with gr.Row():
                    abar_plot = gr.LinePlot(
                        curves, x="t", y="alpha_bar", color="schedule", title="ᾱ(t): signal kept"
                    )
                    snr_plot = gr.LinePlot(
                        curves, x="t", y="log10 SNR", color="schedule", title="log₁₀ SNR(t)"
                    )
                noised_outputs = [*noisy, noise_table]
                show = {
                    "fn": studio.noised,
                    "inputs": [model, source_sprite, t],
                    "outputs": noised_outputs,
                    "api_visibility": "private",
                    "show_progress": "hidden",
                }
                draw_btn.click(
                    _gpu(studio.draw_sprite),
                    [model, label],
                    [source_sprite, source_info],
                    api_visibility="private",
                    concurrency_id="sampling",
                    concurrency_limit=CONCURRENCY,
                ).success(**show)
                last_btn.click(
                    studio.use_last, sprites, [source_sprite, source_info], api_visibility="private"
                ).success(**show)
                uploaded = upload.upload(
                    studio.use_upload,
                    [model, upload],
                    [source_sprite, source_info],
                    api_visibility="private",
                )
                uploaded.success(**show)
                # Empty the drop zone again, so the next file (good or bad) can be dropped in.
                uploaded.then(lambda: None, None, upload, api_visibility="private", queue=False)
                t.change(trigger_mode="always_last", **show)

                def first_sprite(model_name: str, sprite: np.ndarray | None, label_name: str):
                    # Opening the tab shows something at once, without a click.
                    if sprite is not None:
                        return gr.skip(), gr.skip()
                    return studio.draw_sprite(model_name, label_name)

                forward_tab.select(
                    _gpu(first_sprite),
                    [model, source_sprite, label],
                    [source_sprite, source_info],
                    api_visibility="private",
                    concurrency_id="sampling",
                    concurrency_limit=CONCURRENCY,
                ).success(**show)

            with gr.Tab("⚖️ Compare samplers"):
                gr.Markdown(
                    "The same seed and label through several samplers and step counts: how few "
                    "steps does each need, and what does a step cost?"
                )
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        cmp_label = gr.Dropdown(
                            [*pipe0.labels, UNCONDITIONAL], value=pipe0.labels[0], label="Label"
                        )
                        cmp_samplers = gr.CheckboxGroup(
                            pipe0.samplers, value=["ddim", "dpmpp_2m", "heun"], label="Samplers"
                        )
                        step_choices = [s for s in COMPARE_STEPS if s <= pipe0.schedule.T]
                        cmp_steps = gr.CheckboxGroup(
                            step_choices, value=step_choices[1:3], label="Step counts"
                        )
                        cmp_guidance = gr.Slider(
                            0, MAX_GUIDANCE, value=d0["guidance"], step=0.1, label="Guidance"
                        )
                        cmp_seed = gr.Number(value=0, precision=0, label="Seed")
                        cmp_n = gr.Slider(1, MAX_BATCH, value=4, step=1, label="Batch size")
                        with gr.Row():
                            cmp_btn = gr.Button("Compare", variant="primary")
                            cmp_stop = gr.Button("Stop", variant="stop")
                    with gr.Column(scale=2):
                        cmp_gallery = gr.Gallery(
                            label="Results", columns=3, format="png", elem_classes="pixel"
                        )
                        cmp_table = gr.Dataframe(label="Time taken", interactive=False)
                cmp_btn.click(
                    _gpu(studio.compare),
                    [model, cmp_label, cmp_samplers, cmp_steps, cmp_guidance, cmp_seed, cmp_n],
                    [cmp_gallery, cmp_table],
                    api_name="compare",
                    concurrency_id="sampling",
                    concurrency_limit=CONCURRENCY,
                )
                cmp_stop.click(studio.stop, api_visibility="private", queue=False)

        stop_btn.click(studio.stop, api_visibility="private", queue=False)
        dice.click(random_seed, None, seed, api_visibility="private", queue=False)

        def on_sampler(sampler_name: str, model_name: str):
            spec = SAMPLERS.get(sampler_name)
            if spec is None:
                return gr.skip(), gr.skip(), gr.skip()
            T = studio.pipe(model_name).schedule.T
            return (
                gr.update(value=min(spec.default_steps, T), maximum=T),
                gr.update(visible=spec.uses_eta, value=spec.default_eta or 0.0),
                _sampler_info(sampler_name),
            )

        sampler.input(
            on_sampler,
            [sampler, model],
            [steps, eta, sampler_info],
            api_visibility="private",
            queue=False,
        )

        def on_weights(model_name: str, *values: float) -> str:
            labels = studio.pipe(model_name).labels
            return mix_text(labels, values[: len(labels)])  # hidden spare sliders are ignored

        for w in weights:
            w.input(on_weights, [model, *weights], mix, api_visibility="private", queue=False)

        def on_clear() -> list:
            return [0.0] * len(weights) + [""]

        clear_mix.click(on_clear, None, [*weights, mix], api_visibility="private", queue=False)

        def on_model(model_name: str) -> list:
            pipe = studio.pipe(model_name)
            d = pipe.defaults
            spec = SAMPLERS[d["sampler"]]
            T = pipe.schedule.T
            labels = [*pipe.labels, UNCONDITIONAL]
            curves = schedule_curves(T)
            choices = [s for s in COMPARE_STEPS if s <= T]
            return [
                _model_info(model_name, pipe),
                gr.update(choices=labels, value=pipe.labels[0]),
                gr.update(choices=pipe.samplers, value=d["sampler"]),
                gr.update(maximum=T, value=min(d["steps"], T)),
                gr.update(value=d["guidance"]),
                gr.update(visible=spec.uses_eta, value=spec.default_eta or 0.0),
                _sampler_info(d["sampler"]),
                *[
                    gr.update(label=pipe.labels[i], visible=True, value=0)
                    if i < len(pipe.labels)
                    else gr.update(visible=False, value=0)
                    for i in range(len(weights))
                ],
                "",
                gr.update(maximum=T, value=T // 4),
                curves,
                curves,
                None,  # a sprite from another model may have another size
                gr.update(choices=labels, value=pipe.labels[0]),
                gr.update(choices=choices, value=choices[1:3]),
            ]

        model.change(
            on_model,
            model,
            [
                model_info,
                label,
                sampler,
                steps,
                guidance,
                eta,
                sampler_info,
                *weights,
                mix,
                t,
                abar_plot,
                snr_plot,
                source_sprite,
                cmp_label,
                cmp_steps,
            ],
            api_visibility="private",
        )

    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def discover_models(root: str | os.PathLike = WEIGHTS_DIR) -> dict[str, SpritePipeline]:
    """Every model folder (one holding config.json) directly under ``root``, by folder name."""
    root = Path(root)
    folders = sorted(p.parent for p in root.glob("*/config.json")) if root.is_dir() else []
    # The recommended model first, so it is what a visitor sees.
    folders.sort(key=lambda p: p.name != "sprites16")
    return {folder.name: SpritePipeline.from_pretrained(folder) for folder in folders}


def main() -> None:
    models = discover_models()
    if not models:
        raise SystemExit(
            f"No model found under {WEIGHTS_DIR}: expected folders holding config.json and "
            "model.safetensors (e.g. weights/sprites16)."
        )
    launch(build_demo(models))


def launch(demo: gr.Blocks, **kwargs: Any) -> tuple:
    """``demo.launch`` with the app's look and upload limit; kwargs pass through (e.g. a port)."""
    return demo.launch(css=CSS, theme=gr.themes.Soft(), max_file_size=MAX_UPLOAD_BYTES, **kwargs)


if __name__ == "__main__":
    main()
