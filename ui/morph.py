"""The Morph tab: a smooth, looping morph between two (label, seed) sprites."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from diffusion import SAMPLERS, SpritePipeline, render
from diffusion.options import MAX_GUIDANCE

from .errors import InputError, as_sentence, guarded
from .limits import (
    CONCURRENCY,
    IMAGE_HEIGHT,
    MAX_FRAMES,
    MORPH_FRAME_MS,
    MORPH_FRAMES,
    STRIP_PX,
    UNCONDITIONAL,
)
from .run import (
    check_prompt,
    check_work,
    enlargement,
    parse_label,
    parse_seed,
    sampling_options,
    sheet,
    whole,
)
from .sessions import session_of
from .shell import Shell
from .studio import Studio, default_sampler, default_steps
from .widgets import negative_prompt_box, scroll_into_view, sprite_image


def deterministic_samplers() -> list[str]:
    """Samplers that can run without fresh noise (eta 0), as a smooth morph needs: its frames
    differ only by their start noise and label weights."""
    return [name for name, spec in SAMPLERS.items() if not spec.draws_noise(0.0)]


def morph_sampler(pipe: SpritePipeline) -> str:
    """The model's own sampler when a morph can use it, else the first one that can."""
    sampler = default_sampler(pipe)
    return sampler if sampler in deterministic_samplers() else deterministic_samplers()[0]


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
        negative_prompt: str | None = "",
        guidance_text: Any = None,
        request: gr.Request | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The morph's frames as a looping GIF (there and back) and a PNG strip; a text model
        also takes a negative prompt and the prompt's own guidance scale."""
        with self.studio.sessions.job(session_of(request)):
            pipe = self.studio.pipe(model)
            ends = [
                (parse_label(pipe, label_a), parse_seed(seed_a, "From seed")),
                (parse_label(pipe, label_b), parse_seed(seed_b, "To seed")),
            ]
            count = whole(frames, "Frames", 2, MAX_FRAMES)
            prompt = check_prompt(pipe, prompt)
            negative = check_prompt(pipe, negative_prompt)
            options = sampling_options(
                pipe, count, sampler, steps, guidance, prompt=prompt,
                guidance_text=guidance_text, negative_prompt=negative,
            )  # fmt: skip
            if options.sampler not in deterministic_samplers():
                raise InputError(
                    "A morph needs a deterministic sampler (one that can run without fresh "
                    f"noise): one of {', '.join(deterministic_samplers())}."
                )
            check_work(
                options.work(count),
                f"{options.calls():,} network calls × {count} frames",
                "Use fewer frames or steps.",
                what="morph",
            )
            what = f"{ends[0][0] or 'unconditional'} (seed {ends[0][1]}) → "
            what += f"{ends[1][0] or 'unconditional'} (seed {ends[1][1]})"
            if prompt:
                what = f'"{prompt}": {what}'
            if options.guidance_text is not None:
                what += f" · guidance label {options.guidance:g}, text {options.guidance_text:g}"
            if negative:
                what += f' · away from "{negative}"'
            yield {"status": f"morphing {what} in {count} frames…"}
            try:
                images = pipe.interpolate(
                    ends[0], ends[1], frames=count, sampler=options.sampler, steps=options.steps,
                    guidance=options.guidance, prompt=prompt, guidance_text=options.guidance_text,
                    negative_prompt=negative,
                )  # fmt: skip
            except ValueError as err:  # a check the options missed: the package's words
                raise InputError(as_sentence(err)) from None
            with self.studio.store.run() as folder:
                loop = [sheet(f) for f in images] + [sheet(f) for f in images[-2:0:-1]]
                gif = render.save_gif(
                    loop, folder / "morph.gif", frame_ms=MORPH_FRAME_MS, hold_ms=MORPH_FRAME_MS
                )
                strip = render.save_png(
                    render.grid(images, enlargement(images.shape[2], STRIP_PX), cols=count),
                    folder / "morph-strip.png",
                )
                # For a game: the frames at 1x, one row, tagged to play there and back.
                frames = render.save_sheet(
                    images, folder / "morph-sheet.png", count,
                    tags=[("morph", 0, count - 1, "pingpong")], frame_ms=MORPH_FRAME_MS,
                )  # fmt: skip
                yield {
                    "status": f"done: {what}, {count} frames · {options.sampler} · "
                    f"{options.steps} steps",
                    "gif": gif,
                    "strip": strip,
                    "files": [gif, strip, frames, frames.removesuffix(".png") + ".json"],
                }

    def on_sampler(self, sampler: str, model: str | None) -> dict:
        """A sampler picked by hand brings the model's steps for it."""
        if sampler not in SAMPLERS:
            return {}
        return {self.steps: default_steps(self.studio.pipe(model), sampler)}

    def build(self, shell: Shell, tab: gr.Tab) -> None:
        pipe0 = shell.default_pipe
        sampler0 = morph_sampler(pipe0)
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
                self.negative_prompt = negative_prompt_box(
                    "morph-negative-prompt", pipe0.supports_text
                )
                self.frames = gr.Slider(2, MAX_FRAMES, value=MORPH_FRAMES, step=1, label="Frames")
                with gr.Accordion("Options", open=False):
                    self.sampler = gr.Dropdown(
                        deterministic_samplers(), value=sampler0, label="Sampler"
                    )
                    self.steps = gr.Number(
                        value=default_steps(pipe0, sampler0), label="Steps", precision=None
                    )
                    self.guidance = gr.Number(
                        value=pipe0.defaults["guidance"], label="Guidance", precision=None
                    )
                    self.guidance_text = gr.Number(
                        value=None,
                        label="Text guidance",
                        info=f"Empty: one guidance for label and prompt; 0 to {MAX_GUIDANCE:g}: "
                        "the prompt's own",
                        precision=None,
                        visible=pipe0.supports_text,
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
        inputs += [self.negative_prompt, self.guidance_text]
        private = {"api_visibility": "private", "queue": False}
        self.run_btn.click(None, js=scroll_into_view("morph-status"), **private)
        self.run_btn.click(self.studio.click, **private).success(
            shell.gpu(guarded(self.morph, outputs)),
            inputs,
            list(outputs.values()),
            api_name="morph",
            concurrency_id="sampling",
            concurrency_limit=CONCURRENCY,
        )
        self.sampler.input(self.on_sampler, [self.sampler, shell.model], [self.steps], **private)

    def on_model(self, pipe: SpritePipeline) -> dict:
        labels = [*pipe.labels, UNCONDITIONAL]
        sampler = morph_sampler(pipe)
        return {
            self.label_a: gr.update(choices=labels, value=pipe.labels[0]),
            self.label_b: gr.update(choices=labels, value=pipe.labels[1 % len(pipe.labels)]),
            self.sampler: sampler,
            self.steps: default_steps(pipe, sampler),
            self.guidance: pipe.defaults["guidance"],
            self.prompt: gr.update(visible=pipe.supports_text, value=""),
            self.negative_prompt: gr.update(visible=pipe.supports_text, value=""),
            self.guidance_text: gr.update(visible=pipe.supports_text, value=None),
        }
