"""The Edit tab: variations of a sprite (SDEdit), and repainting a region you brush (RePaint)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from diffusion import SpritePipeline, render

from .context import (
    CONCURRENCY,
    IMAGE_HEIGHT,
    MAX_BATCH,
    UNCONDITIONAL,
    InputError,
    Studio,
    finite,
    guarded,
    session_of,
    sprite_image,
    whole,
)
from .generate import run_on_page, validate_request
from .shell import Shell

CANVAS = 256  # px: the sprite enlarged on the canvas, so that a brush can pick out one pixel
BRUSH = gr.Brush(default_size=12, colors=["#ff00ff"], color_mode="fixed")


def canvas_value(sprite: np.ndarray) -> dict[str, Any]:
    """The editor's value for a sprite: enlarged nearest-neighbour, nothing painted yet."""
    scale = CANVAS // sprite.shape[0]
    return {"background": render.grid(sprite, scale), "layers": [], "composite": None}


class EditTab:
    """Controls, handlers and wiring of the Edit tab."""

    title = "Edit"

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    # -- handlers -----------------------------------------------------------------------------

    def read_canvas(
        self, editor: dict[str, Any] | None, resolution: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The editor's value -> (sprite uint8 (r, r, 3), repaint mask bool (r, r) or None)."""
        background = (editor or {}).get("background")
        if background is None:
            raise InputError("Start from a sprite: draw a new one, use your last one, or upload.")
        sprite = render.to_sprite(Image.fromarray(np.asarray(background)), resolution)
        mask = np.zeros((resolution, resolution), bool)
        for layer in editor.get("layers") or []:
            layer = np.asarray(layer)
            if layer.ndim == 3 and layer.shape[-1] == 4:
                mask |= render.mask_from_strokes(layer[..., 3], resolution)
        return sprite, (mask if mask.any() else None)

    def edit(
        self,
        editor: dict[str, Any] | None,
        label: str | None,
        strength: Any,
        sampler: str,
        steps: Any,
        guidance: Any,
        seed: Any,
        n: Any,
        resample: Any = 1,
        model: str | None = None,
        prompt: str | None = "",
        request: gr.Request | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream a variation (no mask) or a repaint (where brushed) of the canvas sprite."""
        session = session_of(request)
        with self.studio.sessions.job(session) as clicked:
            pipe = self.studio.pipe(model)
            sprite, mask = self.read_canvas(editor, pipe.resolution)
            req = validate_request(pipe, label, sampler, steps, guidance, seed, n, prompt=prompt)
            edit: dict[str, Any] = {
                "image": sprite,
                "strength": finite(strength, "Strength", 0.01, 1.0),
            }
            if mask is not None:
                edit["mask"] = mask
                edit["resample"] = whole(resample, "Resampling", 1, 10)
            req = dataclasses.replace(req, edit=edit)
            yield from run_on_page(self.studio, pipe, req, False, 80, session, clicked)

    def new_sprite(self, model: str | None, label: str | None) -> dict[str, Any]:
        sprite, info = self.studio.draw_sprite(model, label)
        return {"editor": canvas_value(sprite), "status": info}

    def use_last(self, sprites: np.ndarray | None) -> dict[str, Any]:
        sprite = self.studio.last_sprite(sprites)
        return {"editor": canvas_value(sprite), "status": "your last generated sprite"}

    # -- the layout ---------------------------------------------------------------------------

    def build(self, shell: Shell, tab: gr.Tab) -> None:
        pipe0 = shell.default_pipe
        d0 = pipe0.defaults
        gr.Markdown(
            "Start from a sprite, then either press **Edit** for variations of it, or first "
            "brush over the part to repaint: the model redraws only there, and every pixel you "
            "left alone stays exactly as it was."
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                with gr.Row():
                    self.new_btn = gr.Button("🎲 New sprite", size="sm")
                    self.last_btn = gr.Button("My last sprite", size="sm")
                gr.Markdown("**Your sprite** (upload one; brush the region to repaint)")
                self.editor = gr.ImageEditor(
                    value=None,
                    label="Sprite (upload, or brush the region to repaint)",
                    show_label=False,
                    type="numpy",
                    image_mode="RGBA",
                    sources=["upload"],
                    brush=BRUSH,
                    eraser=gr.Eraser(default_size=12),
                    transforms=(),
                    layers=False,
                    canvas_size=(CANVAS, CANVAS),
                    fixed_canvas=True,
                    elem_id="editor",
                    elem_classes="pixel",
                )
                self.label = gr.Dropdown(
                    [*pipe0.labels, UNCONDITIONAL], value=pipe0.labels[0], label="Label"
                )
                self.prompt = gr.Textbox(
                    "",
                    label="Prompt (optional)",
                    placeholder="e.g. blue potion",
                    max_lines=1,
                    visible=pipe0.supports_text,
                    elem_id="edit-prompt",
                )
                self.strength = gr.Slider(
                    0.05,
                    1.0,
                    value=0.6,
                    step=0.05,
                    label="Strength",
                    info="How far towards noise the sprite goes first: low keeps it close, 1 "
                    "redraws it (inside the brushed region, when there is one)",
                )
                with gr.Row():
                    self.run_btn = gr.Button("Edit", variant="primary", elem_id="edit")
                    self.stop_btn = gr.Button("Stop", variant="stop")
                with gr.Accordion("Options", open=False):
                    self.sampler = gr.Dropdown(pipe0.samplers, value=d0["sampler"], label="Sampler")
                    self.steps = gr.Number(value=d0["steps"], label="Steps", precision=None)
                    self.guidance = gr.Number(
                        value=d0["guidance"], label="Guidance", precision=None
                    )
                    self.seed = gr.Number(value=0, label="Seed", precision=None)
                    self.n = gr.Slider(1, MAX_BATCH, value=4, step=1, label="Batch size")
                    self.resample = gr.Slider(
                        1,
                        10,
                        value=1,
                        step=1,
                        label="Resampling (repaint only)",
                        info="RePaint's jump-back: each step taken this often; smoother seams, "
                        "slower",
                    )
            with gr.Column(scale=2):
                self.status = gr.Markdown("Pick a sprite to edit.", elem_id="edit-status")
                with gr.Row():
                    self.live = sprite_image(
                        "Result (live while drawing)", format="png", height=IMAGE_HEIGHT,
                        elem_id="edit-live",
                    )  # fmt: skip
                    self.gif = sprite_image(
                        "Denoising animation (GIF)", type="filepath", height=IMAGE_HEIGHT,
                        elem_id="edit-gif",
                    )  # fmt: skip
                self.sheet = gr.Image(type="filepath", visible=False)
                self.files = gr.File(label="Downloads", file_count="multiple")
        self.wire(shell)

    def wire(self, shell: Shell) -> None:
        studio = self.studio
        outputs = {
            "live": self.live,
            "status": self.status,
            "gif": self.gif,
            "sheet": self.sheet,
            "files": self.files,
            "seed": self.seed,
            "sprites": shell.sprites,
        }
        inputs = [self.editor, self.label, self.strength, self.sampler, self.steps]
        inputs += [self.guidance, self.seed, self.n, self.resample, shell.model, self.prompt]
        self.run_btn.click(studio.click, api_visibility="private", queue=False).success(
            shell.gpu(guarded(self.edit, outputs)),
            inputs,
            list(outputs.values()),
            api_name="edit",
            api_description="Variations (strength) or a repaint (brushed mask) of a sprite.",
            concurrency_id="sampling",
            concurrency_limit=CONCURRENCY,
            show_progress="minimal",
        )
        self.stop_btn.click(studio.stop, api_visibility="private", queue=False)
        source = {"editor": self.editor, "status": self.status}
        self.new_btn.click(
            shell.gpu(guarded(self.new_sprite, source)),
            [shell.model, self.label],
            list(source.values()),
            api_visibility="private",
            concurrency_id="sampling",
            concurrency_limit=CONCURRENCY,
        )
        self.last_btn.click(
            guarded(self.use_last, source),
            shell.sprites,
            list(source.values()),
            api_visibility="private",
        )

    def on_model(self, pipe: SpritePipeline) -> dict:
        d = pipe.defaults
        return {
            self.label: gr.update(choices=[*pipe.labels, UNCONDITIONAL], value=pipe.labels[0]),
            self.sampler: gr.update(choices=pipe.samplers, value=d["sampler"]),
            self.steps: d["steps"],
            self.guidance: d["guidance"],
            self.editor: None,  # a sprite from another model may have another size
            self.prompt: gr.update(visible=pipe.supports_text, value=""),
        }
