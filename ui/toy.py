"""The 2D tab: the package's samplers on a map of points, where the exact denoiser is known
(``diffusion.toy``): reverse paths per sampler, the noise field at any t, the forward process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from PIL import Image

from diffusion import SAMPLERS, SpritePipeline, render
from diffusion.toy import SHAPES, Mixture, ReversePath, Toy

from .errors import InputError, guarded, shorten
from .limits import (
    CONCURRENCY,
    TOY_FRAMES,
    TOY_MAX_POINTS,
    TOY_MAX_SAMPLERS,
    TOY_MAX_WORK,
    TOY_PATHS,
    TOY_POINTS,
)
from .run import finite, parse_seed, whole
from .shell import Shell
from .studio import Studio
from .widgets import scroll_into_view

SHAPE_CHOICES = [
    ("three Gaussians", "gaussians"),
    ("ring", "ring"),
    ("spiral", "spiral"),
    ("a sprite's silhouette", "sprite"),
]
START_SAMPLERS = ["ddpm", "ddim", "heun"]  # a random walk, an ODE, an ODE with a corrector
START_STEPS = 10  # few enough that the samplers differ, enough that all reach the shape
EXTENT = 2.6  # the plots show [-EXTENT, EXTENT]^2: nearly all of pure noise, N(0, I)
PANEL_IN, DPI, GIF_DPI = 3.4, 100, 80
ARROWS = 17  # arrows across the field's panel
SHADE = 120  # pixels across a density background
FRAME_MS = 120  # the forward animation's frames
EXPLAIN = (
    "**What you are looking at.** The data are points in the plane, and the exact denoiser of "
    "their distribution is known, so each panel shows a sampler as it is, with no network "
    "error. *First panel*: the data noised to t by the forward process, over the density at "
    "that t; the arrows are −ε̂, where a perfect network says the noise points away from "
    "(the score, scaled). *Then one panel per sampler*: grey dots are pure noise, lines the "
    "paths of the first points step by step, black dots where every point ended, over the "
    "data's density. DDPM walks at random (fresh noise every step); DDIM and DPM-Solver "
    "follow a smooth ODE path; Heun corrects each step with a second call; with too few "
    "steps the points land short of the shape, pulled towards its middle. The animation is "
    "the forward process, t from 0 to T."
)


def start_t(T: int) -> int:
    """Where the field's slider starts: early enough that the shape still shows through."""
    return max(1, T // 12)


def grid_points(n: int) -> np.ndarray:
    """An n x n grid over the plotted square, row by row from the bottom: (n * n, 2)."""
    axis = np.linspace(-EXTENT, EXTENT, n)
    return np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)


def frame_times(T: int, frames: int = TOY_FRAMES) -> list[float]:
    """The animation's timesteps from 0 to T, denser early, where the shape still shows."""
    return [T * (i / (frames - 1)) ** 2 for i in range(frames)]


def new_panel(fig: Figure, rows: int, cols: int, index: int, title: str):
    ax = fig.add_subplot(rows, cols, index)
    ax.set_xlim(-EXTENT, EXTENT)
    ax.set_ylim(-EXTENT, EXTENT)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return ax


def shade(ax, toy: Toy, t: float):
    """The density of x_t behind a panel (square-root scaled, so thin shapes still show)."""
    points = grid_points(SHADE)
    density = toy.density(points, t).reshape(SHADE, SHADE)
    return ax.imshow(
        density,
        extent=(-EXTENT, EXTENT, -EXTENT, EXTENT),
        origin="lower",
        cmap="Blues",
        norm=PowerNorm(0.5, vmin=0),
        interpolation="bilinear",
    )


