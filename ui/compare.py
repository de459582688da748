"""The Compare samplers tab: one seed and label through several samplers and step counts."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
import pandas as pd

from diffusion import SAMPLERS, SpritePipeline, render

from .context import (
    CONCURRENCY,
    MAX_BATCH,
    UNCONDITIONAL,
    InputError,
    Studio,
    guarded,
    session_of,
    sheet,
    whole,
)
from .generate import validate_request
from .shell import Shell

# Compare runs every (sampler, steps) pair; this caps the network calls one click may cost.
COMPARE_BUDGET = 4000
COMPARE_STEPS = (5, 10, 20, 50, 100, 250, 500, 1000)


class CompareTab:
    """Controls, handlers and wiring of the Compare samplers tab."""

    title = "Compare"

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def compare(
        self,
        model: str | None,
        label: str | None,
        samplers: Sequence[str],
        steps: Sequence[Any],
        guidance: Any,
        seed: Any,
        n: Any,
        request: gr.Request | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Same seed and label through each (sampler, steps) pair; yields as each one finishes."""
        session, sessions = session_of(request), self.studio.sessions
        # Entered first, so that a refused comparison also gives back its place in the queue.
        with sessions.job(session) as clicked:
            pipe = self.studio.pipe(model)
            if not samplers:
                raise InputError("Tick at least one sampler to compare.")
            if not steps:
                raise InputError("Tick at least one step count to compare.")
            counts = sorted({whole(s, "Each step count", 1, pipe.schedule.T) for s in steps})
            for s in samplers:
                if s not in pipe.samplers:
                    raise InputError(
                        f"Unknown sampler {s!r}. Choose from: {', '.join(pipe.samplers)}."
                    )
            cost = sum(
                k * SAMPLERS[s].calls_per_step for s in dict.fromkeys(samplers) for k in counts
            )
            if cost > COMPARE_BUDGET:
                raise InputError(
                    f"That comparison needs {cost:.0f} network calls; the limit is "
                    f"{COMPARE_BUDGET}. Tick fewer samplers or smaller step counts."
                )
            reqs = [
                validate_request(pipe, label, s, k, guidance, seed, n)
                for s in dict.fromkeys(samplers)
                for k in counts
            ]
            gallery: list[tuple[str, str]] = []
            rows: list[dict[str, Any]] = []
            with self.studio.store.run() as folder:
                yield {"status": f"comparing {len(reqs)} runs…", "gallery": [], "table": None}
                for r in reqs:
                    start = time.perf_counter()
                    for frame in pipe.stream(**r.stream_options()):
                        if sessions.stopped_since(session, clicked):
                            yield {"status": f"stopped after {len(rows)} of {len(reqs)} runs"}
                            return
                        images = frame.x
                    seconds = time.perf_counter() - start
                    path = render.save_png(sheet(images), folder / f"{r.sampler}-{r.steps}.png")
                    gallery.append((path, f"{r.sampler} · {r.steps} steps · {seconds:.2f} s"))
                    rows.append(
                        {
                            "sampler": r.sampler,
                            "steps": r.steps,
                            "seconds": round(seconds, 3),
                            "ms/step": round(1000 * seconds / r.steps, 1),
                        }
                    )
                    done = len(rows) == len(reqs)
                    yield {
                        "status": "done" if done else f"{len(rows)} of {len(reqs)} runs done…",
                        "gallery": list(gallery),
                        "table": pd.DataFrame(rows),
                    }

    def build(self, shell: Shell, tab: gr.Tab) -> None:
        pipe0 = shell.default_pipe
        gr.Markdown(
            "The same seed and label through several samplers and step counts: how few steps "
            "does each need, and what does a step cost?"
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                self.label = gr.Dropdown(
                    [*pipe0.labels, UNCONDITIONAL], value=pipe0.labels[0], label="Label"
                )
                self.samplers = gr.CheckboxGroup(
                    pipe0.samplers, value=["ddim", "dpmpp_2m", "heun"], label="Samplers"
                )
                choices = [s for s in COMPARE_STEPS if s <= pipe0.schedule.T]
                self.steps = gr.CheckboxGroup(choices, value=choices[1:3], label="Step counts")
                self.guidance = gr.Number(
                    value=pipe0.defaults["guidance"], label="Guidance", precision=None
                )
                self.seed = gr.Number(value=0, precision=None, label="Seed")
                self.n = gr.Slider(1, MAX_BATCH, value=4, step=1, label="Batch size")
                with gr.Row():
                    self.run_btn = gr.Button("Compare", variant="primary", elem_id="compare")
                    self.stop_btn = gr.Button("Stop", variant="stop")
            with gr.Column(scale=2):
                self.status = gr.Markdown()
                self.gallery = gr.Gallery(
                    label="Results", columns=3, format="png", elem_classes="pixel", buttons=[]
                )
                self.table = gr.Dataframe(label="Time taken", interactive=False)
        outputs = {"status": self.status, "gallery": self.gallery, "table": self.table}
        inputs = [shell.model, self.label, self.samplers, self.steps, self.guidance, self.seed]
        self.run_btn.click(self.studio.click, api_visibility="private", queue=False).success(
            shell.gpu(guarded(self.compare, outputs)),
            [*inputs, self.n],
            list(outputs.values()),
            api_name="compare",
            concurrency_id="sampling",
            concurrency_limit=CONCURRENCY,
        )
        self.stop_btn.click(self.studio.stop, api_visibility="private", queue=False)

    def on_model(self, pipe: SpritePipeline) -> dict:
        choices = [s for s in COMPARE_STEPS if s <= pipe.schedule.T]
        return {
            self.label: gr.update(choices=[*pipe.labels, UNCONDITIONAL], value=pipe.labels[0]),
            self.samplers: gr.update(choices=pipe.samplers),
            self.steps: gr.update(choices=choices, value=choices[1:3]),
            self.guidance: pipe.defaults["guidance"],
        }
