"""Tests of the Gradio app: handlers as plain functions, then the live server via gradio_client.

Every test uses a tiny randomly initialised model, so none depends on trained weights.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from tests

import logging
import math
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import app
from diffusion import SAMPLERS, ContextUnet, Schedule, SpritePipeline, UnetConfig, render
from diffusion.options import MAX_SEED
from diffusion.text import ClipConfig, SpriteCLIP, train_tokenizer
from ui import generate as gen
from ui import limits
from ui import run as uirun
from ui.compare import CompareTab
from ui.edit import EditTab
from ui.errors import guarded
from ui.forward import ForwardTab, curves_frame
from ui.generate import GenerateTab
from ui.storage import CacheSweeper, OutputStore
from ui.studio import (
    Studio,
    default_palette,
    default_sampler,
    default_steps,
    load_upload,
    random_seed,
)

LABELS = ["hero", "creature", "food", "weapon_spell", "item", "terrain"]
T = 100
OUTPUTS = ["live", "status", "gif", "sheet", "files", "seed", "sprites"]


def tiny_pipeline(T: int = T) -> SpritePipeline:
    """A few-thousand-parameter ContextUnet with random (but not zero) output weights."""
    torch.manual_seed(0)
    config = UnetConfig(num_labels=len(LABELS), channels=(8, 16), emb_dim=16, groups=4, T=T)
    model = ContextUnet(config)
    # The real net starts with a zero output layer; random weights make every step visible.
    torch.nn.init.normal_(model.out[-1].weight, std=0.2)
    pipe = SpritePipeline(model, Schedule.linear(T), LABELS, device="cpu")
    pipe.palette = np.array([[255, 255, 255], [20, 12, 28], [211, 69, 73]], np.uint8)
    return pipe


def tiny_text_pipeline() -> SpritePipeline:
    """tiny_pipeline's network conditioned on text too, with an untrained SpriteCLIP."""
    torch.manual_seed(0)
    names = ["red potion", "blue potion", "fire ant", "skeleton warrior", "golden sword"]
    clip_config = ClipConfig(vocab_size=60, width=16, layers=1, heads=2, embed_dim=8, resolution=16)
    clip = SpriteCLIP(clip_config, train_tokenizer(names * 3, 60), ["red", "potion", "ant"])
    config = UnetConfig(num_labels=len(LABELS), channels=(8, 16), emb_dim=16, groups=4, T=T,
                        text_dim=8)  # fmt: skip
    model = ContextUnet(config)
    torch.nn.init.normal_(model.out[-1].weight, std=0.2)
    # Blocks start as the identity (zero conv2), deaf to the embedding; wake them so prompts matter.
    for name, param in model.named_parameters():
        if name.endswith("conv2.weight") or name == "text_mlp.2.weight":
            torch.nn.init.normal_(param, std=0.3)
    return SpritePipeline(model, Schedule.linear(T), LABELS, device="cpu", text_encoder=clip)


@pytest.fixture(scope="module")
def pipe() -> SpritePipeline:
    return tiny_pipeline()


@pytest.fixture
def studio(pipe: SpritePipeline, tmp_path: Path) -> Studio:
    return Studio({"tiny": pipe}, OutputStore(tmp_path / "out", keep=4))


def run(studio: Studio, **kwargs) -> list[dict]:
    args = {"label": "hero", "sampler": "ddim", "steps": 10, "guidance": 2.0, "seed": 0, "n": 4}
    args.update(kwargs)
    return list(GenerateTab(studio).generate(**args))


def final(outputs: list[dict]) -> dict:
    assert set(outputs[-1]) == set(OUTPUTS)
    return outputs[-1]


def gif_frames(path: str | Path) -> tuple[int, tuple[int, int], list[int]]:
    """(frame count, size, per-frame durations in ms) of a GIF file."""
    with Image.open(path) as im:
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
        return im.n_frames, im.size, durations


def page_request(session: str = "me") -> SimpleNamespace:
    return SimpleNamespace(session_hash=session, headers={})


def api_request(session: str = "api") -> SimpleNamespace:
    return SimpleNamespace(session_hash=session, headers={"x-gradio-user": "api"})


