"""The Edit tab: variations of a sprite (SDEdit), and repainting a region you brush (RePaint)."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np
from gradio.components.base import server
from gradio.components.image_editor import AcceptBlobs
from gradio.data_classes import FileData
from PIL import Image

from diffusion import SAMPLERS, SpritePipeline, render
from diffusion.options import MAX_GUIDANCE, MAX_RERANK, MAX_RESAMPLE, check_resample

from .errors import InputError, guarded, refused, shorten
from .limits import (
    CONCURRENCY,
    EDITOR_LAYERS,
    EDITOR_PENDING_BYTES,
    GIF_MS,
    IMAGE_HEIGHT,
    MAX_BATCH,
    MIN_STRENGTH,
    SMALL_BATCH,
    UNCONDITIONAL,
    UPLOAD_TYPES,
)
from .run import (
    OUTPUTS,
    PROMPT_ALONE,
    finite,
    fit_sampler,
    prompt_label,
    run_on_page,
    to_whole,
    validate_request,
)
from .sessions import session_of
from .shell import Shell
from .studio import UNREADABLE, Studio, default_palette, default_sampler, open_upload
from .widgets import negative_prompt_box, scroll_into_view, sprite_image

CANVAS = 256  # px: the sprite enlarged on the canvas, so that a brush can pick out one pixel
BRUSH = gr.Brush(default_size=12, colors=["#ff00ff"], color_mode="fixed")
KEPT_OFF_PALETTE = "palette raw: snapping would change pixels you left alone"


def checked_editor(**kwargs: Any) -> gr.ImageEditor:
    """gr.ImageEditor(**kwargs) whose pictures are checked as an upload is (bytes, then pixels
    from the header: ``ui.studio.open_upload``) before Gradio decodes them, whichever way they
    come: the page, gradio_client or raw HTTP. The pictures a page sends ahead of a run wait in
    memory (``accept_blobs``), within EDITOR_LAYERS layers and EDITOR_PENDING_BYTES in all.

    The two methods are replaced on the instance rather than in a subclass: Gradio writes a
    ``.pyi`` stub beside the source of every component subclass it sees defined."""
    editor = gr.ImageEditor(**kwargs)
    editor.convert_and_format_image = types.MethodType(_checked_picture, editor)
    editor.accept_blobs = types.MethodType(_bounded_blobs, editor)
    return editor


def _checked_picture(
    editor: gr.ImageEditor, file: FileData | bytes | None, flatten_on_white: bool = False
) -> Any:
    if file is None:
        return None
    open_upload(file.path if isinstance(file, FileData) else bytes(file)).close()
    try:
        return gr.ImageEditor.convert_and_format_image(editor, file, flatten_on_white)
    except (OSError, ValueError, SyntaxError):  # a valid header over truncated data
        raise InputError(UNREADABLE) from None


@server
def _bounded_blobs(editor: gr.ImageEditor, data: AcceptBlobs) -> None:
    index = data.data.get("index")
    if index not in (None, "", "null") and to_whole(index) not in range(EDITOR_LAYERS):
        raise InputError(f"An edit has at most {EDITOR_LAYERS} layers (got {shorten(index)}).")
    for _, blob in data.files:
        open_upload(blob).close()
    gr.ImageEditor.accept_blobs(editor, data)
    # Oldest first (dicts keep their order): the pictures of edits that never ran go first.
    while sum(_blob_bytes(b) for b in editor.blob_storage.values()) > EDITOR_PENDING_BYTES:
        editor.blob_storage.pop(next(iter(editor.blob_storage)))


def _blob_bytes(blobs: Any) -> int:
    files = [blobs.background, blobs.composite, *blobs.layers]
    return sum(len(f) for f in files if isinstance(f, (bytes, bytearray)))


def canvas_value(sprite: np.ndarray) -> dict[str, Any]:
    """The editor's value for a sprite: enlarged nearest-neighbour, nothing painted yet."""
    scale = CANVAS // sprite.shape[0]
    return {"background": render.grid(sprite, scale), "layers": [], "composite": None}


def repaint_palette(
    pipe: SpritePipeline, sprite: np.ndarray, palette: render.Palette
) -> render.Palette:
    """The palette stage a repaint of ``sprite`` may take: a repaint keeps every pixel left
    alone exactly, so only the training palette (which keeps every colour a sprite has
    exactly) and only when the sprite is already in it; None (raw) otherwise."""
    if palette != "data":  # a colour count looks at the whole sprite, kept pixels included
        return None
    snapped = render.apply_palette(sprite[None], palette, pipe.palette)[0]
    return palette if np.array_equal(snapped, sprite) else None


