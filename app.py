"""Sprite Diffusion Studio: watch a diffusion model paint 16x16 pixel-art sprites, step by step.

This file is the shell of the Gradio app: the header, the model picker, the tabs (one module
each in ``ui/``) and the launch. Every bit of diffusion maths lives in the ``diffusion`` package.

    python app.py        # serves every model folder under weights/ on http://127.0.0.1:7860

Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, as for any Gradio app.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from diffusion import SpritePipeline
from diffusion.device import configure_cpu_threads
from diffusion.options import guidance_floor
from diffusion.pipeline import FORMAT, WEIGHTS
from ui import TABS
from ui.api import SpritesApi
from ui.gate import admit_to_queue, app_kwargs, tidy_input_errors
from ui.limits import (
    CONCURRENCY,
    MAX_SESSIONS,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    QUEUE_POLL_S,
    QUEUE_SIZE,
)
from ui.sessions import SessionExpiry
from ui.shell import Shell
from ui.storage import CacheSweeper, OutputStore
from ui.studio import Studio, default_sampler, default_steps, split_models

try:  # On a ZeroGPU Space, @spaces.GPU borrows a GPU per call; everywhere else it is not needed.
    import spaces
except ImportError:
    spaces = None

WEIGHTS_DIR = WEIGHTS
RECOMMENDED = ("sprites16-text", "sprites16")

CSS = """
.pixel img, .pixel canvas { image-rendering: pixelated; }
/* A sheet of one sprite fills its panel as a sheet of sixteen does (Gradio only ever shrinks). */
.pixel.fill img { object-fit: contain !important; }
/* Compare: each caption whole, under its sprites, instead of cut off on top of them. */
#compare-gallery .thumbnail-item { aspect-ratio: auto; display: flex; flex-direction: column;
  overflow: visible; }
#compare-gallery .thumbnail-item img { aspect-ratio: 1 / 1; height: auto; min-height: 0; }
#compare-gallery .fixed-height { max-height: none; }
#compare-gallery .caption-label { position: static; max-width: none; white-space: normal;
  text-overflow: clip; border: 0; background: none; text-align: center; }
#status { min-height: 2.5em; }
.caption p { margin: 0 !important; }
/* Every tab stays in view on a phone: narrow tab buttons, and a second row for those that
   still do not fit (gr.Tabs' overflow_behavior="wrap"), never a "more tabs" menu. */