# -- validation: refuse with a message, never change input silently ---------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sampler": "euler"}, "Unknown sampler 'euler'. Choose one of: ddpm, ddim"),
        ({"label": "dragon"}, "Unknown label 'dragon'. Choose one of: hero, creature"),
        ({"steps": 0}, "Steps for ddim must be a whole number from 1 to 100 (got 0)"),
        ({"steps": 9999}, "Steps for ddim must be a whole number from 1 to 100 (got 9999)"),
        ({"steps": 2.5}, "Steps for ddim must be a whole number"),
        ({"steps": "ten"}, "Steps for ddim must be a whole number from 1 to 100 (got 'ten')"),
        ({"guidance": float("nan")}, "Guidance must be a number from 0 to 10 (got nan)"),
        ({"guidance": 1e9}, "Guidance must be a number from 0 to 10 (got 1000000000.0)"),
        ({"guidance": -3}, "Guidance must be a number from 0 to 10 (got -3)"),
        ({"seed": -1}, "Seed must be a whole number from 0 to 4294967295 (got -1)"),
        ({"seed": 1.5}, "Seed must be a whole number from 0 to 4294967295 (got 1.5)"),
        ({"seed": "abc"}, "Seed must be a whole number from 0 to 4294967295 (got 'abc')"),
        ({"seed": None}, "Enter a seed"),
        ({"n": 0}, "Batch size must be a whole number from 1 to 16 (got 0)"),
        ({"n": 17}, "Batch size must be a whole number from 1 to 16 (got 17)"),
        ({"eta": 1.5}, "Eta must be a number from 0 to 1 (got 1.5)"),
        ({"mix": "hero=1"}, "must look like label:weight"),
        ({"mix": "hero:0.5, dragon:0.5"}, "Unknown label 'dragon' in the mix"),
        ({"mix": "hero:0, food:0"}, "Every mix weight is 0"),
        ({"mix": "hero:nan"}, "The weight of 'hero' must be a number from 0 to 1"),
        ({"palette": "neon"}, "Palette must be raw, data, a number of colours, one of db16"),
        ({"palette": "300"}, "A palette colour count must be between 2 and 256 (got 300)."),
        ({"sampler": "ddpm", "steps": 100, "n": 16}, "needs 1,600 sprite-steps"),
    ],
)
def test_bad_input_gets_a_clear_message(
    pipe: SpritePipeline, change: dict, message: str, monkeypatch
):
    monkeypatch.setattr(uirun, "MAX_WORK", 1000)
    args = {"label": "hero", "sampler": "ddim", "steps": 10, "guidance": 2, "seed": 0, "n": 4}
    args.update({"eta": 0.0, **change})
    with pytest.raises(gr.Error) as err:
        uirun.validate_request(pipe, **args)
    assert message in err.value.message


def test_a_prompt_reaches_the_sprites_and_the_status(tmp_path: Path):
    studio = Studio({"text": tiny_text_pipeline()}, OutputStore(tmp_path / "out"))
    plain = final(run(studio, n=2))
    red = final(run(studio, n=2, prompt="  red   potion "))
    ant = final(run(studio, n=2, prompt="fire ant"))
    assert '"red potion" (hero)' in red["status"] and "new words" not in red["status"]
    # "fire" never appeared in this encoder's training words: said, not silently dropped.
    assert "new words, read as word pieces: fire" in ant["status"]
    assert not np.array_equal(red["sprites"], plain["sprites"])
    assert not np.array_equal(red["sprites"], ant["sprites"])
    again = final(run(studio, n=2, prompt="red potion"))
    assert np.array_equal(red["sprites"], again["sprites"])


def test_a_prompt_is_refused_by_a_label_model_and_when_too_long(pipe: SpritePipeline):
    args = {"label": "hero", "sampler": "ddim", "steps": 10, "guidance": 2, "seed": 0, "n": 4}
    with pytest.raises(gr.Error, match="trained on labels only and takes no prompt"):
        uirun.validate_request(pipe, **args, prompt="red potion")
    assert uirun.validate_request(pipe, **args, prompt="   ").prompt is None
    with pytest.raises(gr.Error, match="keep it to a few words"):
        uirun.validate_request(tiny_text_pipeline(), **args, prompt="red potion " * 20)


def test_the_prompt_box_shows_for_text_models_only(pipe: SpritePipeline, tmp_path: Path):
    demo = app.build_demo({"tiny": pipe, "text": tiny_text_pipeline()})
    tab = next(t for t in demo.tabs if isinstance(t, GenerateTab))
    assert tab.prompt_box.visible is False and tab.prompt_examples.visible is False
    for box in (tab.prompt_box, tab.prompt_examples):
        assert tab.on_model(demo.studio.models["text"])[box]["visible"] is True
        assert tab.on_model(pipe)[box]["visible"] is False


def test_a_huge_input_is_not_echoed_back_whole(pipe: SpritePipeline):
    with pytest.raises(gr.Error) as err:
        uirun.validate_request(pipe, "hero", "ddim", 5, 2, 0, 1, mix="x" * 100_000)
    assert len(err.value.message) < 400 and "(100,002 characters)" in err.value.message


def test_valid_input_is_normalised(pipe: SpritePipeline):
    req = uirun.validate_request(pipe, "food", "heun", 15.0, 3, 42.0, 9.0, eta=0.7)
    assert req == uirun.Request("food", "heun", 15, 3.0, 42, 9, None)  # heun: no eta
    assert isinstance(req.steps, int) and isinstance(req.seed, int)
    req = uirun.validate_request(pipe, "food", "ddim", 15, 3, 0, 1, eta=0.7, palette="data")
    assert (req.eta, req.palette) == (0.7, "data")
    mixed = uirun.validate_request(pipe, "food", "ddim", 15, 3, 0, 1, mix="hero:0.5, item:0.25")
    assert mixed.context == {"hero": 0.5, "item": 0.25}
    assert uirun.validate_request(pipe, limits.UNCONDITIONAL, "ddim", 5, 1, 0, 1).context is None


def test_mix_text_round_trips():
    text = gen.mix_text(LABELS, [0.5, 0, 0.25, 0, 0, 0])
    assert text == "hero:0.5, food:0.25"
    assert uirun.parse_mix(text, LABELS) == {"hero": 0.5, "food": 0.25}
    assert uirun.parse_mix("  ", LABELS) is None
    assert gen.mix_text(LABELS, [0] * 6) == ""


# -- no bare "Error": every failure becomes one message ----------------------------------------


def wired(fn, *names: str):
    """A guarded handler whose 'components' are their own names, so results read plainly."""
    return guarded(fn, {name: name for name in names})


