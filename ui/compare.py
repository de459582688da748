"""The Compare samplers tab: one seed and label through several samplers and step counts."""

from __future__ import annotations

import time
import types
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
import pandas as pd

from diffusion import SAMPLERS, SpritePipeline, render

from .errors import InputError, guarded
from .limits import CONCURRENCY, MAX_BATCH, SMALL_BATCH, UNCONDITIONAL
from .run import Request, check_work, sheet, validate_request
from .sessions import session_of
from .shell import Shell
from .studio import Studio, default_sampler
from .widgets import scroll_into_view

COMPARE_STEPS = (5, 10, 20, 50, 100, 250, 500, 1000)
WARM_STEPS = 2  # an untimed run of each sampler before the timed ones
# Ticked beside the model's own sampler: the classic ODE sampler and the best one at few steps.
COMPARE_WITH = ("ddim", "dpmpp_2m")
TABLE_COLUMNS = ("sampler", "steps", "seconds", "ms/step")  # shown before the first run too


def ticked_samplers(pipe: SpritePipeline) -> list[str]:
    """The samplers ticked at the start: the model's own, and COMPARE_WITH."""
    return list(dict.fromkeys([default_sampler(pipe), *(s for s in COMPARE_WITH if s in SAMPLERS)]))


def step_choices(pipe: SpritePipeline) -> list[int]:
    """The step counts offered: COMPARE_STEPS that the model's schedule can walk."""
    return [s for s in COMPARE_STEPS if s <= pipe.schedule.T]


def step_counts_box(choices: list[int], **kwargs: Any) -> gr.CheckboxGroup:
    """A CheckboxGroup of step counts whose API schema and check agree: the schema says whole
    numbers (Gradio's calls every choice a string), and a count written as text, as
    gradio_client's listing shows them (``list[Literal['5', '10']]``), is taken as its number.
    Changed on the instance: Gradio writes a ``.pyi`` stub beside every component subclass."""
    box = gr.CheckboxGroup(choices, **kwargs)
    box.api_info = types.MethodType(_whole_numbers_info, box)
    box.preprocess = types.MethodType(_counts_or_their_text, box)
    return box


def _whole_numbers_info(box: gr.CheckboxGroup) -> dict[str, Any]:
    info = gr.CheckboxGroup.api_info(box)
    return {**info, "items": {**info["items"], "type": "integer"}}


def _counts_or_their_text(box: gr.CheckboxGroup, payload: Any) -> Any:
    if isinstance(payload, list):
        by_text = {str(value): value for _, value in box.choices}
        payload = [by_text.get(v, v) if isinstance(v, str) else v for v in payload]
    return gr.CheckboxGroup.preprocess(box, payload)


