"""The Morph tab: a smooth, looping morph between two (label, seed) sprites."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from diffusion import SAMPLERS, SpritePipeline, render

from .context import (
    CONCURRENCY,
    IMAGE_HEIGHT,
    MAX_WORK,
    UNCONDITIONAL,
    InputError,
    Studio,
    check_seed,
    finite,
    guarded,
    session_of,
    sheet,
    sprite_image,
    whole,
)
from .generate import check_prompt
from .shell import Shell

MAX_FRAMES = 48
# Samplers whose result depends on the start noise only, as a smooth morph needs.
DETERMINISTIC = [name for name in SAMPLERS if name not in ("ddpm", "euler_ancestral")]


class MorphTab:
    """Controls, handlers and wiring of the Morph tab."""

    title = "Morph"

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def morph(
        self,
        label_a: str | None,
        seed_a: Any,
        label_b: str | None,
        seed_b: Any,
        frames: Any,
        sampler: str,
        steps: Any,
        guidance: Any,
        model: str | None = None,
        prompt: str | None = "",
        request: gr.Request | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The morph's frames as a looping GIF (there and back) and a PNG strip."""
        with self.studio.sessions.job(session_of(request)):
            pipe = self.studio.pipe(model)
            ends = []
            for label, seed in ((label_a, seed_a), (label_b, seed_b)):
                if label not in (*pipe.labels, UNCONDITIONAL, None, ""):
                    raise InputError(
                        f"Unknown label {label!r}. Choose one of: {', '.join(pipe.labels)}."
                    )
                ends.append(
                    (None if label in (UNCONDITIONAL, None, "") else label, check_seed(seed))
                )
            if sampler not in DETERMINISTIC:
                raise InputError(
                    f"A morph needs a deterministic sampler: one of {', '.join(DETERMINISTIC)}."
                )
            count = whole(frames, "Frames", 2, MAX_FRAMES)
            steps = whole(steps, f"Steps for {sampler}", 1, pipe.schedule.T)
            guidance = finite(guidance, "Guidance", 0.0, 10.0)
            prompt = check_prompt(pipe, prompt)
            work = count * steps * SAMPLERS[sampler].calls_per_step
            if work > MAX_WORK:
                raise InputError(
                    f"That morph needs {work:,.0f} sprite-steps (frames × steps); the limit is "
                    f"{MAX_WORK:,}. Use fewer frames or steps."
                )
            what = f"{ends[0][0] or 'unconditional'} (seed {ends[0][1]}) → "
            what += f"{ends[1][0] or 'unconditional'} (seed {ends[1][1]})"
            if prompt:
                what = f'"{prompt}": {what}'
            yield {"status": f"morphing {what} in {count} frames…"}
            try:
                images = pipe.interpolate(
                    ends[0], ends[1], frames=count, sampler=sampler, steps=steps,
                    guidance=guidance, prompt=prompt,
                )  # fmt: skip
            except ValueError as err:
                raise InputError(str(err)) from None
            with self.studio.store.run() as folder:
                loop = [sheet(f) for f in images] + [sheet(f) for f in images[-2:0:-1]]
                gif = render.save_gif(loop, folder / "morph.gif", frame_ms=90, hold_ms=90)
                strip = render.save_png(
                    render.grid(images, scale=4, cols=count), folder / "morph-strip.png"
                )
                yield {
                    "status": f"done: {what}, {count} frames · {sampler} · {steps} steps",
                    "gif": gif,
                    "strip": strip,
                    "files": [gif, strip],
                }

    def build(self, shell: Shell, tab: gr.Tab) -> None:
        pipe0 = shell.default_pipe
        d0 = pipe0.defaults
        labels = [*pipe0.labels, UNCONDITIONAL]
        gr.Markdown(
            "Two sprites, each a label and a seed; the frames in between blend their start "
            "noise (along the sphere) and their labels, so the picture changes a little at a time."
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                with gr.Row():
                    self.label_a = gr.Dropdown(labels, value=pipe0.labels[0], label="From label")
                    self.seed_a = gr.Number(value=1, label="From seed", precision=None)
                with gr.Row():
                    b = pipe0.labels[1 % len(pipe0.labels)]
                    self.label_b = gr.Dropdown(labels, value=b, label="To label")
                    self.seed_b = gr.Number(value=2, label="To seed", precision=None)
                self.prompt = gr.Textbox(
                    "",
                    label="Prompt for every frame (optional)",
                    placeholder="e.g. green slime",
                    max_lines=1,
                    visible=pipe0.supports_text,
                    elem_id="morph-prompt",
                )
                self.frames = gr.Slider(2, MAX_FRAMES, value=16, step=1, label="Frames")
                sampler0 = d0["sampler"] if d0["sampler"] in DETERMINISTIC else "ddim"
                with gr.Accordion("Options", open=False):
                    self.sampler = gr.Dropdown(DETERMINISTIC, value=sampler0, label="Sampler")
                    self.steps = gr.Number(value=d0["steps"], label="Steps", precision=None)
                    self.guidance = gr.Number(
                        value=d0["guidance"], label="Guidance", precision=None
                    )
                self.run_btn = gr.Button("Morph", variant="primary", elem_id="morph")
            with gr.Column(scale=2):
                self.status = gr.Markdown("Pick two sprites.", elem_id="morph-status")
                self.gif = sprite_image(
                    "Morph (looping GIF)", type="filepath", height=IMAGE_HEIGHT, elem_id="morph-gif"
                )
                self.strip = sprite_image("Frames", type="filepath", elem_id="morph-strip")
                self.files = gr.File(label="Downloads", file_count="multiple")
        outputs = {"status": self.status, "gif": self.gif, "strip": self.strip, "files": self.files}
        inputs = [self.label_a, self.seed_a, self.label_b, self.seed_b, self.frames]
        inputs += [self.sampler, self.steps, self.guidance, shell.model, self.prompt]
        self.run_btn.click(self.studio.click, api_visibility="private", queue=False).success(
            shell.gpu(guarded(self.morph, outputs)),
            inputs,
            list(outputs.values()),
            api_name="morph",
            concurrency_id="sampling",
            concurrency_limit=CONCURRENCY,
        )

    def on_model(self, pipe: SpritePipeline) -> dict:
        labels = [*pipe.labels, UNCONDITIONAL]
        return {
            self.label_a: gr.update(choices=labels, value=pipe.labels[0]),
            self.label_b: gr.update(choices=labels, value=pipe.labels[1 % len(pipe.labels)]),
            self.steps: pipe.defaults["steps"],
            self.guidance: pipe.defaults["guidance"],
            self.prompt: gr.update(visible=pipe.supports_text, value=""),
        }
