"""The Generate tab: pick a label and a sampler, watch the denoising live, download GIF and PNG."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
import numpy as np

from diffusion import SAMPLERS, SpritePipeline, palettes, render
from diffusion.options import MAX_GUIDANCE, MAX_RERANK

from .errors import InputError, guarded
from .limits import (
    BACKGROUND_CHOICES,
    CONCURRENCY,
    DEFAULT_BATCH,
    EXPORT_CHOICES,
    EXPORT_DEFAULT,
    GIF_MS,
    GIF_MS_RANGE,
    IMAGE_HEIGHT,
    MAX_BATCH,
    OUTLINE_CHOICES,
    PALETTE_CHOICES,
    PALETTE_FILE,
    SAMPLING_QUEUE,
    TRANSPARENT,
    UNCONDITIONAL,
)
from .run import (
    LATENT,
    OUTPUTS,
    PROMPT_ALONE,
    fit_sampler,
    prompt_label,
    run_on_page,
    validate_request,
    whole,
)
from .sessions import session_of
from .shell import Shell
from .studio import Studio, default_palette, default_sampler, default_steps, random_seed
from .widgets import negative_prompt_box, scroll_into_view, sprite_image

PROMPT_EXAMPLES = [
    ("red potion", "food"),
    ("skeleton warrior", "hero"),
    ("fire ant", "creature"),
    ("golden sword", "weapon_spell"),
    ("dark snowy oak", "terrain"),
]
# Example runs: (label, sampler or None for the model's own, seed, batch); each takes the
# model's steps for its sampler and its guidance, and a batch cut to what the steps allow.
EXAMPLES = [
    ("hero", None, 0, DEFAULT_BATCH),
    ("creature", "ddim", 42, 9),
    ("food", "euler_ancestral", 7, 4),
    ("weapon_spell", "heun", 123, 16),
]
PREVIEW_CHOICES = [("noisy state x_t", "noisy"), ("predicted clean image x̂₀", "clean")]


def mix_text(labels: Sequence[str], weights: Sequence[float]) -> str:
    """The mix string for per-label slider weights (zero weights left out)."""
    return ", ".join(f"{name}:{w:g}" for name, w in zip(labels, weights, strict=True) if w > 0)


def sampler_info(sampler: str, note: str = "") -> str:
    """What the sampler is, and ``note`` (what picking it changed) below."""
    spec = SAMPLERS.get(sampler)
    text = f"*{spec.description}*" if spec else ""
    return f"{text}\n\n**{note}**" if note else text


def show_clean(preview: str) -> bool:
    """Whether the preview shows the model's guess x̂₀ ("clean") rather than x_t ("noisy")."""
    if preview not in ("noisy", "clean"):
        raise InputError("Preview must be 'noisy' (x_t) or 'clean' (predicted x̂₀).")
    return preview == "clean"


def latent_note(pipe: SpritePipeline) -> str:
    """What the latent view shows, for a latent model ("" for a pixel model)."""
    if not pipe.latent:
        return ""
    c, h, w = pipe.state_shape
    span = f"{render.LATENT_SPAN:g}"
    return (
        f"The first sprite's latent at this step, {c} channels of {h}×{w}: black −{span}, "
        f"grey 0, white +{span}. The network only ever sees this; the decoder paints the "
        "sprites from it."
    )


def example_rows(pipe: SpritePipeline) -> list[list]:
    """The example runs for ``pipe``: the model's own settings, and a few other samplers."""
    guidance = pipe.defaults["guidance"]
    known = {label for label, *_ in EXAMPLES} <= set(pipe.labels)
    examples = EXAMPLES if known else EXAMPLES[:1]
    rows = []
    for label, sampler, seed, n in examples:
        sampler = sampler or default_sampler(pipe)
        if sampler not in SAMPLERS:
            continue
        steps, batch, _ = fit_sampler(pipe, sampler, n)
        rows.append([label if label in pipe.labels else pipe.labels[0], sampler, steps,
                     guidance, seed, batch])  # fmt: skip
    return rows