def test_page_gets_a_message_and_keeps_its_results(studio: Studio, caplog):
    handler = wired(GenerateTab(studio).generate, *OUTPUTS)
    with caplog.at_level(logging.INFO, logger="sprite_studio"):
        out = list(handler("hero", "ddim", 9999, 2.0, 0, 4, request=page_request()))
    # One message in the status line; every other output left as it was (not stamped "Error").
    assert out == [{"status": "⚠️ Steps for ddim must be a whole number from 1 to 100 (got 9999)."}]
    assert len(caplog.records) == 1 and "\n" not in caplog.text.strip()  # one line, no traceback


def test_api_gets_the_message_as_an_error(studio: Studio):
    handler = wired(GenerateTab(studio).generate, *OUTPUTS)
    with pytest.raises(gr.Error, match="Seed must be a whole number"):
        list(handler("hero", "ddim", 5, 2.0, -1, 4, request=api_request()))


def test_unexpected_failures_say_what_to_try_and_log_the_traceback(studio: Studio, caplog):
    tab = GenerateTab(studio)

    def broken(*args, **kwargs):
        yield {"status": "starting"}
        raise RuntimeError("disk on fire")

    tab.generate = broken
    with caplog.at_level(logging.INFO, logger="sprite_studio"):
        out = list(wired(tab.generate, *OUTPUTS)(request=page_request()))
    assert out[0] == {"status": "starting"}
    assert out[1]["status"].startswith("⚠️ Something went wrong on the server (RuntimeError)")
    assert "try again" in out[1]["status"]
    assert "disk on fire" in caplog.text and "Traceback" in caplog.text
    with pytest.raises(gr.Error, match="Something went wrong"):
        list(wired(tab.generate, *OUTPUTS)(request=api_request()))


def test_a_rejected_upload_keeps_the_sprite_and_says_why(studio: Studio, tmp_path: Path):
    bad = tmp_path / "bad.png"
    bad.write_text("not a picture")
    tab = ForwardTab(studio)
    handler = guarded(tab.use_upload, {"source": "source", "info": "info"}, status="info")
    out = handler("tiny", str(bad))
    assert out == {"info": "⚠️ " + out["info"][3:]}  # no new source: the sprite stays
    assert "not an image we can read" in out["info"]
    good = tmp_path / "good.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(good)
    sprite = handler("tiny", str(good))["source"]
    assert (sprite[..., :3] == (255, 0, 0)).all()


# -- seeds, frames, progress and files --------------------------------------------------------


def test_seed_is_used_and_shown(studio: Studio):
    first, again, other = (final(run(studio, seed=s, n=2)) for s in (123, 123, 124))
    assert first["seed"] == 123 and "seed 123" in first["status"]
    np.testing.assert_array_equal(first["sprites"], again["sprites"])
    assert not np.array_equal(first["sprites"], other["sprites"])
    assert all(0 <= random_seed() <= MAX_SEED for _ in range(100))
    assert len({random_seed() for _ in range(20)}) > 1


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_one_step_runs_end_to_end(studio: Studio, sampler: str):
    out = final(run(studio, sampler=sampler, steps=1, n=2))
    assert out["status"].startswith(f"done: 2 × hero · {sampler} · 1 steps")
    assert gif_frames(out["gif"])[0] == 1
    assert out["files"] == [out["gif"], out["sheet"]]


@pytest.mark.parametrize("total", [1, 5, 24, 25, 99, 500, 1000])
def test_pick_steps_subsamples_evenly(total: int):
    picked = uirun.pick_steps(total, 24)
    assert len(picked) == min(total, 24)
    assert picked == sorted(set(picked)) and picked[0] >= 1 and picked[-1] == total
    if total > 24:  # evenly spread: no gap more than one step bigger than the average
        gaps = np.diff([0, *picked])
        assert gaps.max() - gaps.min() <= 1


def test_previews_come_by_time_with_percent_and_time_left(studio: Studio, monkeypatch):
    clock = iter(np.arange(0, 1000, 1 / 16))  # every look at the clock: 1/16 s later (exact)
    monkeypatch.setattr(uirun.time, "perf_counter", lambda: float(next(clock)))
    outputs = run(studio, steps=60, n=1)
    live = outputs[1:-1]
    assert outputs[0]["live"] is None and outputs[0]["status"].startswith("starting:")
    steps = [int(o["status"].split()[1].split("/")[0]) for o in live]
    # 1/16 s a step, a preview at least every 0.2 s: every 4th step from the first, 4 a second.
    assert steps[0] == 1 and set(np.diff(steps)) == {4}
    assert len(live) == 15 >= 4 * 60 / 16 - 1
    assert all(isinstance(o["live"], Image.Image) for o in live)
    assert live[0]["status"].startswith("step 1/60 · 1% · 3.7 s left · 62 ms/step · t = ")
    assert outputs[-1]["status"].startswith("done:")


