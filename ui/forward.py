"""The Forward process tab: a clean sprite, noised at any t by each schedule, beside the curves."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from diffusion import SCHEDULES, SpritePipeline, render, schedule_curves
from diffusion.schedules import noised_sprites

from .errors import guarded
from .limits import CONCURRENCY, SHOW_PX, UPLOAD_TYPES
from .run import finite
from .shell import Shell
from .studio import Studio
from .widgets import sprite_image


def start_t(T: int) -> int:
    """Where the slider starts: early enough that the sprite is still plainly visible."""
    return max(1, T // 10)


def curves_frame(T: int, t: float | None = None) -> pd.DataFrame:
    """The schedules' curves in long format for gr.LinePlot, with the current t as a vertical
    line (a two-point series named "t now") when ``t`` is given."""
    frames = []
    for kind, curve in schedule_curves(T).items():
        frame = pd.DataFrame(curve)
        frame["schedule"] = kind
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    if t is not None:
        lows, highs = data[["alpha_bar", "log10 SNR"]].min(), data[["alpha_bar", "log10 SNR"]].max()
        marker = pd.DataFrame(
            {
                "t": [t, t],
                "alpha_bar": [lows["alpha_bar"], highs["alpha_bar"]],
                "log10 SNR": [lows["log10 SNR"], highs["log10 SNR"]],
                "schedule": ["t now", "t now"],
            }
        )
        data = pd.concat([data, marker], ignore_index=True)
    return data


class ForwardTab:
    """Controls, handlers and wiring of the Forward process tab."""

    title = "Forward"

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    # -- handlers -----------------------------------------------------------------------------

    def noised(self, model: str | None, sprite: np.ndarray | None, t: Any) -> dict[str, Any]:
        """The sprite, and the sprite noised at ``t`` by each schedule, with the curves at t."""
        pipe = self.studio.pipe(model)
        T = pipe.schedule.T
        t = finite(t, "t", 0, T)
        out: dict[str, Any] = {"abar_plot": curves_frame(T, t), "snr_plot": curves_frame(T, t)}
        if sprite is None:
            return {**out, "table": "Draw a sprite or upload one first."}
        scale = max(1, SHOW_PX // max(sprite.shape[:2]))
        lines = [f"**t = {t:.0f}** of {T}", "", "| schedule | ᾱ(t) | SNR |", "|---|---|---|"]
        # An RGBA sprite's colours as the network sees them: on white (render.model_pixels).
        for kind, (xt, abar, snr) in noised_sprites(render.composite(sprite), t, T).items():
            out[kind] = render.grid(xt, scale)
            lines.append(
                f"| {kind} | {abar:.4f} | {'∞' if snr == float('inf') else f'{snr:.3g}'} |"
            )
        out["clean"] = render.checkerboard(render.grid(sprite, scale))
        out["table"] = "\n".join(lines)
        return out

    def draw_sprite(self, model: str | None, label: str | None = None) -> dict[str, Any]:
        sprite, info = self.studio.draw_sprite(model, label)
        return {"source": sprite, "info": info}

    def use_upload(self, model: str | None, path: str | None) -> dict[str, Any]:
        """An uploaded file as the sprite, saying how it was fitted; a file that is no picture
        is refused and the sprite stays."""
        sprite, note = self.studio.upload(model, path)
        return {"source": sprite, "info": note}

    def use_last(self, sprites: np.ndarray | None) -> dict[str, Any]:
        sprite = self.studio.last_sprite(sprites)
        return {"source": sprite, "info": "the first sprite of your last Generate run"}

    def first_sprite(self, model: str | None, sprite: np.ndarray | None) -> dict[str, Any]:
        # Opening the tab shows something at once, without a click.
        return {} if sprite is not None else self.draw_sprite(model)

    # -- the layout ---------------------------------------------------------------------------

    def build(self, shell: Shell, tab: gr.Tab) -> None:
        pipe0 = shell.default_pipe
        T = pipe0.schedule.T
        gr.Markdown(
            "Training teaches the model to undo this: the forward process mixes a clean sprite "
            "with Gaussian noise, x_t = √ᾱ(t)·x₀ + √(1−ᾱ(t))·ε. The same sprite and the same "
            "noise, through three schedules."
        )
        self.source = gr.State(None)
        with gr.Row():
            self.draw_btn = gr.Button("🎲 Draw a new sprite")
            self.last_btn = gr.Button("Use my last generated sprite")
            # A button, as on Edit: a drop zone stood three times the buttons' height.
            self.upload = gr.UploadButton(
                "…or upload a PNG", file_types=UPLOAD_TYPES, elem_id="forward-upload"
            )
        self.info = gr.Markdown(elem_id="forward-info")
        self.t = gr.Slider(0, T, value=start_t(T), step=1, label="Timestep t", elem_id="t")
        with gr.Row():
            self.clean = sprite_image("clean sprite x₀", format="png", min_width=120)
            self.noisy = {
                kind: sprite_image(kind, format="png", min_width=120) for kind in SCHEDULES
            }
        self.table = gr.Markdown()
        with gr.Row():
            self.abar_plot = gr.LinePlot(
                curves_frame(T, start_t(T)),
                x="t",
                y="alpha_bar",
                color="schedule",
                title="ᾱ(t): signal kept",
            )
            self.snr_plot = gr.LinePlot(
                curves_frame(T, start_t(T)),
                x="t",
                y="log10 SNR",
                color="schedule",
                title="log₁₀ SNR(t)",
            )
        self.wire(shell, tab)

    def wire(self, shell: Shell, tab: gr.Tab) -> None:
        shown = {
            "clean": self.clean,
            **self.noisy,
            "table": self.table,
            "abar_plot": self.abar_plot,
            "snr_plot": self.snr_plot,
        }
        show = {
            "fn": guarded(self.noised, shown, status="table"),
            "inputs": [shell.model, self.source, self.t],
            "outputs": list(shown.values()),
            "api_visibility": "private",
            "show_progress": "hidden",
        }
        source = {"source": self.source, "info": self.info}
        sampling = {"concurrency_id": "sampling", "concurrency_limit": CONCURRENCY}
        self.draw_btn.click(
            shell.gpu(guarded(self.draw_sprite, source, status="info")),
            [shell.model],
            list(source.values()),
            api_visibility="private",
            **sampling,
        ).success(**show)
        self.last_btn.click(
            guarded(self.use_last, source, status="info"),
            shell.sprites,
            list(source.values()),
            api_visibility="private",
        ).success(**show)
        self.upload.upload(
            guarded(self.use_upload, source, status="info"),
            [shell.model, self.upload],
            list(source.values()),
            api_visibility="private",
        ).success(**show)
        self.t.change(trigger_mode="always_last", **show)
        tab.select(
            shell.gpu(guarded(self.first_sprite, source, status="info")),
            [shell.model, self.source],
            list(source.values()),
            api_visibility="private",
            **sampling,
        ).success(**show)

    def on_model(self, pipe: SpritePipeline) -> dict:
        T = pipe.schedule.T
        return {
            self.t: gr.update(maximum=T, value=start_t(T)),
            self.abar_plot: curves_frame(T, start_t(T)),
            self.snr_plot: curves_frame(T, start_t(T)),
            self.source: None,  # a sprite from another model may have another size
        }
