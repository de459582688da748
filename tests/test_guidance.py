"""Guidance taken apart: the pipeline's branches (``stream(branches=True)``), the Guidance tab,
and the ``/guidance`` and ``/toy`` API endpoints."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import app
from diffusion import SpritePipeline
from tests.test_app import LABELS, free_port, tiny_pipeline
from ui.guidance import GuidanceTab, steps_of
from ui.storage import OutputStore
from ui.studio import Studio

RUN = {"n": 2, "sampler": "ddim", "steps": 5, "seed": 0}
PNG = b"\x89PNG\r\n\x1a\n"


def label_pipeline() -> SpritePipeline:
    """tiny_pipeline with its blocks awake to the label (they start as the identity)."""
    pipe = tiny_pipeline()
    torch.manual_seed(1)
    for name, param in pipe.model.named_parameters():
        if name.endswith("conv2.weight"):
            torch.nn.init.normal_(param, std=0.3)
    return pipe


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe() -> SpritePipeline:
    return label_pipeline()


def test_branches_take_guidance_apart(pipe: SpritePipeline):
    frames = list(pipe.stream("hero", guidance=3.0, branches=True, **RUN))
    plain = list(pipe.stream("hero", guidance=3.0, **RUN))
    for frame, same in zip(frames, plain, strict=True):
        b = frame.branches
        assert b.eps.shape == (2, 16, 16, 3) and b.x0.dtype == np.uint8
        np.testing.assert_allclose(b.eps, b.eps_uncond + 3 * (b.eps_cond - b.eps_uncond), atol=1e-5)
        np.testing.assert_allclose(b.guidance_term, 3 * (b.eps_cond - b.eps_uncond), atol=1e-5)
        assert np.abs(b.eps_cond - b.eps_uncond).mean() > 0.01  # the label changes the guess
        assert np.array_equal(frame.x, same.x)  # looking does not change the run
        assert same.branches is None


def test_the_branches_are_the_labelled_and_the_unlabelled_model(pipe: SpritePipeline):
    """At step 1 every run starts from the same noise: the conditional branch's guess is what
    a run with the label alone guesses, the unconditional one what a run without it guesses."""
    parts = [f.branches for f in pipe.stream("hero", guidance=3.0, branches=True, **RUN)]
    labelled = list(pipe.stream("hero", guidance=1.0, **RUN))
    unlabelled = list(pipe.stream(None, guidance=1.0, **RUN))
    assert np.abs(parts[0].x0_cond.astype(int) - labelled[0].x0).max() <= 1
    assert np.abs(parts[0].x0_uncond.astype(int) - unlabelled[0].x0).max() <= 1
    assert np.abs(parts[0].x0_uncond.astype(int) - parts[0].x0_cond).max() > 10
    guided = list(pipe.stream("hero", guidance=3.0, **RUN))
    assert np.array_equal(parts[1].x, guided[0].x)  # step 2 starts where step 1 ended


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_scales_zero_and_one_still_show_both_branches(pipe: SpritePipeline, scale: float):
    b = next(iter(pipe.stream("hero", guidance=scale, branches=True, **RUN))).branches
    assert np.abs(b.eps_cond - b.eps_uncond).mean() > 0.01
    np.testing.assert_allclose(b.eps, b.eps_cond if scale else b.eps_uncond, atol=1e-5)


def test_branches_need_something_to_guide_by(pipe: SpritePipeline):
    with pytest.raises(ValueError, match="needs something to guide by"):
        next(iter(pipe.stream(None, guidance=3.0, branches=True, **RUN)))


def test_guidance_acts_only_above_its_noise_floor(pipe: SpritePipeline):
    sigmas = pipe.schedule.sigmas(RUN["steps"]).tolist()  # call i runs at sigmas[i]
    floor = (sigmas[2] + sigmas[3]) / 2
    parts = [
        f.branches
        for f in pipe.stream("hero", guidance=3.0, guidance_sigma_min=floor, branches=True, **RUN)
    ]
    for i, b in enumerate(parts):
        want = b.eps_uncond + 3 * (b.eps_cond - b.eps_uncond) if i < 3 else b.eps_cond
        np.testing.assert_allclose(b.eps, want, atol=1e-5)
        assert np.abs(b.eps_cond - b.eps_uncond).mean() > 0.01
    floored = pipe.generate("hero", guidance=3.0, guidance_sigma_min=floor, **RUN)
    guided = pipe.generate("hero", guidance=3.0, **RUN)
    assert np.abs(floored.astype(int) - guided).mean() > 1
    # No guidance anywhere (the floor at the top noise level) is the conditional model alone.
    top = pipe.generate("hero", guidance=3.0, guidance_sigma_min=sigmas[0], **RUN)
    assert np.array_equal(top, pipe.generate("hero", guidance=1.0, **RUN))
    # A model's default floor is used when the run sets none.
    pipe.defaults["guidance_sigma_min"] = floor
    try:
        assert np.array_equal(pipe.generate("hero", guidance=3.0, **RUN), floored)
    finally:
        pipe.defaults["guidance_sigma_min"] = 0.0
    with pytest.raises(ValueError, match="guidance_sigma_min must be a number from 0 to"):
        pipe.generate("hero", guidance_sigma_min=-1.0, **RUN)


# -- the Guidance tab ---------------------------------------------------------------------------


@pytest.fixture
def tab(pipe: SpritePipeline, tmp_path: Path) -> GuidanceTab:
    return GuidanceTab(Studio({"tiny": pipe}, OutputStore(tmp_path / "out")))


def test_the_view_shows_the_pictures_and_says_what_they_are(tab: GuidanceTab):
    out = tab.show("tiny", "creature", 4.0, 2, 0)
    for key in ("x0", "eps"):
        assert Path(out[key]).read_bytes()[:8] == PNG
    sampler, steps = steps_of(tab.studio.pipe("tiny"))
    assert out["caption"].startswith(f"**Step 2 of {steps}** ({sampler}, seed 0)")
    assert "“creature”" in out["caption"] and "4 × (with − without)" in out["caption"]
    weak = tab.show("tiny", "creature", 0.0, 2, 0)
    # The guided sprite moves with the scale; the unguided branches do not.
    assert Path(weak["x0"]).read_bytes() != Path(out["x0"]).read_bytes()
    assert tab.first_look(out["x0"], "tiny", "creature", 4.0, 2, 0) == {}


def test_the_view_guides_every_step_whatever_the_models_floor(tab: GuidanceTab):
    pipe = tab.studio.pipe("tiny")
    last = steps_of(pipe)[1]
    everywhere = tab.show("tiny", "creature", 4.0, last, 0)
    pipe.defaults["guidance_sigma_min"] = float(pipe.schedule.sigma(pipe.schedule.T))
    try:
        floored = tab.show("tiny", "creature", 4.0, last, 0)
    finally:
        pipe.defaults["guidance_sigma_min"] = 0.0
    for key in ("x0", "eps"):
        assert Path(floored[key]).read_bytes() == Path(everywhere[key]).read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"step": 0}, "Step must be a whole number from 1 to"),
        ({"step": 10_000}, "Step must be a whole number from 1 to"),
        ({"guidance": 11}, "Guidance must be a number from 0 to 10 (got 11)"),
        ({"seed": -1}, "Seed must be a whole number from 0 to 4294967295 (got -1)"),
        ({"label": ""}, "Pick a label"),
        ({"label": "dragon"}, "Unknown label 'dragon'"),
    ],
)
def test_the_view_refuses_bad_input_with_a_message(tab: GuidanceTab, change: dict, message: str):
    from ui.errors import InputError

    args = {"model": "tiny", "label": "hero", "guidance": 2.0, "step": 1, "seed": 0, **change}
    with pytest.raises(InputError, match=re.escape(message)):
        tab.show(**args)


# -- the API ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(pipe: SpritePipeline, tmp_path_factory) -> str:
    demo = app.build_demo({"tiny": pipe}, OutputStore(tmp_path_factory.mktemp("out")))
    port = free_port()
    app.launch(
        demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_api_guidance_and_toy_return_pictures(server: str):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    x0, eps, caption = client.predict(
        label=LABELS[2], guidance=3, step=2, seed=1, api_name="/guidance"
    )
    assert caption.startswith("**Step 2 of")
    for path in (x0, eps):
        with Image.open(path) as im:
            assert im.format == "PNG" and 0.8 < im.width / im.height < 1.2  # 2 x 2 panels
    with pytest.raises(AppError, match=re.escape("Seed must be a whole number from 0")):
        client.predict(label="hero", guidance=3, step=1, seed=-1, api_name="/guidance")
    picture, animation, status = client.predict(
        shape="spiral", samplers=["ddim", "heun"], steps=4, points=50, t=20, seed=0,
        api_name="/toy",
    )  # fmt: skip
    assert status.startswith("done: spiral, 50 points, seed 0, 4 steps of ddim (4 calls)")
    with Image.open(picture) as im:
        assert im.format == "PNG" and im.width == im.height  # three panels of a 2 x 2 grid
    with Image.open(animation) as im:
        assert im.format == "GIF" and im.n_frames > 10
    with pytest.raises(AppError, match="Tick at least one sampler"):
        client.predict(shape="ring", samplers=[], steps=4, points=50, t=20, seed=0, api_name="/toy")


def test_the_status_line_names_the_models_guidance_floor(pipe: SpritePipeline):
    from ui.run import validate_request

    def status(guidance: float) -> str:
        return validate_request(pipe, "hero", "ddim", 5, guidance, 0, 1).describe()

    assert "· guidance 3 (label) ·" in status(3.0)
    pipe.defaults["guidance_sigma_min"] = 0.5
    try:
        assert "· guidance 3 (label) above noise level σ 0.5 ·" in status(3.0)
        assert "· guidance 1 ·" in status(1.0)  # nothing to stop
    finally:
        pipe.defaults["guidance_sigma_min"] = 0.0