def test_the_end_shows_each_result_once(studio: Studio):
    out = final(run(studio, steps=12, n=4, gif_ms=50))
    count, size, durations = gif_frames(out["gif"])
    expected = render.grid(np.zeros((4, 16, 16, 3), np.uint8), limits.SPRITE_PX // 16).size
    assert (count, size) == (12, expected) == (12, (264, 264))
    assert durations == [50] * 11 + [limits.GIF_HOLD_MS]  # final frame held longer
    # The live panel ends on the sheet itself (the same file), not a second copy of it.
    assert out["live"] == out["sheet"]
    with Image.open(out["sheet"]) as png:
        assert png.format == "PNG" and png.size == expected
        np.testing.assert_array_equal(
            np.asarray(png.convert("RGB"))[:128:8, :128:8], out["sprites"][0]
        )


def test_palette_choice_reaches_the_sprites(studio: Studio, pipe: SpritePipeline):
    out = final(run(studio, steps=4, n=2, palette="data"))
    assert {tuple(c) for c in out["sprites"].reshape(-1, 3)} <= {tuple(c) for c in pipe.palette}
    assert "palette data" in out["status"]


def test_long_runs_keep_the_gif_small(studio: Studio):
    out = final(run(studio, sampler="ddpm", steps=T, n=1))
    assert gif_frames(out["gif"])[:2] == (limits.GIF_MAX_FRAMES, (128, 128))


# -- Stop, queues and fair use ----------------------------------------------------------------


def test_stop_ends_the_run_with_what_it_has(studio: Studio, monkeypatch):
    monkeypatch.setattr(uirun, "PREVIEW_INTERVAL_S", 0.0)  # a preview every step
    me, other = page_request("me"), page_request("other")
    studio.stop(me)  # a Stop pressed before this run was asked for does not end it
    studio.click(me)
    run_ = GenerateTab(studio).generate("hero", "ddim", 50, 2.0, 0, 2, request=me)
    assert next(run_)["status"].startswith("starting:")
    assert next(run_)["status"].startswith("step 1/50 · ")
    studio.stop(other)  # another visitor's Stop does not end it either
    assert next(run_)["status"].startswith("step 2/50 · ")
    studio.stop(me)
    out = list(run_)[-1]
    assert out["status"].startswith("stopped at step 3/50: 2 × hero · ddim") and out["seed"] == 0
    assert gif_frames(out["gif"])[0] == 3 and out["sprites"] == gr.skip()


def test_stop_during_the_first_step_gives_a_one_frame_gif(studio: Studio):
    me = page_request("early")
    studio.click(me)
    run_ = GenerateTab(studio).generate("hero", "ddpm", 100, 2.0, 0, 16, request=me)
    next(run_)  # "starting": the first step is being computed when Stop arrives
    studio.stop(me)
    out = list(run_)[-1]
    assert out["status"].startswith("stopped at step 1/100")
    assert gif_frames(out["gif"])[0] == 1


def test_stop_while_queued_cancels_the_run_when_it_starts(studio: Studio):
    me = page_request("queued")
    studio.click(me)  # Generate pressed; the run waits in the queue
    studio.stop(me)  # Stop pressed while it waits
    out = run(studio, request=me)
    assert len(out) == 1 and out[0]["status"].startswith("stopped before the first step")


def test_one_session_cannot_take_the_queue(studio: Studio):
    me, you = page_request("greedy"), page_request("you")
    for _ in range(limits.MAX_JOBS_PER_SESSION):
        studio.click(me)
    with pytest.raises(gr.Error, match="already have 2 runs going or waiting"):
        studio.click(me)
    studio.click(you)  # others are not affected
    run(studio, steps=2, n=1, request=me)  # a finished run frees a place
    studio.click(me)
    with pytest.raises(gr.Error, match="Steps"):
        run(studio, steps=0, request=me)  # and so does a refused one
    studio.click(me)


def test_a_live_run_keeps_its_folder(tmp_path: Path):
    store = OutputStore(tmp_path / "runs", keep=2)
    with store.run() as live:
        for _ in range(5):
            with store.run():
                pass
        assert live.is_dir() and store.is_live(live / "denoising.gif")
    assert not store.is_live(live)
    with store.run():
        pass
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_output_folders_do_not_pile_up(studio: Studio, tmp_path: Path):
    for seed in range(7):
        run(studio, seed=seed, steps=2, n=1)
    runs = sorted((tmp_path / "out").iterdir())
    assert len(runs) == 4  # keep=4 in the fixture
    assert all(
        sorted(p.name for p in r.iterdir()) == ["denoising.gif", "sprites.png"] for r in runs
    )


# -- the cache sweeper ------------------------------------------------------------------------


def make_file(path: Path, size: int, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_sweeper_bounds_age_and_size(tmp_path: Path):
    old = make_file(tmp_path / "a" / "old.gif", 10, 4000)
    mid = [make_file(tmp_path / "b" / f"{i}.png", 100, 1000 - i) for i in range(5)]
    fresh = make_file(tmp_path / "c" / "fresh.png", 1000, 1)
    kept = make_file(tmp_path / "d" / "live.gif", 10, 5000)
    sweeper = CacheSweeper(
        [tmp_path], max_age_s=3600, min_age_s=60, max_bytes=1300, protect=lambda p: p == kept
    )
    assert sweeper.sweep() == 4  # the old one, then the oldest until 1,300 bytes remain
    assert not old.exists() and kept.exists() and fresh.exists()
    assert [p.exists() for p in mid] == [False, False, False, True, True]
    # An emptied folder goes once it has been left alone for min_age_s (a request may be
    # about to write into a folder it has just made).
    assert (tmp_path / "a").is_dir()
    os.utime(tmp_path / "a", (time.time() - 100,) * 2)
    assert sweeper.sweep() == 0 and not (tmp_path / "a").exists() and (tmp_path / "b").is_dir()


def test_sweeper_survives_concurrent_writes(tmp_path: Path):
    sweeper = CacheSweeper([tmp_path], max_age_s=0, min_age_s=0, max_bytes=0)
    errors = []
    writes = 300  # a fixed amount of work per writer, so a slow machine only takes longer

    def churn(w: int) -> None:
        for i in range(writes):
            try:
                make_file(tmp_path / f"d{i % 7}" / f"{w}-{i}.bin", 10, 0)
                # Also delete a file of its own, from the folder it went into.
                (tmp_path / f"d{(i - 3) % 7}" / f"{w}-{i - 3}.bin").unlink(missing_ok=True)
            except OSError:
                pass  # the sweeper removed the folder first: what a real request would retry

    writers = [threading.Thread(target=churn, args=(w,)) for w in range(3)]
    for w in writers:
        w.start()
    sweeps = 0
    while any(w.is_alive() for w in writers) or sweeps < 3:
        try:
            sweeper.sweep()
        except Exception as err:  # pragma: no cover - the failure being tested for
            errors.append(err)
        sweeps += 1
    for w in writers:
        w.join()
    assert errors == []
    sweeper.sweep(now=time.time() + 1)
    assert list(tmp_path.rglob("*.bin")) == []  # every file the writers left was swept


# -- uploads and the forward process ----------------------------------------------------------


def test_upload_becomes_a_sprite(tmp_path: Path):
    im = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    im.putpixel((0, 0), (0, 0, 0, 0))  # transparent pixels turn into the white background
    im.save(tmp_path / "a.png")
    sprite, note = load_upload(tmp_path / "a.png", 16)
    assert note == "your upload, resized from 32×32 to 16×16"
    assert sprite.shape == (16, 16, 3) and sprite.dtype == np.uint8
    assert tuple(sprite[8, 8]) == (255, 0, 0)
    assert tuple(sprite[0, 0]) == (255, 64, 64)  # box filter: 1 of 4 source pixels white


def test_sixteen_bit_greyscale_keeps_its_levels(tmp_path: Path):
    levels = np.array([[0, 16384], [32768, 65535]], np.uint16).repeat(8, 0).repeat(8, 1)
    Image.fromarray(levels).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    sprite, _ = load_upload(tmp_path / "grey16.png", 16)
    assert sprite[::8, ::8, 0].tolist() == [[0, 64], [128, 255]]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("not a picture"), "not an image we can read"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100), "not an image we can read"),
        (lambda p: p.write_bytes(os.urandom(limits.MAX_UPLOAD_BYTES + 1)), "the limit is 5 MB"),
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
        load_upload(path, 16)
    assert message in err.value.message