def parse_resample(value: Any) -> int:
    """RePaint's tries per step, as ``diffusion.options.check_resample`` accepts them."""
    number = to_whole(value)
    try:
        check_resample(number)
    except ValueError:
        raise refused("Resampling", f"a whole number from 1 to {MAX_RESAMPLE}", value) from None
    return number


def sampler_note(sampler: str, note: str = "") -> str:
    """The sampler's description, then ``note`` (what picking it changed)."""
    spec = SAMPLERS.get(sampler)
    return " ".join(filter(None, [spec.description if spec else "", note]))


class EditTab:
    """Controls, handlers and wiring of the Edit tab."""

    title = "Edit"

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    # -- handlers -----------------------------------------------------------------------------

    def read_canvas(
        self, editor: dict[str, Any] | None, resolution: int, alpha: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The editor's value -> (sprite uint8 (r, r, 3), or 4 channels with ``alpha``, and the
        repaint mask bool (r, r) or None)."""
        background = (editor or {}).get("background")
        if background is None:
            raise InputError("Start from a sprite: draw a new one, use your last one, or upload.")
        sprite = render.to_sprite(Image.fromarray(np.asarray(background)), resolution, alpha)
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
        negative_prompt: str | None = "",
        guidance_text: Any = None,
        rerank: Any = 1,
        request: gr.Request | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream a variation (no mask) or a repaint (where brushed) of the canvas sprite,
        finished with the model's palette as Generate's sprites are; a text model also takes
        a negative prompt, the prompt's own guidance scale and best of N."""
        session = session_of(request)
        with self.studio.sessions.job(session) as clicked:
            pipe = self.studio.pipe(model)
            sprite, mask = self.read_canvas(editor, pipe.resolution, pipe.rgba)
            edit: dict[str, Any] = {"strength": finite(strength, "Strength", MIN_STRENGTH, 1.0)}
            palette, notes = default_palette(pipe), ()
            tries = 1
            if mask is not None:
                tries = parse_resample(resample)
                edit.update(mask=mask, resample=tries)
                kept = repaint_palette(pipe, sprite, palette)
                if kept != palette:
                    palette, notes = kept, (KEPT_OFF_PALETTE,)
            req = validate_request(
                pipe, label, sampler, steps, guidance, seed, n,
                palette=render.palette_name(palette), prompt=prompt, resample=tries,
                guidance_text=guidance_text, negative_prompt=negative_prompt, rerank=rerank,
            )  # fmt: skip
            req = dataclasses.replace(req, edit={"image": sprite, **edit}, notes=notes)
            yield from run_on_page(self.studio, pipe, req, False, GIF_MS, session, clicked)

    def new_sprite(self, model: str | None, label: str | None) -> dict[str, Any]:
        sprite, info = self.studio.draw_sprite(model, label)
        return {"editor": canvas_value(sprite), "status": info}

    def use_last(self, sprites: np.ndarray | None) -> dict[str, Any]:
        sprite = self.studio.last_sprite(sprites)
        return {"editor": canvas_value(sprite), "status": "your last generated sprite"}

    def use_upload(self, model: str | None, path: str | None) -> dict[str, Any]:
        """An uploaded file onto the canvas, saying how it was fitted; a file that is no
        picture is refused and the canvas keeps its sprite."""
        sprite, note = self.studio.upload(model, path)
        return {"editor": canvas_value(sprite), "status": note}

    def on_sampler(self, sampler: str, model: str | None, n: Any, resample: Any) -> dict:
        """A sampler picked by hand brings the model's steps for it, and a batch they can run."""
        if sampler not in SAMPLERS:
            return {}
        steps, batch, note = fit_sampler(self.studio.pipe(model), sampler, n, resample)
        return {
            self.steps: steps,
            self.n: batch,
            self.sampler: gr.update(info=sampler_note(sampler, note)),
        }

    def on_prompt(self, prompt: str, typed: str, label: str | None, model: str | None) -> dict:
        """As on Generate: a prompt typed into an empty box replaces the starting label."""
        switched = prompt_label(self.studio.pipe(model), prompt, typed, label)
        update = gr.update(value=switched, info=PROMPT_ALONE) if switched else gr.update()
        return {self.label: update, self.typed: prompt}

    # -- the layout ---------------------------------------------------------------------------

    def build(self, shell: Shell, tab: gr.Tab) -> None:
        pipe0 = shell.default_pipe
        sampler0 = default_sampler(pipe0)
        steps0, n0, _ = fit_sampler(pipe0, sampler0, SMALL_BATCH)
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
                    # Uploads go through the app's checks (as on Forward), not the editor's own
                    # drop zone, which empties the canvas for a file that is no picture.
                    self.upload = gr.UploadButton(
                        "Upload…", size="sm", file_types=UPLOAD_TYPES, elem_id="edit-upload"
                    )
                gr.Markdown("**Your sprite** (brush the region to repaint)")
                self.editor = checked_editor(
                    value=None,
                    label="Sprite (brush the region to repaint)",
                    show_label=False,
                    type="numpy",
                    image_mode="RGBA",
                    sources=None,
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
                self.typed = gr.State("")  # the prompt before the last keystroke
                self.negative_prompt = negative_prompt_box(
                    "edit-negative-prompt", pipe0.supports_text
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
                    self.sampler = gr.Dropdown(
                        pipe0.samplers,
                        value=sampler0,
                        label="Sampler",
                        info=sampler_note(sampler0),
                    )
                    self.steps = gr.Number(value=steps0, label="Steps", precision=None)
                    self.guidance = gr.Number(
                        value=pipe0.defaults["guidance"], label="Guidance", precision=None
                    )
                    with gr.Column(visible=pipe0.supports_text) as self.text_options:
                        self.guidance_text = gr.Number(
                            value=None,
                            label="Text guidance",
                            info=f"Empty: one guidance for label and prompt; 0 to "
                            f"{MAX_GUIDANCE:g}: the prompt's own",
                            precision=None,
                        )
                        self.rerank = gr.Slider(
                            1, MAX_RERANK, value=1, step=1, label="Best of N",
                            info="N candidates each; SpriteCLIP keeps the closest to the prompt",
                        )  # fmt: skip
                    self.seed = gr.Number(value=0, label="Seed", precision=None)
                    self.n = gr.Slider(1, MAX_BATCH, value=n0, step=1, label="Batch size")
                    self.resample = gr.Slider(
                        1,
                        MAX_RESAMPLE,
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
        components = [self.live, self.status, self.gif, self.sheet, self.files, self.seed]
        outputs = dict(zip(OUTPUTS, [*components, shell.sprites], strict=True))
        inputs = [self.editor, self.label, self.strength, self.sampler, self.steps]
        inputs += [self.guidance, self.seed, self.n, self.resample, shell.model, self.prompt]
        inputs += [self.negative_prompt, self.guidance_text, self.rerank]
        private = {"api_visibility": "private", "queue": False}
        self.run_btn.click(None, js=scroll_into_view("edit-status"), **private)
        self.run_btn.click(studio.click, **private).success(
            shell.gpu(guarded(self.edit, outputs)),
            inputs,
            list(outputs.values()),
            api_name="edit",
            api_description="Variations (strength) or a repaint (brushed mask) of a sprite.",
            concurrency_id="sampling",
            concurrency_limit=CONCURRENCY,
            show_progress="minimal",
        )
        self.stop_btn.click(studio.stop, **private)
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
        self.upload.upload(
            guarded(self.use_upload, source),
            [shell.model, self.upload],
            list(source.values()),
            api_visibility="private",
            # On a busy server the editor's "processing" overlay could outlive a refused upload
            # (Gradio 6.31), hiding the sprite it kept; the status line shows the wait instead.
            show_progress_on=self.status,
        )
        self.sampler.input(
            self.on_sampler,
            [self.sampler, shell.model, self.n, self.resample],
            [self.steps, self.n, self.sampler],
            **private,
        )
        self.prompt.input(
            self.on_prompt,
            [self.prompt, self.typed, self.label, shell.model],
            [self.label, self.typed],
            **private,
        )

    def on_model(self, pipe: SpritePipeline) -> dict:
        sampler = default_sampler(pipe)
        steps, n, note = fit_sampler(pipe, sampler, SMALL_BATCH)
        return {
            self.label: gr.update(
                choices=[*pipe.labels, UNCONDITIONAL], value=pipe.labels[0], info=""
            ),
            self.sampler: gr.update(
                choices=pipe.samplers, value=sampler, info=sampler_note(sampler, note)
            ),
            self.steps: steps,
            self.n: n,
            self.guidance: pipe.defaults["guidance"],
            self.editor: None,  # a sprite from another model may have another size
            self.prompt: gr.update(visible=pipe.supports_text, value=""),
            self.typed: "",
            self.negative_prompt: gr.update(visible=pipe.supports_text, value=""),
            self.text_options: gr.update(visible=pipe.supports_text),
            self.guidance_text: None,
            self.rerank: 1,
        }
