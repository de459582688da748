"""The Guidance tab: classifier-free guidance taken apart, step by step, for one sprite: what
the model predicts with the label and without it, and the push between them that the guidance
scale multiplies (``SpritePipeline.stream(branches=True)``)."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
from matplotlib.figure import Figure

from diffusion import SpritePipeline, render
from diffusion.options import MAX_GUIDANCE
from diffusion.pipeline import Branches

from .errors import InputError, guarded
from .limits import CONCURRENCY
from .run import validate_request, whole
from .shell import Shell
from .studio import Studio, default_sampler, default_steps

# Two by two panels: each picture readable on a phone, the two pictures side by side on a desktop.
FIGURE_IN, DPI = (5.4, 5.6), 100
ENLARGE = 8  # a 16 px sprite drawn 128 px wide inside its panel
DIVERGING = "RdBu_r"  # red above zero, blue below, white at zero


def steps_of(pipe: SpritePipeline) -> tuple[str, int]:
    """The sampler the view runs, the model's own, and its steps on this model."""
    sampler = default_sampler(pipe)
    return sampler, default_steps(pipe, sampler)


def start_step(steps: int) -> int:
    """Where the step slider starts: a third of the way, where the label has begun to tell."""
    return max(1, steps // 3)


def picture(images: np.ndarray) -> np.ndarray:
    """One sprite enlarged with hard pixel edges, over a checkerboard where it is clear."""
    return np.asarray(render.checkerboard(render.grid(images[:1], ENLARGE, gap=0)))


def x0_figure(parts: Branches, label: str, guidance: float) -> Figure:
    """The noisy input and the three clean sprites it implies: without, with, guided."""
    fig = Figure(figsize=FIGURE_IN, dpi=DPI, layout="constrained")
    titles = [
        "noisy input x_t",
        "x̂₀ without the label",
        f"x̂₀ with “{label}”",
        f"x̂₀ guided (scale {guidance:g})",
    ]
    for i, (title, images) in enumerate(
        zip(titles, [parts.x, parts.x0_uncond, parts.x0_cond, parts.x0], strict=True), start=1
    ):
        ax = fig.add_subplot(2, 2, i)
        ax.imshow(picture(images), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    return fig


def eps_figure(parts: Branches, label: str, guidance: float) -> Figure:
    """The noise estimates as heat maps (mean over the colour channels): with and without the
    label on one diverging scale; below, their difference and the guidance, g times it, on
    another, smaller one."""
    fig = Figure(figsize=FIGURE_IN, dpi=DPI, layout="constrained")
    maps = [parts.eps_uncond, parts.eps_cond, parts.difference, parts.guidance_term]
    shown = [m[0].mean(-1) for m in maps]
    titles = [
        "ε̂ without the label",
        f"ε̂ with “{label}”",
        "with − without",
        f"guidance: {guidance:g} × (with − without)",
    ]
    axes = [fig.add_subplot(2, 2, i) for i in range(1, 5)]
    for row in (slice(0, 2), slice(2, 4)):
        limit = max(float(np.abs(m).max()) for m in shown[row]) or 1.0
        for ax, title, values in zip(axes[row], titles[row], shown[row], strict=True):
            image = ax.imshow(
                values, cmap=DIVERGING, vmin=-limit, vmax=limit, interpolation="nearest"
            )
            ax.set_title(title, fontsize=10)
            ax.set_axis_off()
        fig.colorbar(image, ax=axes[row], shrink=0.9, pad=0.02)
    return fig


class GuidanceTab:
    """Controls, handlers and wiring of the Guidance tab."""

    title = "Guidance"

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def show(
        self,
        model: str | None,
        label: str | None,
        guidance: Any,
        step: Any,
        seed: Any,
        request: gr.Request | None = None,
    ) -> dict[str, Any]:
        """One sprite run to ``step`` with guidance taken apart: the x0 and the eps pictures.
        (``request`` tells ``guarded`` whether an API client or the page asked.)"""
        pipe = self.studio.pipe(model)
        if not label:
            raise InputError(
                "Pick a label: guidance pushes towards it, so without one there is nothing to "
                "take apart."
            )
        sampler, steps = steps_of(pipe)
        request = validate_request(pipe, label, sampler, steps, guidance, seed, 1)
        at = whole(step, "Step", 1, request.steps)
        # Guidance at every step, whatever the model's guidance_sigma_min: the tab shows what
        # the scale does at the step picked.
        run = {**request.stream_options(), "guidance_sigma_min": 0.0}
        for frame in pipe.stream(**run, branches=True):
            if frame.step == at:
                break
        g = request.guidance
        with self.studio.store.run() as folder:
            x0_path, eps_path = folder / "x0.png", folder / "eps.png"
            x0_figure(frame.branches, label, g).savefig(x0_path, format="png")
            eps_figure(frame.branches, label, g).savefig(eps_path, format="png")
        caption = (
            f"**Step {at} of {request.steps}** ({request.sampler}, seed {request.seed}). "
            f"The sprites: the noisy one this step starts from, and the clean sprite the model "
            f"predicts from it without the label, with the label “{label}”, and guided: the "
            f"prediction without the label pushed {g:g} times the way from *without* to "
            f"*with*. The heat maps: the noise the model sees in the picture, without and "
            f"with the label (red above zero, blue below; the mean over the colour channels), "
            f"then their difference and the guidance, {g:g} × (with − without), on a smaller "
            f"scale: what the guided step adds to the prediction without the label. Scale 1 "
            f"is the label alone, 0 ignores it, and above 1 exaggerates it."
        )
        return {"x0": str(x0_path), "eps": str(eps_path), "caption": caption}

    def first_look(
        self, shown: Any, *args: Any, request: gr.Request | None = None
    ) -> dict[str, Any]:
        """The view at its start settings the first time the tab is opened; later, nothing."""
        return {} if shown else self.show(*args, request=request)

    def build(self, shell: Shell, tab: gr.Tab) -> None:
        pipe0 = shell.default_pipe
        _, steps = steps_of(pipe0)
        gr.Markdown(
            "Classifier-free guidance runs the model twice at every step, with the label and "
            "without it, and pushes the result further along the difference. Here are both, "
            "and the push, for one sprite."
        )
        with gr.Row():
            self.label = gr.Dropdown(pipe0.labels, value=pipe0.labels[0], label="Label")
            self.guidance = gr.Slider(
                0, MAX_GUIDANCE, value=pipe0.defaults["guidance"], step=0.5, label="Guidance scale"
            )
            self.seed = gr.Number(value=0, precision=None, label="Seed", min_width=100)
        self.step = gr.Slider(
            1, steps, value=start_step(steps), step=1, label="Step", elem_id="guidance-step"
        )
        self.show_btn = gr.Button("Show", variant="primary", elem_id="guidance")
        with gr.Row():
            self.x0 = gr.Image(
                label="Predicted clean sprites",
                show_label=False,
                format="png",
                interactive=False,
                buttons=["download"],
                elem_id="guidance-x0",
                min_width=300,
            )
            self.eps = gr.Image(
                label="Predicted noise",
                show_label=False,
                format="png",
                interactive=False,
                buttons=["download"],
                elem_id="guidance-eps",
                min_width=300,
            )
        self.caption = gr.Markdown(elem_id="guidance-caption")
        outputs = {"x0": self.x0, "eps": self.eps, "caption": self.caption}
        show = {
            "fn": shell.gpu(guarded(self.show, outputs, status="caption")),
            "inputs": [shell.model, self.label, self.guidance, self.step, self.seed],
            "outputs": list(outputs.values()),
            "concurrency_id": "sampling",
            "concurrency_limit": CONCURRENCY,
        }
        self.show_btn.click(api_name="guidance", **show)
        for control in (self.label, self.guidance, self.step):
            control.change(api_visibility="private", trigger_mode="always_last", **show)
        self.seed.submit(api_visibility="private", **show)
        first = {
            **show,
            "fn": shell.gpu(guarded(self.first_look, outputs, status="caption")),
            "inputs": [self.x0, *show["inputs"]],
        }
        tab.select(api_visibility="private", **first)

    def on_model(self, pipe: SpritePipeline) -> dict:
        _, steps = steps_of(pipe)
        return {
            self.label: gr.update(choices=pipe.labels, value=pipe.labels[0]),
            self.guidance: pipe.defaults["guidance"],
            self.step: gr.update(maximum=steps, value=start_step(steps)),
        }