def test_forward_process_at_t(studio: Studio):
    tab = ForwardTab(studio)
    sprite = tab.draw_sprite("tiny", "food")["source"]
    assert sprite.shape == (16, 16, 3)
    at0 = tab.noised("tiny", sprite, 0)
    np.testing.assert_array_equal(np.asarray(at0["clean"])[::12, ::12], sprite)
    for kind in ("linear", "cosine", "quadratic"):  # t = 0 is the sprite itself, enlarged
        np.testing.assert_array_equal(np.asarray(at0[kind])[::12, ::12], sprite)
    atT = tab.noised("tiny", sprite, T)
    assert all(np.asarray(atT[k]).shape == (192, 192, 3) for k in ("linear", "cosine"))
    assert not np.array_equal(np.asarray(at0["linear"]), np.asarray(atT["linear"]))
    assert all(f"| {name} |" in atT["table"] for name in ("linear", "cosine", "quadratic"))
    # The plots mark the current t.
    marker = atT["abar_plot"][atT["abar_plot"]["schedule"] == "t now"]
    assert marker["t"].tolist() == [T, T]
    with pytest.raises(gr.Error, match="t must be a number from 0 to 100"):
        tab.noised("tiny", sprite, T + 1)
    assert tab.noised("tiny", None, 5)["table"].startswith("Draw a sprite")


def test_forward_tab_starts_where_the_sprite_is_visible(pipe: SpritePipeline):
    from ui.forward import start_t

    t0 = start_t(pipe.schedule.T)
    assert t0 > 0 and float(pipe.schedule.alpha_bar(t0)) > 0.8


def test_schedule_curves_cover_every_schedule():
    df = curves_frame(T)
    assert set(df["schedule"]) == {"linear", "cosine", "quadratic"}
    for _, curve in df.groupby("schedule"):
        assert (np.diff(curve["alpha_bar"]) < 0).all() and (np.diff(curve["log10 SNR"]) < 0).all()
        assert math.isfinite(curve["log10 SNR"].iloc[0])  # t starts at 1: SNR(0) is infinite


# -- compare ----------------------------------------------------------------------------------


def test_compare_times_every_pair(studio: Studio, monkeypatch: pytest.MonkeyPatch):
    tab = CompareTab(studio)
    results = list(tab.compare("tiny", "hero", ["ddim", "heun"], [2, 5], 2.0, 3, 2))
    last = results[-1]
    assert len(results) == 5 and len(last["gallery"]) == 4
    assert [(r.sampler, r.steps) for r in last["table"].itertuples()] == [
        ("ddim", 2),
        ("ddim", 5),
        ("heun", 2),
        ("heun", 5),
    ]
    assert (last["table"]["seconds"] > 0).all()
    assert last["gallery"][0][1].startswith("ddim · 2 steps · ")
    # Before the first run the empty table already names the columns a run fills.
    built = next(
        t for t in app.build_demo({"tiny": studio.pipe(None)}).tabs if isinstance(t, CompareTab)
    )
    assert (
        built.table.value["headers"]
        == list(last["table"].columns)
        == ["sampler", "steps", "seconds", "ms/step"]
    )
    # Each run fits the limit; together they do not. Heun's 20 steps are 39 network calls (its
    # last step is one Euler call): (20 + 50 + 39 + 99) calls x 2 sprites.
    monkeypatch.setattr(uirun, "MAX_WORK", 200)
    with pytest.raises(gr.Error, match=r"needs 416 sprite-steps .*; the limit is 200"):
        list(tab.compare("tiny", "hero", ["ddim", "heun"], [20, 50], 2.0, 3, 2))
    with pytest.raises(gr.Error, match="at least one sampler"):
        list(tab.compare("tiny", "hero", [], [5], 2.0, 3, 2))