class GenerateTab:
    """Controls, handlers and wiring of the Generate tab."""

    title = "Generate"

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    # -- handlers -----------------------------------------------------------------------------

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
        gif_ms: Any = GIF_MS,
        palette: Any = "raw",
        prompt: str | None = "",
        background: Any = TRANSPARENT,
        palette_file: Any = None,
        palette_lock: Any = False,
        tileable: Any = False,
        outline: Any = "",
        exports: Any = None,
        negative_prompt: str | None = "",
        guidance_text: Any = None,
        rerank: Any = 1,
        request: gr.Request | None = None,
        *,
        latent_view: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Stream a run: live previews with progress, then the sheet, the GIF and the files.

        Yields {output name: value}. The preview updates by time (every PREVIEW_INTERVAL_S), and
        ``preview`` picks what it shows: the noisy state x_t, or the model's current guess of
        the clean sprites. ``background`` is where an RGBA model's sprites go: "transparent"
        (a checkerboard on the page, clear in the files) or a colour "#rrggbb". For games:
        ``palette_file`` (an upload, for the palette choice PALETTE_FILE), ``palette_lock`` (one
        palette for the batch), ``tileable``, ``outline`` ("#rrggbb") and ``exports`` (the
        scale of the sheet + JSON and single-sprite downloads; None or "off" for none).
        ``latent_view`` adds the picture of a latent model's latent to every update (the
        page's run; see ``run_on_page``).
        """
        session = session_of(request)
        # Entered first, so that a refused run also gives back its place in the queue.
        with self.studio.sessions.job(session) as clicked:
            pipe = self.studio.pipe(model)
            req = validate_request(
                pipe, label, sampler, steps, guidance, seed, n, eta, mix, palette, prompt,
                background=background, palette_file=palette_file, palette_lock=palette_lock,
                tileable=tileable, outline=outline, exports=exports,
                guidance_text=guidance_text, negative_prompt=negative_prompt, rerank=rerank,
            )  # fmt: skip
            clean = show_clean(preview)
            frame_ms = whole(gif_ms, "GIF frame time (ms)", *GIF_MS_RANGE)
            yield from run_on_page(
                self.studio, pipe, req, clean, frame_ms, session, clicked, latent_view
            )

    def upscale(
        self,
        sprites: np.ndarray | None,
        seed: Any,
        preview: str = "noisy",
        gif_ms: Any = GIF_MS,
        request: gr.Request | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream the upscaler enlarging every sprite of this session's last Generate run, as
        a run streams: previews, then the sheet, the GIF, the first sprite as a transparent
        PNG of its new size and, for several, a zip of them all so. The upscaler's own
        sampler and steps, no palette stage (as ``SpritePipeline.upscale``); the seed is the
        Seed box's, so the same seed enlarges the same sprites the same way."""
        session = session_of(request)
        with self.studio.sessions.job(session) as clicked:
            up = self.studio.upscaler
            if up is None:
                raise InputError("This app has no upscaler: there is nothing to upscale with.")
            if sprites is None or len(sprites) == 0:
                raise InputError("Nothing generated yet in this session: press Generate first.")
            side = sprites.shape[1]
            if side != up.low_res:
                raise InputError(
                    f"The upscaler enlarges {up.low_res}×{up.low_res} sprites; these are "
                    f"{side}×{side}. Generate with a {up.low_res}×{up.low_res} model first."
                )
            sampler = default_sampler(up)
            steps, guidance = default_steps(up, sampler), up.defaults["guidance"]
            req = validate_request(up, None, sampler, steps, guidance, seed, len(sprites))
            req = dataclasses.replace(req, low_res=sprites)
            clean = show_clean(preview)
            frame_ms = whole(gif_ms, "GIF frame time (ms)", *GIF_MS_RANGE)
            for update in run_on_page(self.studio, up, req, clean, frame_ms, session, clicked):
                update.pop("sprites", None)  # an enlargement is no new run: the last one stays
                yield update

    def on_sampler(self, sampler: str, model: str | None, n: Any) -> dict:
        """A sampler picked by hand brings the model's step count for it (measured, see
        benchmarks/steps.py) and a batch its default steps can run, saying when it was cut."""
        if sampler not in SAMPLERS:
            return {}
        steps, batch, note = fit_sampler(self.studio.pipe(model), sampler, n)
        return {self.steps: steps, self.n: batch, **self.describe_sampler(sampler, note)}

    def describe_sampler(self, sampler: str, note: str = "") -> dict:
        """The sampler's description, and its eta slider where it takes one."""
        spec = SAMPLERS.get(sampler)
        if spec is None:
            return {}
        eta = gr.update(visible=spec.uses_eta, value=spec.default_eta or 0.0)
        return {self.eta: eta, self.sampler_info: sampler_info(sampler, note)}

    def on_prompt(self, prompt: str, typed: str, label: str | None, model: str | None) -> dict:
        """A prompt typed into an empty box takes the place of the starting label, which would
        outweigh it; ``typed`` is the box's text before this keystroke."""
        switched = prompt_label(self.studio.pipe(model), prompt, typed, label)
        update = gr.update(value=switched, info=PROMPT_ALONE) if switched else gr.update()
        return {self.label: update, self.typed: prompt}

    # -- the layout ---------------------------------------------------------------------------

    def build(self, shell: Shell, tab: gr.Tab) -> None:
        pipe0 = shell.default_pipe
        d0 = pipe0.defaults
        sampler0 = default_sampler(pipe0)
        spec0 = SAMPLERS[sampler0]
        steps0, n0, _ = fit_sampler(pipe0, sampler0, DEFAULT_BATCH)
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
                    self.typed = gr.State("")  # the prompt before the last keystroke
                self.sampler = gr.Dropdown(pipe0.samplers, value=sampler0, label="Sampler")
                self.sampler_info = gr.Markdown(sampler_info(sampler0), elem_id="sampler-info")
                # A number box, not a slider: a slider silently clamps what is typed into it.
                self.steps = gr.Number(
                    value=steps0,
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
                    with gr.Column(visible=pipe0.supports_text) as self.text_options:
                        self.negative_prompt = negative_prompt_box("negative-prompt")
                        self.guidance_text = gr.Number(
                            value=None,
                            label="Text guidance",
                            info=f"Empty: the guidance scale above guides label and prompt "
                            f"together. 0 to {MAX_GUIDANCE:g}: the prompt's own scale, and the "
                            "one above the label's",
                            precision=None,
                            elem_id="guidance-text",
                        )
                        self.rerank = gr.Slider(
                            1,
                            MAX_RERANK,
                            value=1,
                            step=1,
                            label="Best of N",
                            info="Draw N candidates of each sprite and keep the one SpriteCLIP "
                            "finds closest to the prompt (N times the work)",
                            elem_id="rerank",
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
                    self.n = gr.Slider(
                        1, MAX_BATCH, value=n0, step=1, label="Batch size", elem_id="batch"
                    )
                    self.palette = gr.Dropdown(
                        PALETTE_CHOICES,
                        value=render.palette_name(default_palette(pipe0)),
                        label="Palette",
                        info="Snap the finished sprites to the training palette, a game "
                        "palette, your own palette file, or a few colours each",
                        elem_id="palette",
                    )
                    self.background = gr.Dropdown(
                        BACKGROUND_CHOICES,
                        value=TRANSPARENT,
                        allow_custom_value=True,
                        label="Background",
                        info="This model draws transparency: keep it clear (downloads are "
                        "transparent PNG and GIF) or put the sprites on a colour (#rrggbb)",
                        visible=pipe0.rgba,
                    )
                    self.preview = gr.Radio(PREVIEW_CHOICES, value="noisy", label="Preview")
                    self.gif_ms = gr.Slider(
                        *GIF_MS_RANGE, value=GIF_MS, step=10, label="GIF speed (ms per frame)"
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
                with gr.Accordion("For games", open=False, elem_id="games"):
                    gr.Markdown(
                        "Sprites for a game engine: your palette, one palette for a sheet, "
                        "seamless tiles, an outline, and sprite sheets with Aseprite JSON."
                    )
                    self.palette_file = gr.File(
                        label="Palette file (.hex, .gpl, or a .png of its colours)",
                        file_types=list(palettes.FILE_TYPES),
                        type="filepath",
                        elem_id="palette-file",
                    )
                    self.palette_lock = gr.Checkbox(
                        False,
                        label="One palette for the whole batch",
                        info="With 'at most N colours': the N colours are chosen once for "
                        "every sprite, so a sheet matches",
                        elem_id="palette-lock",
                    )
                    self.outline = gr.Dropdown(
                        OUTLINE_CHOICES,
                        value="",
                        allow_custom_value=True,
                        label="Outline",
                        info="A one-pixel outline around each sprite (#rrggbb)",
                        visible=pipe0.rgba,
                        elem_id="outline",
                    )
                    self.tileable = gr.Checkbox(
                        False,
                        label="Tileable (seamless terrain)",
                        info="Edges wrap around: left continues right, top continues bottom; "
                        "the result is shown laid 3×3",
                        elem_id="tileable",
                    )
                    self.exports = gr.Radio(
                        EXPORT_CHOICES,
                        value=EXPORT_DEFAULT,
                        label="Game downloads",
                        info="Sprite sheets + Aseprite JSON at this scale, and every sprite "
                        "alone at 1x, 2x, 4x and 8x (a zip)",
                        elem_id="exports",
                    )
            with gr.Column(scale=2):
                self.status = gr.Markdown("Press **Generate**.", elem_id="status")
                with gr.Row():
                    self.live = sprite_image(
                        "Sprites (live while drawing)",
                        format="png",
                        height=IMAGE_HEIGHT,
                        elem_id="live",
                    )
                    # A latent model's latent, beside the pixels its decoder paints from it.
                    with gr.Column(visible=pipe0.latent, min_width=160) as self.latent_box:
                        self.latent = sprite_image(
                            "Latent (what the network denoises)", format="png", elem_id="latent"
                        )
                        self.latent_note = gr.Markdown(latent_note(pipe0), elem_id="latent-note")
                    self.gif = sprite_image(
                        "Denoising animation (GIF)",
                        type="filepath",
                        height=IMAGE_HEIGHT,
                        elem_id="gif",
                    )
                self.upscale_btn = gr.Button(
                    "Upscale 2x",
                    visible=self.studio.can_upscale(pipe0),
                    elem_id="upscale",
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
            self.background,
            self.palette_file,
            self.palette_lock,
            self.tileable,
            self.outline,
            self.exports,
            self.negative_prompt,
            self.guidance_text,
            self.rerank,
        ]
        components = [self.live, self.status, self.gif, self.sheet, self.files, self.seed]
        outputs = dict(zip(OUTPUTS, [*components, shell.sprites], strict=True))
        sampling = {
            "concurrency_id": SAMPLING_QUEUE,
            "concurrency_limit": CONCURRENCY,
            "show_progress": "minimal",
        }

        @functools.wraps(self.generate)
        def generate_on_page(*args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
            yield from self.generate(*args, **kwargs, latent_view=True)

        # The page's run also streams a latent model's latent into the latent view; the
        # /generate API is the same run without it, so its outputs are the same for every model.
        on_page = {**outputs, LATENT: self.latent}
        run = {
            "fn": shell.gpu(guarded(generate_on_page, on_page)),
            "inputs": inputs,
            "outputs": list(on_page.values()),
            **sampling,
        }
        # Registered first, so that it is the one called "generate" (Gradio numbers later ones).
        gr.on(
            [],  # called by name only: the page's button runs generate_on_page
            shell.gpu(guarded(self.generate, outputs)),
            inputs,
            list(outputs.values()),
            api_name="generate",
            api_description="Sample sprites; streams previews, ends with GIF + PNG.",
            **sampling,
        )
        private = {"api_visibility": "private", "queue": False}
        show_results = scroll_into_view("status")
        self.run_btn.click(None, js=show_results, **private)
        # The click is noted outside the queue first, so Stop works while the run waits.
        self.run_btn.click(studio.click, **private).success(api_visibility="private", **run)
        enlarged = {name: c for name, c in outputs.items() if name != "sprites"}
        self.upscale_btn.click(None, js=show_results, **private)
        self.upscale_btn.click(studio.click, **private).success(
            shell.gpu(guarded(self.upscale, enlarged)),
            [shell.sprites, self.seed, self.preview, self.gif_ms],
            list(enlarged.values()),
            api_name="upscale",
            api_description="Enlarge this session's last generated sprites 2x with the "
            "upscaler; streams previews, ends with GIF + PNG.",
            **sampling,
        )
        examples = gr.Examples(
            example_rows(shell.default_pipe),
            [self.label, self.sampler, self.steps, self.guidance, self.seed, self.n],
            label="Examples: click one to run it",
            cache_examples=False,
        )
        # An example brings its own steps; its sampler's eta and description come before the
        # run reads them.
        examples.load_input_event.then(
            self.describe_sampler, self.sampler, [self.eta, self.sampler_info], **private
        ).then(None, js=show_results, **private).then(studio.click, **private).success(
            api_visibility="private", **run
        )
        self.stop_btn.click(studio.stop, **private)
        self.palette_file.upload(lambda: PALETTE_FILE, None, self.palette, **private)
        self.dice.click(random_seed, None, self.seed, **private)
        self.sampler.input(
            self.on_sampler,
            [self.sampler, shell.model, self.n],
            [self.steps, self.n, self.eta, self.sampler_info],
            **private,
        )
        self.prompt.input(
            self.on_prompt,
            [self.prompt, self.typed, self.label, shell.model],
            [self.label, self.typed],
            **private,
        )

        def on_weights(model_name: str, *values: float) -> str:
            labels = studio.pipe(model_name).labels
            return mix_text(labels, values[: len(labels)])  # hidden spare sliders are ignored

        for w in self.weights:
            w.input(on_weights, [shell.model, *self.weights], self.mix, **private)
        self.clear_mix.click(
            lambda: {**{w: 0.0 for w in self.weights}, self.mix: ""},
            None,
            [*self.weights, self.mix],
            **private,
        )

    def on_model(self, pipe: SpritePipeline) -> dict:
        """Updates for a newly picked model."""
        sampler = default_sampler(pipe)
        steps, n, note = fit_sampler(pipe, sampler, DEFAULT_BATCH)
        return {
            self.label: gr.update(
                choices=[*pipe.labels, UNCONDITIONAL], value=pipe.labels[0], info=""
            ),
            self.prompt_box: gr.update(visible=pipe.supports_text),
            self.prompt_examples: gr.update(visible=pipe.supports_text),
            self.latent_box: gr.update(visible=pipe.latent),
            self.latent: None,
            self.latent_note: latent_note(pipe),
            self.upscale_btn: gr.update(visible=self.studio.can_upscale(pipe)),
            self.prompt: "",
            self.typed: "",
            self.negative_prompt: "",
            self.guidance_text: None,
            self.rerank: 1,
            self.text_options: gr.update(visible=pipe.supports_text),
            self.sampler: gr.update(choices=pipe.samplers, value=sampler),
            self.steps: gr.update(value=steps, info=f"1 to {pipe.schedule.T}"),
            self.n: n,
            self.guidance: pipe.defaults["guidance"],
            **self.describe_sampler(sampler, note),
            self.palette: render.palette_name(default_palette(pipe)),
            self.background: gr.update(visible=pipe.rgba, value=TRANSPARENT),
            self.outline: gr.update(visible=pipe.rgba, value=""),
            self.mix: "",
            **{
                w: gr.update(label=pipe.labels[i], visible=True, value=0)
                if i < len(pipe.labels)
                else gr.update(visible=False, value=0)
                for i, w in enumerate(self.weights)
            },
        }