def draw_map(toy: Toy, paths: Sequence[ReversePath], t: float, noised: np.ndarray) -> Figure:
    """The field's panel, then one panel of reverse paths per sampler."""
    panels = 1 + len(paths)
    cols = 2 if panels <= 4 else 3
    rows = -(-panels // cols)
    fig = Figure(figsize=(PANEL_IN * cols, PANEL_IN * rows), dpi=DPI, layout="constrained")
    ax = new_panel(fig, rows, cols, 1, f"data noised to t = {t:.0f}; arrows: −ε̂")
    shade(ax, toy, t)
    ax.scatter(*noised.T, s=3, c="tab:orange", linewidths=0)
    points = grid_points(ARROWS)
    field = toy.field(points, t)
    ax.quiver(*points.T, *(-field).T, color="0.15", angles="xy", width=0.004)
    for i, path in enumerate(paths, start=2):
        ax = new_panel(
            fig, rows, cols, i, f"{path.sampler} · {path.steps} steps · {path.calls} calls"
        )
        shade(ax, toy, 0.0)
        lines = path.x[:, :TOY_PATHS].transpose(1, 0, 2)
        ax.add_collection(LineCollection(lines, colors="tab:orange", linewidths=0.8, alpha=0.7))
        ax.scatter(*path.x[0, :TOY_PATHS].T, s=6, c="0.6", linewidths=0)
        ax.scatter(*path.x[-1].T, s=3, c="black", linewidths=0)
    return fig


def forward_frames(toy: Toy, n: int, seed: int) -> list[Image.Image]:
    """The forward process as pictures: the data's points drifting into noise as t grows."""
    ts = frame_times(toy.schedule.T)
    states = toy.forward_frames(n, ts, seed)
    fig = Figure(figsize=(PANEL_IN, PANEL_IN), dpi=GIF_DPI, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = new_panel(fig, 1, 1, 1, "")
    background = shade(ax, toy, 0.0)
    dots = ax.scatter(*states[0].T, s=3, c="tab:orange", linewidths=0)
    points = grid_points(SHADE)
    frames = []
    for t, x in zip(ts, states, strict=True):
        density = toy.density(points, t).reshape(SHADE, SHADE)
        background.set_data(density)
        background.set_norm(PowerNorm(0.5, vmin=0, vmax=float(density.max())))
        dots.set_offsets(x)
        ax.set_title(f"forward process: t = {t:.0f}", fontsize=10)
        canvas.draw()
        fig.set_layout_engine("none")  # laid out once: every frame is the same layout
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB"))
    return frames


def check_samplers(samplers: Sequence[str] | None) -> list[str]:
    """The ticked samplers, known and few enough for one picture, or an InputError."""
    if not samplers:
        raise InputError("Tick at least one sampler.")
    unknown = [s for s in samplers if s not in SAMPLERS]
    if unknown:
        raise InputError(
            f"Unknown sampler {shorten(unknown[0])}. Choose from: {', '.join(SAMPLERS)}."
        )
    if len(samplers) > TOY_MAX_SAMPLERS:
        raise InputError(
            f"Tick at most {TOY_MAX_SAMPLERS} samplers (got {len(samplers)}): each one is a "
            "panel of the picture."
        )
    return list(dict.fromkeys(samplers))


class ToyTab:
    """Controls, handlers and wiring of the 2D tab."""

    title = "2D"

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def explore(
        self,
        model: str | None,
        sprites: np.ndarray | None,
        shape: str,
        samplers: Sequence[str],
        steps: Any,
        points: Any,
        t: Any,
        seed: Any,
        request: gr.Request | None = None,
    ) -> dict[str, Any]:
        """Reverse paths of each sampler, the field at t, and the forward animation.
        (``request`` tells ``guarded`` whether an API client or the page asked.)"""
        pipe = self.studio.pipe(model)
        T = pipe.schedule.T
        if shape not in SHAPES:
            raise InputError(f"Unknown shape {shorten(shape)}. Choose from: {', '.join(SHAPES)}.")
        samplers = check_samplers(samplers)
        steps = whole(steps, "Steps", 1, T)
        n = whole(points, "Points", 1, TOY_MAX_POINTS)
        t = finite(t, "t", 0, T)
        seed = parse_seed(seed)
        calls = sum(SAMPLERS[s].calls(steps) for s in samplers)
        if n * calls > TOY_MAX_WORK:
            raise InputError(
                f"That run needs {n * calls:,} point-steps ({n} points × {calls} denoiser "
                f"calls); the limit is {TOY_MAX_WORK:,}. Use fewer points, steps or samplers."
            )
        what = dict((v, k) for k, v in SHAPE_CHOICES)[shape]
        sprite = None
        if shape == "sprite":
            if sprites is not None and len(sprites):
                sprite, source = sprites[0], "the first sprite of your last Generate run"
            else:
                sprite, source = self.studio.draw_sprite(model)
            what = f"the silhouette of {source}"
        try:
            toy = Toy(Mixture.shape(shape, sprite), pipe.schedule)
        except ValueError as err:  # a sprite with nothing drawn
            raise InputError(f"That sprite cannot be used: {err}.") from None
        paths = [toy.reverse(s, steps, n, seed) for s in samplers]
        noised = toy.forward_frames(n, [t], seed)[0]
        with self.studio.store.run() as folder:
            picture = folder / "map.png"
            draw_map(toy, paths, t, noised).savefig(picture, format="png")
            animation = render.save_gif(
                forward_frames(toy, n, seed), folder / "forward.gif", FRAME_MS
            )
        runs = ", ".join(f"{p.sampler} ({p.calls} calls)" for p in paths)
        status = (
            f"done: {what}, {n} points, seed {seed}, {steps} steps of {runs}; the field at "
            f"t = {t:.0f} of {T} ({pipe.schedule.kind} schedule)."
        )
        return {"picture": str(picture), "animation": animation, "status": status}

    def first_look(
        self, picture: Any, *args: Any, request: gr.Request | None = None
    ) -> dict[str, Any]:
        """A run at the tab's settings the first time it is opened; later, nothing."""
        return {} if picture else self.explore(*args, request=request)

    def build(self, shell: Shell, tab: gr.Tab) -> None:
        T = shell.default_pipe.schedule.T
        gr.Markdown(
            "Diffusion on a map: points instead of sprites, so that every sampler can be "
            "watched at work, step by step, against the exact answer."
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                self.shape = gr.Dropdown(SHAPE_CHOICES, value="ring", label="Shape")
                self.samplers = gr.CheckboxGroup(
                    list(SAMPLERS),
                    value=START_SAMPLERS,
                    label=f"Samplers (up to {TOY_MAX_SAMPLERS})",
                )
                self.steps = gr.Slider(1, T, value=START_STEPS, step=1, label="Steps")
                self.points = gr.Slider(
                    10, TOY_MAX_POINTS, value=TOY_POINTS, step=10, label="Points"
                )
                self.t = gr.Slider(
                    0, T, value=start_t(T), step=1, label="t of the field (first panel)"
                )
                self.seed = gr.Number(value=0, precision=None, label="Seed")
                self.run_btn = gr.Button("Run the samplers", variant="primary", elem_id="toy")
            with gr.Column(scale=2):
                self.status = gr.Markdown(elem_id="toy-status")
                self.picture = gr.Image(
                    label="Reverse paths",
                    show_label=False,
                    format="png",
                    interactive=False,
                    buttons=["download"],
                    elem_id="toy-picture",
                )
                gr.Markdown(EXPLAIN)
                self.animation = gr.Image(
                    label="The forward process",
                    show_label=False,
                    format="gif",
                    interactive=False,
                    buttons=["download"],
                    elem_id="toy-animation",
                    height=300,
                )
        outputs = {"picture": self.picture, "animation": self.animation, "status": self.status}
        inputs = [shell.model, shell.sprites, self.shape, self.samplers, self.steps]
        run = {
            "fn": shell.gpu(guarded(self.explore, outputs)),
            "inputs": [*inputs, self.points, self.t, self.seed],
            "outputs": list(outputs.values()),
            "concurrency_id": "sampling",
            "concurrency_limit": CONCURRENCY,
        }
        # On a phone the picture sits far below the button: bring it into view.
        self.run_btn.click(
            None, js=scroll_into_view("toy-status"), api_visibility="private", queue=False
        )
        self.run_btn.click(api_name="toy", **run)
        # Opening the tab shows the start settings at once, without a click; once only.
        first = {**run, "fn": shell.gpu(guarded(self.first_look, outputs))}
        tab.select(api_visibility="private", **{**first, "inputs": [self.picture, *run["inputs"]]})

    def on_model(self, pipe: SpritePipeline) -> dict:
        T = pipe.schedule.T
        return {
            self.steps: gr.update(maximum=T),
            self.t: gr.update(maximum=T, value=start_t(T)),
        }