def test_stop_ends_a_comparison(studio: Studio):
    me = page_request("cmp")
    studio.click(me)
    results = CompareTab(studio).compare("tiny", "hero", ["ddim", "pndm"], [5, 10], 2.0, 0, 1, me)
    next(results)
    assert len(next(results)["gallery"]) == 1
    studio.stop(me)
    assert [r["status"] for r in results] == ["stopped after 1 of 4 runs"]


# -- edit and morph ---------------------------------------------------------------------------


def editor_value(sprite: np.ndarray, painted: np.ndarray | None = None) -> dict:
    """What gr.ImageEditor hands the handler: the enlarged sprite and a layer of strokes."""
    scale = 256 // sprite.shape[0]
    background = np.asarray(render.grid(sprite, scale).convert("RGBA"))
    layers = []
    if painted is not None:
        layer = np.zeros((256, 256, 4), np.uint8)
        layer[painted.repeat(scale, 0).repeat(scale, 1)] = (255, 0, 255, 255)
        layers.append(layer)
    return {"background": background, "layers": layers, "composite": background}


def test_edit_repaints_only_the_brushed_region(studio: Studio, pipe: SpritePipeline):
    sprite = pipe.generate("hero", n=1, seed=3, steps=5)[0]
    brushed = np.zeros((16, 16), bool)
    brushed[4:12, 8:] = True
    out = list(EditTab(studio).edit(editor_value(sprite, brushed), "food", 1.0, "ddim", 10, 2.0,
                                    5, 3, resample=2))  # fmt: skip
    result = final(out)
    assert result["status"].startswith("done: 3 × food · repaint, strength 1 · ddim · 10 steps")
    for s in result["sprites"]:
        np.testing.assert_array_equal(s[~brushed], sprite[~brushed])  # untouched: exact
    assert not np.array_equal(result["sprites"][0][brushed], sprite[brushed])
    assert gif_frames(result["gif"])[0] == 10


def test_edit_without_strokes_makes_variations(studio: Studio, pipe: SpritePipeline):
    sprite = pipe.generate("hero", n=1, seed=3, steps=5)[0]
    tab = EditTab(studio)
    result = final(list(tab.edit(editor_value(sprite), "hero", 0.3, "ddim", 20, 2.0, 1, 2)))
    assert result["status"].startswith("done: 2 × hero · variation, strength 0.3")
    assert gif_frames(result["gif"])[0] == 6  # only the last 30% of the 20 steps run
    with pytest.raises(gr.Error, match="Start from a sprite"):
        list(tab.edit(None, "hero", 0.5, "ddim", 5, 2.0, 1, 1))
    with pytest.raises(gr.Error, match=r"Strength must be a number from 0\.01 to 1"):
        list(tab.edit(editor_value(sprite), "hero", 0, "ddim", 5, 2.0, 1, 1))
    assert tab.new_sprite("tiny", "food")["editor"]["background"].size == (256, 256)
    with pytest.raises(gr.Error, match="Nothing generated yet"):
        tab.use_last(None)


def test_edit_and_morph_take_a_prompt(tmp_path: Path):
    from ui.morph import MorphTab

    text_pipe = tiny_text_pipeline()
    studio = Studio({"text": text_pipe}, OutputStore(tmp_path / "out"))
    sprite = text_pipe.generate("hero", n=1, seed=3, steps=5)[0]
    edit = EditTab(studio)
    args = (editor_value(sprite), "food", 0.6, "ddim", 10, 2.0, 1, 2)
    plain = final(list(edit.edit(*args)))
    red = final(list(edit.edit(*args, prompt="red potion")))
    assert red["status"].startswith('done: 2 × "red potion" (food) · variation')
    assert not np.array_equal(red["sprites"], plain["sprites"])
    morph = list(MorphTab(studio).morph("hero", 1, "food", 2, 4, "ddim", 6, 2.0, prompt="red ant"))
    assert morph[-1]["status"].startswith('done: "red ant": hero (seed 1) → food (seed 2)')
    with Image.open(morph[-1]["strip"]) as strip:
        first = np.asarray(strip.convert("RGB"))[::4, ::4][:16, :16]
    end = text_pipe.generate(
        "hero", seed=1, sampler="ddim", steps=6, guidance=2.0, eta=0.0, prompt="red ant"
    )
    assert np.abs(first.astype(int) - end[0]).max() <= 1