.tab-container button { padding: 0 10px !important; }
@media (max-width: 640px) {
  .tab-container button { padding: 0 4px !important; font-size: 0.9em !important; }
  /* The title on one line pays for the tabs' second row: Generate stays in the first screen. */
  h1 { font-size: 22px !important; }
}
"""


def gpu(fn: Callable) -> Callable:
    """Borrow a ZeroGPU GPU for ``fn`` on Spaces; unchanged elsewhere."""
    return spaces.GPU(fn) if spaces is not None else fn


def model_info(name: str, pipe: SpritePipeline) -> str:
    """One line about a model: its sprites, labels, schedule and recommended settings."""
    sampler = default_sampler(pipe)
    latent = ""
    if pipe.latent:
        c, h, w = pipe.state_shape
        latent = f" drawn as {h}×{w}×{c} latents that its decoder paints"
    return (
        f"**{name}**: {pipe.resolution}×{pipe.resolution} sprites{latent}, labels "
        f"{', '.join(pipe.labels)}; {pipe.schedule.kind} schedule, T = {pipe.schedule.T}; "
        f"recommended {sampler}, {default_steps(pipe, sampler)} steps, guidance "
        f"{pipe.defaults['guidance']:g}{guidance_floor(pipe.defaults['guidance_sigma_min'])}."
    )


def build_demo(models: dict[str, SpritePipeline], store: OutputStore | None = None) -> gr.Blocks:
    """The whole UI over ``models`` (name -> pipeline); the first one is selected at start."""
    studio = Studio(models, store)
    # CONCURRENCY runs share the CPU cores: one thread each on 2 cores, never oversubscribed.
    configure_cpu_threads(CONCURRENCY)
    name0 = studio.default_model
    with gr.Blocks(title="Sprite Diffusion Studio") as demo:
        gr.Markdown(
            "# 👾 Sprite Diffusion Studio\n"
            "Watch a diffusion model paint pixel-art sprites out of pure noise, step by step."
        )
        with gr.Accordion("Model", open=False):
            model = gr.Dropdown(list(studio.models), value=name0, label="Model", min_width=200)
            info = gr.Markdown(model_info(name0, studio.models[name0]), elem_id="model-info")
        shell = Shell(model, gr.State(None), studio.models[name0], gpu)
        tabs = [tab_class(studio) for tab_class in TABS]
        with gr.Tabs(overflow_behavior="wrap"):
            for t in tabs:
                with gr.Tab(t.title) as tab:
                    t.build(shell, tab)
        SpritesApi(studio).build(shell)

        def on_model(name: str) -> dict:
            pipe = studio.pipe(name)
            updates = {info: model_info(name, pipe), shell.sprites: None}
            for t in tabs:
                updates.update(t.on_model(pipe))
            return updates

        every = on_model(name0)  # the outputs: every component a tab updates
        model.change(on_model, model, list(every), api_visibility="private")
    # api_open=False: /run, which skips the queue, answers only the page's quick helpers.
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE, api_open=False)
    demo._queue.sleep_when_free = QUEUE_POLL_S  # no public setting for it in Gradio 6.31
    admit_to_queue(demo, studio.sessions)
    tidy_input_errors(demo)
    demo.studio = studio  # for tests and for the cache sweeper
    demo.tabs = tabs  # for tests
    return demo


def discover_models(root: str | os.PathLike = WEIGHTS_DIR) -> dict[str, SpritePipeline]:
    """Every model folder (one holding config.json) directly under ``root``, by folder name;
    an upscaler among them is set apart by the studio (``ui.studio.split_models``)."""
    root = Path(root)
    configs = sorted(root.glob("*/config.json")) if root.is_dir() else []
    # Only diffusion models: weights/ also holds the text encoder (SpriteCLIP) on its own.
    folders = [c.parent for c in configs if json.loads(c.read_text()).get("format") == FORMAT]
    # The recommended models first, so a visitor sees them: the text model (it follows prompts
    # and measured better than the label model; see the README), then the label model.
    folders.sort(key=lambda p: RECOMMENDED.index(p.name) if p.name in RECOMMENDED else 99)
    return {folder.name: SpritePipeline.from_pretrained(folder) for folder in folders}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    models = discover_models()
    if not split_models(models)[0]:  # an upscaler alone draws nothing
        raise SystemExit(
            f"No model found under {WEIGHTS_DIR}: expected folders holding config.json and "
            "model.safetensors (e.g. weights/sprites16)."
        )
    launch(build_demo(models))


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX does), where glibc is the allocator.

    Gradio serves each request from a pool of threads and glibc gives each thread its own
    arena, which fragments: with the default, server memory grew about 80 MB over 300 requests
    (benchmarks.soak); with 2 arenas about 10 MB. Returns whether the cap was set.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # -8 is M_ARENA_MAX in glibc's malloc.h
    except (OSError, AttributeError):
        return False


def launch(demo: gr.Blocks, **kwargs: Any) -> tuple:
    """``demo.launch`` with the app's look, its limits (uploads, sessions, the request gate of
    ``ui.gate``), the cache sweeper and session expiry; kwargs pass through."""
    limit_malloc_arenas()
    studio: Studio = demo.studio
    sweeper = CacheSweeper(
        [gr.utils.get_upload_folder(), studio.store.root], protect=studio.store.is_live
    )
    sweeper.start()
    SessionExpiry(demo).start()
    # Any picture decoded anywhere (Gradio's own components too) stays within the upload bound.
    Image.MAX_IMAGE_PIXELS = MAX_UPLOAD_PIXELS
    gate = {**app_kwargs(demo, studio.sessions), **kwargs.pop("app_kwargs", {})}
    return demo.launch(
        css=CSS,
        theme=gr.themes.Soft(),
        max_file_size=MAX_UPLOAD_BYTES,
        state_session_capacity=MAX_SESSIONS,
        app_kwargs=gate,
        **kwargs,
    )


if __name__ == "__main__":
    main()
