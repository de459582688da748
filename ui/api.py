"""The app's API-only endpoint: sprites in one call, for programs rather than the page.

``/generate`` streams what the page shows, previews, then the GIF, the sheet and the file
list, and gradio_client downloads every file of every update: eleven downloads for one sprite
(docs/speed.md). ``/sprites`` skips what a program does not look at and answers once, with
the sprites inlined as a PNG data URL, so a call costs about what its sampling costs::

    from gradio_client import Client
    url, about = Client("http://127.0.0.1:7860/").predict("hero", 4, 7, api_name="/sprites")
"""

# No ``from __future__ import annotations`` here: gr.api reads the handler's type hints, as
# classes, for the endpoint's types.

import base64
import io
import time

import gradio as gr
import numpy as np

from diffusion import render

from .errors import refusing
from .limits import CONCURRENCY, SAMPLING_QUEUE
from .run import format_ms, validate_request
from .sessions import session_of
from .shell import Shell
from .studio import Studio, default_palette, default_sampler, default_steps


def data_url(images: np.ndarray) -> str:
    """Sprites as one PNG, laid in a grid at one pixel per sprite pixel and transparent
    where they are, written as a ``data:image/png;base64,...`` URL."""
    buffer = io.BytesIO()
    render.grid(images, 1).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class SpritesApi:
    """``/sprites``: the model's own settings unless told otherwise, no previews, no files."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def sprites(
        self,
        label: str = "",
        n: int = 1,
        seed: int = 0,
        prompt: str = "",
        model: str = "",
        sampler: str = "",
        steps: int = 0,
        guidance: float = -1.0,
        request: gr.Request | None = None,
    ) -> tuple[str, str]:
        """Sample ``n`` sprites of ``label`` (and/or a text model's ``prompt``) in one call.

        Empty or out-of-band values take the model's defaults: its sampler, that sampler's
        steps (0), its guidance (-1) and its palette stage. Returns the sprites as one PNG
        data URL (a grid, one pixel per sprite pixel, transparent where they are) and the
        line the page's status says of such a run, with its time.
        """
        session = session_of(request)
        with self.studio.sessions.job(session):
            pipe = self.studio.pipe(model)
            sampler = sampler or default_sampler(pipe)
            req = validate_request(
                pipe,
                label or None,
                sampler,
                steps or default_steps(pipe, sampler),
                pipe.defaults["guidance"] if guidance == -1 else guidance,
                seed,
                n,
                palette=render.palette_name(default_palette(pipe)),
                prompt=prompt,
            )
            start = time.perf_counter()
            images = pipe.generate(**req.stream_options())
            elapsed = time.perf_counter() - start
        rate = format_ms(elapsed, req.steps)
        return data_url(images), f"done: {req.describe()} - {rate}, {elapsed:.2f} s in all"

    def build(self, shell: Shell) -> None:
        gr.api(
            shell.gpu(refusing(self.sprites)),
            api_name="sprites",
            api_description="Sample sprites in one call: a PNG data URL and what was drawn.",
            concurrency_id=SAMPLING_QUEUE,
            concurrency_limit=CONCURRENCY,
        )