def test_morph_loops_between_two_sprites(studio: Studio, pipe: SpritePipeline):
    from ui.morph import MorphTab

    tab = MorphTab(studio)
    result = list(tab.morph("hero", 1, "food", 2, 6, "ddim", 8, 2.0))[-1]
    assert result["status"].startswith("done: hero (seed 1) → food (seed 2), 6 frames")
    count, size, _ = gif_frames(result["gif"])
    assert count == 10 and size == (128, 128)  # 6 frames there, 4 back: a seamless loop
    with Image.open(result["strip"]) as strip:
        assert strip.size == ((6 * 17 - 1) * 4, 16 * 4)
        first = np.asarray(strip.convert("RGB"))[::4, ::4][:16, :16]
    end = pipe.generate("hero", n=1, seed=1, sampler="ddim", steps=8, guidance=2.0, eta=0.0)[0]
    assert np.abs(first.astype(int) - end).max() <= 1
    with pytest.raises(gr.Error, match="deterministic sampler"):
        list(tab.morph("hero", 1, "food", 2, 6, "ddpm", 8, 2.0))
    with pytest.raises(gr.Error, match="Frames must be a whole number from 2 to 48"):
        list(tab.morph("hero", 1, "food", 2, 100, "ddim", 8, 2.0))


# -- the shell --------------------------------------------------------------------------------


def test_discover_models_finds_model_folders(pipe: SpritePipeline, tmp_path: Path):
    assert app.discover_models(tmp_path / "missing") == {}
    for name in ("b_model", "sprites16", "sprites16-text"):
        pipe.save_pretrained(tmp_path / name)
    (tmp_path / "notes").mkdir()
    tiny_text_pipeline().text_encoder.save_pretrained(tmp_path / "spriteclip")  # not a model
    models = app.discover_models(tmp_path)
    assert list(models) == ["sprites16-text", "sprites16", "b_model"]  # recommended ones first
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


def test_sampling_handlers_get_zerogpu_when_spaces_is_there(
    pipe: SpritePipeline, monkeypatch: pytest.MonkeyPatch
):
    wrapped = []
    monkeypatch.setattr(app, "spaces", SimpleNamespace(GPU=lambda fn: wrapped.append(fn) or fn))
    demo = app.build_demo({"tiny": pipe})
    assert {fn.__name__ for fn in wrapped} == {
        "generate", "edit", "new_sprite", "morph", "compare", "draw_sprite", "first_sprite",
        "show", "explore", "first_look", "upscale", "sprites",
    }  # fmt: skip
    fns = {fn.api_name: fn for fn in demo.fns.values()}
    assert fns["generate"].fn in wrapped and fns["generate"].concurrency_limit == limits.CONCURRENCY
    assert fns["upscale"].fn in wrapped and fns["upscale"].concurrency_id == limits.SAMPLING_QUEUE
    assert fns["sprites"].fn in wrapped and fns["sprites"].concurrency_id == limits.SAMPLING_QUEUE
    assert demo._queue.max_size == limits.QUEUE_SIZE
    assert not demo.delete_cache  # Gradio's sweep dies under traffic; ours runs instead


def test_every_tab_is_a_module_and_one_line_in_the_shell():
    import ui

    names = [t.__name__ for t in ui.TABS]
    assert names == [
        "GenerateTab", "EditTab", "MorphTab", "ForwardTab", "CompareTab", "GuidanceTab", "ToyTab"
    ]  # fmt: skip
    assert all(hasattr(t, "build") and hasattr(t, "on_model") for t in ui.TABS)


# -- the live server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(pipe: SpritePipeline, tmp_path_factory) -> str:
    demo = app.build_demo({"tiny": pipe}, OutputStore(tmp_path_factory.mktemp("out")))
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
        label="creature", sampler="ddpm", steps=100, guidance=2.0, seed=5, n=4, api_name="/generate"
    )
    preview, status, gif, sheet, files, seed = job.result(timeout=60)
    assert seed == 5 and status.startswith("done: 4 × creature · ddpm · 100 steps")
    assert Path(gif).read_bytes()[:6] == b"GIF89a" and Path(gif).suffix == ".gif"
    assert gif_frames(gif)[:2] == (limits.GIF_MAX_FRAMES, (264, 264))
    for path in (preview, sheet):  # the browser gets PNG, not WebP/JPEG
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [Path(f).suffix for f in files] == [".gif", ".png"]


def test_a_session_does_not_grow_with_its_runs(pipe: SpritePipeline, tmp_path: Path, monkeypatch):
    """Gradio files a new component for every output an update leaves out; previews leave none
    out, so one client's session keeps its size however many runs it streams."""
    from gradio_client import Client

    monkeypatch.setattr(uirun, "PREVIEW_INTERVAL_S", 0.0)  # a preview after every step
    demo = app.build_demo({"tiny": pipe}, OutputStore(tmp_path / "out"))
    port = free_port()
    app.launch(
        demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)

        def run() -> None:
            client.predict(
                label="hero", sampler="ddim", steps=8, guidance=2.0, seed=0, n=1,
                api_name="/generate",
            )  # fmt: skip

        def session_size() -> int:
            return sum(len(s.blocks_config.blocks) for s in demo.state_holder.session_data.values())

        run()
        before = session_size()
        for _ in range(5):
            run()
        assert session_size() == before
    finally:
        demo.close()


def test_api_steps_one_and_bad_input(server: str):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    good = {"label": "hero", "sampler": "ddim", "steps": 1, "guidance": 2.0, "seed": 1, "n": 1}
    assert client.predict(**good, api_name="/generate")[1].startswith("done:")
    for change, message in [
        ({"steps": 5000}, "Steps for ddim must be a whole number from 1 to 100 (got 5000)"),
        ({"steps": "many"}, "Steps for ddim must be a whole number from 1 to 100 (got 'many')"),
        ({"seed": -3}, "Seed must be a whole number from 0 to 4294967295"),
        ({"guidance": 1e9}, "Guidance must be a number from 0 to 10"),
        ({"sampler": "magic"}, "not in the list of choices"),
        ({"mix": "hero:2"}, "The weight of 'hero' must be a number from 0 to 1"),
    ]:
        with pytest.raises(AppError, match=re.escape(message)):
            client.predict(**{**good, **change}, api_name="/generate")
    assert client.predict(**good, api_name="/generate")[1].startswith("done:")


