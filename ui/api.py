"""The app's API-only endpoint: sprites in one call, for programs rather than the page.

``/generate`` streams what the page shows (previews, then the GIF, the sheet and the files),
and gradio_client downloads every file of every update. ``/sprites`` answers once, with the
sprites inlined in the answer: no previews and no files. docs/app.md shows a call;
docs/speed.md ("A request end to end") what each costs.
"""

# No ``from __future__ import annotations`` here: gr.api reads the return annotation as
# written (inspect.signature), and only a real ``tuple[str, str]`` gives two outputs.

import base64
import io
import time

import gradio as gr
import numpy as np

from diffusion import render

from .errors import InputError, as_sentence, refusing
from .limits import CONCURRENCY, SAMPLING_QUEUE
from .run import parse_sampler, validate_request
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
        label: str,
        n: int = 1,
        seed: int = 0,
        prompt: str = "",
        model: str | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        request: gr.Request | None = None,
    ) -> tuple[str, str]:
        """Sample ``n`` sprites of ``label`` ("" for none: a text model's ``prompt`` alone) in
        one call, with the model's palette stage.

        ``model`` None is the app's first model; ``sampler``, ``steps`` and ``guidance`` None
        are the model's own. Returns the sprites as one PNG data URL (a grid, one pixel per
        sprite pixel, transparent where they are) and the status line of the run.
        """
        session = session_of(request)
        with self.studio.sessions.job(session):
            pipe = self.studio.pipe(model)
            sampler = default_sampler(pipe) if sampler is None else parse_sampler(sampler)
            req = validate_request(
                pipe,
                label,
                sampler,
                default_steps(pipe, sampler) if steps is None else steps,
                pipe.defaults["guidance"] if guidance is None else guidance,
                seed,
                n,
                palette=render.palette_name(default_palette(pipe)),
                prompt=prompt,
            )
            start = time.perf_counter()
            try:
                images = pipe.generate(**req.stream_options())
            except ValueError as err:  # a check the request missed: the package's words
                raise InputError(as_sentence(err)) from None
            elapsed = time.perf_counter() - start
        return data_url(images), req.done(elapsed, req.steps)

    def build(self, shell: Shell) -> None:
        gr.api(
            shell.gpu(refusing(self.sprites)),
            api_name="sprites",
            api_description="Sample sprites in one call: a PNG data URL and the run's status.",
            concurrency_id=SAMPLING_QUEUE,
            concurrency_limit=CONCURRENCY,
        )
