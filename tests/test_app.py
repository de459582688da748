"""Tests of the Gradio app: handlers as plain functions, then the live server via gradio_client.

Every test uses a tiny randomly initialised model, so none depends on trained weights.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from tests

import math
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import app
from diffusion import ContextUnet, Schedule, SpritePipeline, UnetConfig, render

LABELS = ["hero", "creature", "food", "weapon_spell", "item", "terrain"]
T = 100


def tiny_pipeline(T: int = T) -> SpritePipeline:
    """A few-thousand-parameter ContextUnet with random (but not zero) output weights."""
    torch.manual_seed(0)
    config = UnetConfig(num_labels=len(LABELS), channels=(8, 16), emb_dim=16, groups=4, T=T)
    model = ContextUnet(config)
    # The real net starts with a zero output layer; random weights make every step visible.
    torch.nn.init.normal_(model.out[-1].weight, std=0.2)
    return SpritePipeline(model, Schedule.linear(T), LABELS, device="cpu")


@pytest.fixture(scope="module")
def pipe() -> SpritePipeline:
    return tiny_pipeline()


@pytest.fixture
def studio(pipe: SpritePipeline, tmp_path: Path) -> app.Studio:
    return app.Studio({"tiny": pipe}, app.OutputStore(tmp_path / "out", keep=4))


def run(studio: app.Studio, **kwargs) -> list[tuple]:
    args = {"label": "hero", "sampler": "ddim", "steps": 10, "guidance": 2.0, "seed": 0, "n": 4}
    args.update(kwargs)
    return list(studio.generate(**args))


def gif_frames(path: str | Path) -> tuple[int, tuple[int, int], list[int]]:
    """(frame count, size, per-frame durations in ms) of a GIF file."""
    with Image.open(path) as im:
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
        return im.n_frames, im.size, durations


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sampler": "euler"}, "Unknown sampler 'euler'. Choose one of: ddpm, ddim"),
        ({"label": "dragon"}, "Unknown label 'dragon'. Choose one of: hero, creature"),
        ({"steps": 0}, "Steps for ddim must be a whole number from 1 to 100 (got 0)"),
        ({"steps": T + 1}, "Steps for ddim must be a whole number from 1 to 100 (got 101)"),
        ({"steps": 2.5}, "Steps for ddim must be a whole number"),
        ({"guidance": float("nan")}, "Guidance must be a number from 0 to 10 (got nan)"),
        ({"guidance": float("inf")}, "Guidance must be a number from 0 to 10"),
        ({"guidance": -1}, "Guidance must be a number from 0 to 10 (got -1)"),
        ({"seed": -1}, "Seed must be a whole number from 0 to 4294967295 (got -1)"),
        ({"seed": 2**40}, "Seed must be a whole number from 0 to 4294967295"),
        ({"seed": None}, "Enter a seed"),
        ({"n": 0}, "Batch size must be a whole number from 1 to 16 (got 0)"),
        ({"n": 17}, "Batch size must be a whole number from 1 to 16 (got 17)"),
        ({"eta": 1.5}, "Eta must be a number from 0 to 1 (got 1.5)"),
        ({"mix": "hero=1"}, "must look like label:weight"),
        ({"mix": "hero:0.5, dragon:0.5"}, "Unknown label 'dragon' in the mix"),
        ({"mix": "hero:0, food:0"}, "Every mix weight is 0"),
        ({"mix": "hero:nan"}, "The weight of 'hero' must be a number from 0 to 1"),
    ],
)
def test_bad_input_gets_a_clear_message(pipe: SpritePipeline, change: dict, message: str):
    args = {"label": "hero", "sampler": "ddim", "steps": 10, "guidance": 2, "seed": 0, "n": 4}
    args.update({"eta": 0.0, **change})
    with pytest.raises(gr.Error) as err:
        app.validate_request(pipe, **args)
    assert message in err.value.message


def test_valid_input_is_normalised(pipe: SpritePipeline):
    req = app.validate_request(pipe, "food", "heun", 15.0, 3, 42.0, 9.0, eta=0.7)
    assert req == app.GenerateRequest("food", "heun", 15, 3.0, 42, 9, None)  # heun takes no eta
    assert isinstance(req.steps, int) and isinstance(req.seed, int)
    req = app.validate_request(pipe, "food", "ddim", 15, 3, 0, 1, eta=0.7)
    assert req.eta == 0.7
    mixed = app.validate_request(pipe, "food", "ddim", 15, 3, 0, 1, mix="hero:0.5, item:0.25")
    assert mixed.context == {"hero": 0.5, "item": 0.25}
    assert app.validate_request(pipe, app.UNCONDITIONAL, "ddim", 5, 1, 0, 1).context is None


def test_mix_text_round_trips():
    text = app.mix_text(LABELS, [0.5, 0, 0.25, 0, 0, 0])
    assert text == "hero:0.5, food:0.25"
    assert app.parse_mix(text, LABELS) == {"hero": 0.5, "food": 0.25}
    assert app.parse_mix("  ", LABELS) is None
    assert app.mix_text(LABELS, [0] * 6) == ""


def test_bad_input_leaves_the_handler_usable(studio: app.Studio):
    with pytest.raises(gr.Error, match="Unknown model 'nope'"):
        run(studio, model="nope")
    with pytest.raises(gr.Error, match="GIF frame time"):
        run(studio, gif_ms=5)
    assert run(studio, steps=3, n=1)[-1][2].endswith(".gif")


# -- seeds, frames and files ------------------------------------------------------------------


def test_seed_is_used_and_shown(studio: app.Studio):
    first, again, other = (run(studio, seed=s, n=2)[-1] for s in (123, 123, 124))
    *_, status, _, _, _, seed, sprites = first
    assert seed == 123 and "seed 123" in status
    np.testing.assert_array_equal(sprites, again[6])
    assert not np.array_equal(sprites, other[6])
    assert all(0 <= app.random_seed() <= app.MAX_SEED for _ in range(100))
    assert len({app.random_seed() for _ in range(20)}) > 1


@pytest.mark.parametrize("total", [1, 5, 24, 25, 99, 500, 1000])
def test_pick_steps_subsamples_evenly(total: int):
    picked = app.pick_steps(total, 24)
    assert len(picked) == min(total, 24)
    assert picked == sorted(set(picked)) and picked[0] >= 1 and picked[-1] == total
    if total > 24:  # evenly spread: no gap more than one step bigger than the average
        gaps = np.diff([0, *picked])
        assert gaps.max() - gaps.min() <= 1


def test_stream_yields_few_live_previews_with_progress(studio: app.Studio):
    outputs = run(studio, steps=90, n=1)
    live = outputs[1:-1]
    assert len(live) == app.PREVIEW_UPDATES - 1  # the last step shows as the result instead
    steps = [int(o[1].split()[1].split("/")[0]) for o in live]
    assert steps == app.pick_steps(90, app.PREVIEW_UPDATES)[:-1]
    assert all(o[1].startswith("step ") and " ms/step · t = " in o[1] for o in live)
    assert all(isinstance(o[0], Image.Image) for o in live)
    assert outputs[0][0] is None and outputs[0][1].startswith("starting:")


def test_gif_frame_count_size_and_timing(studio: app.Studio):
    *_, (preview, _, gif, sheet, files, _, sprites) = run(studio, steps=12, n=4, gif_ms=50)
    count, size, durations = gif_frames(gif)
    expected = render.grid(np.zeros((4, 16, 16, 3), np.uint8), app.SCALE).size
    assert (count, size) == (12, expected) == (12, (264, 264))
    assert durations == [50] * 11 + [app.GIF_HOLD_MS]  # final frame held longer
    with Image.open(sheet) as png:
        assert png.format == "PNG" and png.size == expected
        # The sheet is the last GIF frame: lossless, nearest-neighbour, the sprites themselves.
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), np.asarray(preview))
        np.testing.assert_array_equal(np.asarray(png.convert("RGB"))[:128:8, :128:8], sprites[0])
    assert files == [gif, sheet]


def test_long_runs_keep_the_gif_small(studio: app.Studio):
    *_, final = run(studio, sampler="ddpm", steps=T, n=1)
    count, size, _ = gif_frames(final[2])
    assert (count, size) == (app.GIF_MAX_FRAMES, (128, 128))


def test_stop_ends_the_run_with_what_it_has(studio: app.Studio):
    me, other = SimpleNamespace(session_hash="me"), SimpleNamespace(session_hash="other")
    studio.stop(me)  # a Stop pressed before the run started does not end it
    run_ = studio.generate("hero", "ddim", 50, 2.0, 0, 2, request=me)
    assert next(run_)[1].startswith("starting:") and next(run_)[1].startswith("step 2/50 - ")
    studio.stop(other)  # another visitor's Stop does not end it either
    assert next(run_)[1].startswith("step 4/50 - ")
    studio.stop(me)
    *_, (_, status, gif, _, _, seed, sprites) = run_
    assert status.startswith("stopped at step 5/50: 2 × hero · ddim") and seed == 0
    assert gif_frames(gif)[0] == 5 and sprites == gr.skip()  # frames 1..5, the last one held


def test_stop_ends_a_comparison(studio: app.Studio):
    me = SimpleNamespace(session_hash="me")
    results = studio.compare("tiny", "hero", ["ddim", "pndm"], [5, 10], 2.0, 0, 1, request=me)
    assert len(next(results)[0]) == 1
    studio.stop(me)
    assert list(results) == []


def test_output_folders_do_not_pile_up(studio: app.Studio, tmp_path: Path):
    for seed in range(7):
        run(studio, seed=seed, steps=2, n=1)
    runs = sorted((tmp_path / "out").iterdir())
    assert len(runs) == 4  # keep=4 in the fixture
    assert all(
        sorted(p.name for p in r.iterdir()) == ["denoising.gif", "sprites.png"] for r in runs
    )
    store = app.OutputStore(tmp_path / "other", keep=2)
    made = [store.new_run() for _ in range(5)]
    assert sorted((tmp_path / "other").iterdir()) == made[-2:]


def test_gradio_cache_is_swept(pipe: SpritePipeline):
    assert app.build_demo({"tiny": pipe}).delete_cache == app.DELETE_CACHE


def test_sampling_handlers_get_zerogpu_when_spaces_is_there(
    pipe: SpritePipeline, monkeypatch: pytest.MonkeyPatch
):
    wrapped = []
    monkeypatch.setattr(app, "spaces", SimpleNamespace(GPU=lambda fn: wrapped.append(fn) or fn))
    demo = app.build_demo({"tiny": pipe})
    assert {fn.__name__ for fn in wrapped} == {"generate", "compare", "draw_sprite", "first_sprite"}
    fns = {fn.api_name: fn for fn in demo.fns.values()}
    assert fns["generate"].fn in wrapped and fns["generate"].concurrency_limit == app.CONCURRENCY
    assert demo._queue.max_size == app.QUEUE_SIZE


# -- uploads and the forward process ----------------------------------------------------------


def test_upload_becomes_a_sprite(tmp_path: Path):
    im = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    im.putpixel((0, 0), (0, 0, 0, 0))  # transparent pixels turn into the white background
    im.save(tmp_path / "a.png")
    sprite = app.load_upload(tmp_path / "a.png", 16)
    assert sprite.shape == (16, 16, 3) and sprite.dtype == np.uint8
    assert tuple(sprite[8, 8]) == (255, 0, 0)
    assert tuple(sprite[0, 0]) == (255, 64, 64)  # box filter: 1 of 4 source pixels white


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("not a picture"), "not an image we can read"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100), "not an image we can read"),
        (lambda p: p.write_bytes(os.urandom(app.MAX_UPLOAD_BYTES + 1)), "the limit is 5 MB"),
        (
            lambda p: Image.new("1", (5000, 5000)).save(p),
            "5000×5000 pixels. That image has more than 16,777,216 pixels",
        ),
    ],
)
def test_bad_uploads_get_a_clear_message(tmp_path: Path, make, message: str):
    path = tmp_path / "upload.png"
    make(path)
    with pytest.raises(gr.Error) as err:
        app.load_upload(path, 16)
    assert message in err.value.message


def test_forward_process_at_t(studio: app.Studio):
    sprite, info = studio.draw_sprite("tiny", "food")
    assert sprite.shape == (16, 16, 3) and "food" in info
    *clean, table = studio.noised("tiny", sprite, 0)
    for im in clean:  # t = 0 is the sprite itself, enlarged
        np.testing.assert_array_equal(np.asarray(im)[::12, ::12], sprite)
    *noisy, table = studio.noised("tiny", sprite, T)
    assert [np.asarray(im).shape for im in noisy] == [(192, 192, 3)] * 3
    assert all(
        not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(clean, noisy, strict=True)
    )
    assert all(f"| {name} |" in table for name in ("linear", "cosine", "quadratic"))
    with pytest.raises(gr.Error, match="t must be a number from 0 to 100"):
        studio.noised("tiny", sprite, T + 1)
    assert studio.noised("tiny", None, 5)[-1].startswith("Draw a sprite")


def test_schedule_curves_cover_every_schedule():
    df = app.schedule_curves(T, points=50)
    assert set(df["schedule"]) == {"linear", "cosine", "quadratic"} and len(df) == 150
    for _, curve in df.groupby("schedule"):
        assert (np.diff(curve["alpha_bar"]) < 0).all() and (np.diff(curve["log10 SNR"]) < 0).all()
        assert math.isfinite(curve["log10 SNR"].iloc[0])  # t starts at 1: SNR(0) is infinite


# -- compare ----------------------------------------------------------------------------------


def test_compare_times_every_pair(studio: app.Studio, monkeypatch: pytest.MonkeyPatch):
    results = list(studio.compare("tiny", "hero", ["ddim", "heun"], [2, 5], 2.0, 3, 2))
    gallery, table = results[-1]
    assert len(results) == 4 and len(gallery) == 4
    assert [(r.sampler, r.steps) for r in table.itertuples()] == [
        ("ddim", 2),
        ("ddim", 5),
        ("heun", 2),
        ("heun", 5),
    ]
    assert (table["seconds"] > 0).all()
    assert gallery[0][1].startswith("ddim · 2 steps · ") and gallery[0][1].endswith(" s")
    with Image.open(gallery[0][0]) as im:
        assert im.format == "PNG"
    monkeypatch.setattr(app, "COMPARE_BUDGET", 100)
    with pytest.raises(gr.Error, match="needs 210 network calls; the limit is 100"):
        list(studio.compare("tiny", "hero", ["ddim", "heun"], [20, 50], 2.0, 3, 2))
    with pytest.raises(gr.Error, match="at least one sampler"):
        list(studio.compare("tiny", "hero", [], [5], 2.0, 3, 2))


# -- model discovery --------------------------------------------------------------------------


def test_discover_models_finds_model_folders(pipe: SpritePipeline, tmp_path: Path):
    assert app.discover_models(tmp_path / "missing") == {}
    pipe.save_pretrained(tmp_path / "b_model")
    pipe.save_pretrained(tmp_path / "sprites16")
    (tmp_path / "notes").mkdir()
    models = app.discover_models(tmp_path)
    assert list(models) == ["sprites16", "b_model"]  # the recommended model first
    assert models["b_model"].labels == LABELS


def test_main_serves_the_models_found_or_says_what_is_missing(
    pipe: SpritePipeline, monkeypatch: pytest.MonkeyPatch
):
    launched = []
    monkeypatch.setattr(app, "launch", lambda demo, **kw: launched.append(demo))
    monkeypatch.setattr(app, "discover_models", lambda: {})
    with pytest.raises(SystemExit, match=r"No model found under .*weights"):
        app.main()
    monkeypatch.setattr(app, "discover_models", lambda: {"tiny": pipe})
    app.main()
    assert len(launched) == 1 and isinstance(launched[0], gr.Blocks)


# -- the live server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(pipe: SpritePipeline, tmp_path_factory) -> str:
    demo = app.build_demo({"tiny": pipe}, app.OutputStore(tmp_path_factory.mktemp("out")))
    port = free_port()
    app.launch(
        demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_api_generate_streams_and_returns_a_gif(server: str):
    from gradio_client import Client

    client = Client(server, verbose=False)
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = [p["parameter_name"] for p in params["/generate"]["parameters"]]
    assert names[:6] == ["label", "sampler", "steps", "guidance", "seed", "n"]

    job = client.submit(
        label="creature", sampler="ddim", steps=30, guidance=2.0, seed=5, n=4, api_name="/generate"
    )
    preview, status, gif, sheet, files, seed = job.result(timeout=60)
    updates = [o[1] for o in job.outputs() if o[1].startswith("step ")]
    assert len(updates) >= 10 and updates[0].startswith("step 1/30 - ")
    assert seed == 5 and status.startswith("done: 4 × creature · ddim · 30 steps")
    assert Path(gif).read_bytes()[:6] == b"GIF89a" and Path(gif).suffix == ".gif"
    count, size, _ = gif_frames(gif)
    assert (count, size) == (30, (264, 264))
    for path in (preview, sheet):  # the browser gets PNG, not WebP/JPEG
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [Path(f).suffix for f in files] == [".gif", ".png"]


def test_api_rejects_bad_input_and_keeps_serving(server: str):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    good = {"label": "hero", "sampler": "ddim", "steps": 3, "guidance": 2.0, "seed": 1, "n": 1}
    for change, message in [
        ({"steps": 5000}, "greater than maximum value 100"),
        ({"seed": -3}, "Seed must be a whole number from 0 to 4294967295"),
        ({"sampler": "magic"}, "not in the list of choices"),
        ({"mix": "hero:2"}, "The weight of 'hero' must be a number from 0 to 1"),
    ]:
        with pytest.raises(AppError, match=message):
            client.predict(**{**good, **change}, api_name="/generate")
    assert client.predict(**good, api_name="/generate")[1].startswith("done:")


def test_eight_clients_at_once_all_get_results(server: str):
    from gradio_client import Client

    def one(seed: int) -> tuple:
        client = Client(server, verbose=False)
        return client.predict(
            label="food",
            sampler="dpmpp_2m",
            steps=8,
            guidance=2.0,
            seed=seed,
            n=2,
            api_name="/generate",
        )

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert [r[5] for r in results] == list(range(8))
    assert all(gif_frames(r[2])[0] == 8 for r in results)
    assert len({Path(r[3]).read_bytes() for r in results}) == 8  # eight different sheets