def summary(runs: Sequence[tuple[Request, float]]) -> str:
    """What was compared, and how long each run took."""
    first = runs[0][0]
    what = first.context or "unconditional"
    samplers = " and ".join(dict.fromkeys(r.sampler for r, _ in runs))
    counts = " and ".join(str(s) for s in dict.fromkeys(r.steps for r, _ in runs))
    times = ", ".join(f"{r.sampler} {r.steps} steps {seconds:.2f} s" for r, seconds in runs)
    return (
        f"{first.n} × {what}, seed {first.seed}, guidance {first.guidance:g}, through "
        f"{samplers} at {counts} steps: {times}"
    )


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
            runs = {
                (r.sampler, r.steps): r
                for r in (
                    validate_request(pipe, label, s, k, guidance, seed, n)
                    for s in samplers
                    for k in steps
                )
            }
            order = list(dict.fromkeys(sampler for sampler, _ in runs))
            reqs = sorted(runs.values(), key=lambda r: (order.index(r.sampler), r.steps))
            calls = sum(r.work for r in reqs) // reqs[0].n
            check_work(
                sum(r.work for r in reqs),
                f"{calls:,} network calls × {reqs[0].n} sprites, over {len(reqs)} runs",
                "Tick fewer samplers or smaller step counts.",
                what="comparison",
            )
            gallery: list[tuple[str, str]] = []
            rows: list[dict[str, Any]] = []
            timed: list[tuple[Request, float]] = []
            with self.studio.store.run() as folder:
                yield {"status": f"comparing {len(reqs)} runs…", "gallery": [], "table": None}
                # Untimed runs first: the first calls pay for allocations and kernel choices,
                # which made the first run look slowest. Two steps of each sampler, since a
                # multistep sampler's second step takes another path than its first.
                for sampler in dict.fromkeys(r.sampler for r in reqs):
                    warm = {"sampler": sampler, "steps": min(WARM_STEPS, pipe.schedule.T)}
                    pipe.generate(**{**reqs[0].stream_options(), **warm})
                for r in reqs:
                    start = time.perf_counter()
                    for frame in pipe.stream(**r.stream_options()):
                        if sessions.stopped_since(session, clicked):
                            yield {"status": f"stopped after {len(rows)} of {len(reqs)} runs"}
                            return
                        images = frame.x
                    seconds = time.perf_counter() - start
                    timed.append((r, seconds))
                    path = render.save_png(sheet(images), folder / f"{r.sampler}-{r.steps}.png")
                    gallery.append((path, f"{r.sampler} · {r.steps} steps · {seconds:.2f} s"))
                    per_step = round(1000 * seconds / r.steps, 1)
                    rows.append((r.sampler, r.steps, round(seconds, 3), per_step))
                    done = len(rows) == len(reqs)
                    yield {
                        "status": f"done: {summary(timed)}"
                        if done
                        else f"{len(rows)} of {len(reqs)} runs done…",
                        "gallery": list(gallery),
                        "table": pd.DataFrame(rows, columns=TABLE_COLUMNS),
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
                    pipe0.samplers, value=ticked_samplers(pipe0), label="Samplers"
                )
                choices = step_choices(pipe0)
                self.steps = step_counts_box(choices, value=choices[1:3], label="Step counts")
                self.guidance = gr.Number(
                    value=pipe0.defaults["guidance"], label="Guidance", precision=None
                )
                self.seed = gr.Number(value=0, precision=None, label="Seed")
                self.n = gr.Slider(1, MAX_BATCH, value=SMALL_BATCH, step=1, label="Batch size")
                with gr.Row():
                    self.run_btn = gr.Button("Compare", variant="primary", elem_id="compare")
                    self.stop_btn = gr.Button("Stop", variant="stop")
            with gr.Column(scale=2):
                self.status = gr.Markdown(elem_id="compare-status")
                # No label over the first picture, and every result in view without a scrollbar.
                self.gallery = gr.Gallery(
                    label="Results",
                    show_label=False,
                    height="auto",
                    columns=3,
                    format="png",
                    elem_classes="pixel",
                    elem_id="compare-gallery",
                    buttons=[],
                )
                self.table = gr.Dataframe(
                    label="Time taken", headers=list(TABLE_COLUMNS), interactive=False
                )
        outputs = {"status": self.status, "gallery": self.gallery, "table": self.table}
        inputs = [shell.model, self.label, self.samplers, self.steps, self.guidance, self.seed]
        private = {"api_visibility": "private", "queue": False}
        self.run_btn.click(None, js=scroll_into_view("compare-status"), **private)
        self.run_btn.click(self.studio.click, **private).success(
            shell.gpu(guarded(self.compare, outputs)),
            [*inputs, self.n],
            list(outputs.values()),
            api_name="compare",
            concurrency_id="sampling",
            concurrency_limit=CONCURRENCY,
        )
        self.stop_btn.click(self.studio.stop, **private)

    def on_model(self, pipe: SpritePipeline) -> dict:
        choices = step_choices(pipe)
        return {
            self.label: gr.update(choices=[*pipe.labels, UNCONDITIONAL], value=pipe.labels[0]),
            self.samplers: gr.update(choices=pipe.samplers, value=ticked_samplers(pipe)),
            self.steps: gr.update(choices=choices, value=choices[1:3]),
            self.guidance: pipe.defaults["guidance"],
        }