def test_api_sprites_answers_once_with_the_sprites_inlined(
    server: str, pipe: SpritePipeline, monkeypatch: pytest.MonkeyPatch
):
    import base64
    import io

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    monkeypatch.setitem(pipe.defaults, "palette", "data")  # the server's model, in this process
    client = Client(server, verbose=False)
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = [p["parameter_name"] for p in params["/sprites"]["parameters"]]
    assert names == ["label", "n", "seed", "prompt", "model", "sampler", "steps", "guidance"]
    url, status = client.predict("creature", 4, 5, api_name="/sprites")
    assert status.startswith("done: 4 × creature · ") and " s in all" in status
    head, data = url.split(",", 1)
    assert head == "data:image/png;base64"
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
    # The model's defaults, its palette stage included, laid one pixel per sprite pixel.
    sampler = default_sampler(pipe)
    want = pipe.generate(
        "creature", n=4, seed=5, sampler=sampler, steps=default_steps(pipe, sampler),
        guidance=pipe.defaults["guidance"], palette=default_palette(pipe),
    )  # fmt: skip
    assert np.array_equal(got, np.asarray(render.grid(want, 1)))
    _, status = client.predict("hero", 1, 0, "", "tiny", "ddim", 3, 1.0, api_name="/sprites")
    assert status.startswith("done: 1 × hero · ddim · 3 steps · guidance 1 ")
    _, status = client.predict("", 1, 0, api_name="/sprites")  # no label
    assert status.startswith("done: 1 × unconditional · ")
    for args, message in [
        (("dragon",), "Unknown label 'dragon'"),
        (("hero", 1, 0, "", "", "ddim", 5000), "Steps for ddim must be a whole number"),
        (("hero", 1, -3), "Seed must be a whole number from 0 to 4294967295"),
        (("hero", 1, 0, "", None, "nope"), "Unknown sampler 'nope'"),
        (("hero", 1, 0, "", ["tiny"]), "Unknown model ['tiny']"),
    ]:
        with pytest.raises(AppError, match=re.escape(message)):
            client.predict(*args, api_name="/sprites")


def test_api_edit_and_morph(server: str, pipe: SpritePipeline, tmp_path: Path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    morph = client.predict(
        label_a="hero", seed_a=1, label_b="item", seed_b=2, frames=4, sampler="ddim", steps=5,
        guidance=2.0, api_name="/morph",
    )  # fmt: skip
    assert morph[0].startswith("done: hero (seed 1) → item (seed 2), 4 frames")
    assert gif_frames(morph[1])[0] == 6
    sprite = pipe.generate("hero", n=1, seed=0, steps=4)[0]
    render.grid(sprite, 16).save(tmp_path / "sprite.png")
    editor = {"background": handle_file(str(tmp_path / "sprite.png")), "layers": [],
              "composite": None}  # fmt: skip
    out = client.predict(editor, "food", 0.5, "ddim", 10, 2.0, 4, 2, 1, api_name="/edit")
    assert out[1].startswith("done: 2 × food · variation, strength 0.5")


def test_eight_clients_at_once_all_get_results(server: str):
    from gradio_client import Client

    def one(seed: int) -> tuple:
        client = Client(server, verbose=False)
        return client.predict(
            label="food", sampler="dpmpp_2m", steps=8, guidance=2.0, seed=seed, n=2,
            api_name="/generate",
        )  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert [r[5] for r in results] == list(range(8))
    assert all(gif_frames(r[2])[0] == 8 for r in results)
    assert len({Path(r[3]).read_bytes() for r in results}) == 8  # eight different sheets


def test_cache_stays_bounded_under_concurrent_load(pipe: SpritePipeline, tmp_path: Path):
    from gradio_client import Client

    cache = tmp_path / "gradio-cache"
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    try:
        demo = app.build_demo({"tiny": pipe}, OutputStore(tmp_path / "out"))
        port = free_port()
        app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                   quiet=True)  # fmt: skip
        sweeper = CacheSweeper(
            [cache, tmp_path / "out"], every_s=0.05, max_age_s=6.0, min_age_s=6.0, max_bytes=0,
            protect=demo.studio.store.is_live,
        ).start()  # fmt: skip

        def one(seed: int) -> str:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            return client.predict(
                label="food", sampler="ddim", steps=6, guidance=2.0, seed=seed, n=2,
                api_name="/generate",
            )[1]  # fmt: skip

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(32)))
        assert all(s.startswith("done:") for s in statuses)
        # Every file lived at least 6 s (long enough for its client to fetch it even on a
        # loaded machine), and none is left 6.5 s after the last: the sweeper lived through it.
        time.sleep(6.5)
        files = [p for p in cache.rglob("*") if p.is_file()]
        assert files == []
        sweeper.stop()
        demo.close()
    finally:
        del os.environ["GRADIO_TEMP_DIR"]


def test_malloc_arenas_are_capped_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the arena cap is glibc's; this C library has its own allocator")
    assert app.limit_malloc_arenas(2) is True
