"""The app with a latent model and an upscaler: the latent view, "Upscale 2x", and how the app
sets an upscaler apart from the models that draw.

The models are tiny and untrained (random weights, as in tests.test_app), built in a blink: a
32x32 RGBA latent model (its autoencoder maps 32x32 to 8x8x4) and a 16 -> 32 upscaler, beside
tests.test_app's 16x16 model, whose sprites the upscaler takes.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import io
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import app
from diffusion import ContextUnet, Schedule, SpritePipeline, UnetConfig, render
from diffusion.autoencoder import SpriteVAE, VAEConfig
from tests.test_app import LABELS, T, page_request, tiny_pipeline
from ui import limits
from ui import run as uirun
from ui.errors import guarded
from ui.generate import GenerateTab
from ui.storage import OutputStore
from ui.studio import Studio, default_sampler, default_steps


def tiny_latent_pipeline() -> SpritePipeline:
    """A 32x32 RGBA latent model: an untrained autoencoder (32x32x4 <-> 8x8x4) and a tiny
    ContextUnet on its latents."""
    torch.manual_seed(1)
    vae = SpriteVAE(VAEConfig(resolution=32, channels=(8, 8, 8), latent_channels=4, groups=4))
    config = UnetConfig(num_labels=len(LABELS), channels=(8, 16), emb_dim=16, groups=4, T=T,
                        in_channels=4, resolution=8)  # fmt: skip
    model = ContextUnet(config)
    torch.nn.init.normal_(model.out[-1].weight, std=0.2)
    return SpritePipeline(model, Schedule.linear(T), LABELS, device="cpu", autoencoder=vae)


def tiny_upscaler() -> SpritePipeline:
    """An untrained 16 -> 32 RGBA upscaler (SR3): it takes tiny_pipeline's sprites."""
    torch.manual_seed(2)
    config = UnetConfig(num_labels=len(LABELS), channels=(8, 16), emb_dim=16, groups=4, T=T,
                        in_channels=4, resolution=32, low_res=16)  # fmt: skip
    model = ContextUnet(config)
    torch.nn.init.normal_(model.out[-1].weight, std=0.2)
    return SpritePipeline(model, Schedule.linear(T), LABELS, device="cpu")


@pytest.fixture(scope="module")
def models() -> dict[str, SpritePipeline]:
    return {"tiny": tiny_pipeline(), "latent": tiny_latent_pipeline(), "up": tiny_upscaler()}


@pytest.fixture
def studio(models: dict[str, SpritePipeline], tmp_path: Path) -> Studio:
    return Studio(models, OutputStore(tmp_path / "out", keep=8))


def generate(tab: GenerateTab, model: str, **kwargs) -> list[dict]:
    args = {"label": "hero", "sampler": "ddim", "steps": 6, "guidance": 2.0, "seed": 4, "n": 2}
    return list(tab.generate(**{**args, **kwargs}, model=model, request=page_request()))


# -- the models ---------------------------------------------------------------------------------


def test_an_upscaler_is_set_apart_from_the_models_that_draw(models, tmp_path: Path, monkeypatch):
    for name, pipe in models.items():
        pipe.save_pretrained(tmp_path / name)
    found = app.discover_models(tmp_path)
    assert sorted(found) == ["latent", "tiny", "up"] and found["up"].low_res == 16
    assert found["latent"].latent and found["latent"].resolution == 32
    demo = app.build_demo(found, OutputStore(tmp_path / "out"))
    studio, tab = demo.studio, demo.tabs[0]
    assert list(studio.models) == ["latent", "tiny"] and studio.upscaler is found["up"]
    dropdowns = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown)]
    picker = next(d for d in dropdowns if d.label == "Model")
    assert [value for _, value in picker.choices] == ["latent", "tiny"]
    # The button shows for the model whose sprites the upscaler takes, the latent view for the
    # latent model; the app opens on "latent" (first by name).
    assert not tab.upscale_btn.visible and tab.latent_box.visible
    assert tab.on_model(found["tiny"])[tab.upscale_btn]["visible"]
    assert not tab.on_model(found["tiny"])[tab.latent_box]["visible"]
    assert "8×8×4 latent" in app.model_info("latent", found["latent"])
    # An upscaler alone draws nothing: the app says no model was found.
    with pytest.raises(ValueError, match="at least one model that draws sprites"):
        Studio({"up": found["up"]})
    monkeypatch.setattr(app, "discover_models", lambda: {"up": found["up"]})
    with pytest.raises(SystemExit, match="No model found under"):
        app.main()


def test_without_an_upscaler_there_is_no_upscale_button(tmp_path: Path):
    demo = app.build_demo({"tiny": tiny_pipeline()}, OutputStore(tmp_path))
    assert demo.studio.upscaler is None and not demo.tabs[0].upscale_btn.visible
    assert not demo.tabs[0].latent_box.visible


# -- the latent made visible ----------------------------------------------------------------------


def test_the_page_streams_a_latent_models_latent(studio: Studio, monkeypatch):
    monkeypatch.setattr(uirun, "PREVIEW_INTERVAL_S", 0.0)  # a preview every step
    tab = GenerateTab(studio)
    out = list(
        tab.generate("hero", "ddim", 6, 2.0, 4, 2, model="latent", request=page_request(),
                     latent_view=True)
    )  # fmt: skip
    assert all(uirun.LATENT in update for update in out) and out[0][uirun.LATENT] is None
    frames = list(studio.pipe("latent").stream("hero", n=2, sampler="ddim", steps=6, seed=4,
                                               guidance=2.0))  # fmt: skip
    scale = limits.LATENT_TILE_PX // 8
    # Each preview shows that step's latent of the first sprite, the end the clean latent.
    for update, frame in zip(out[1:-1], frames[:-1], strict=True):
        expected = render.latent_channels(frame.latent[0], scale)
        assert np.array_equal(np.asarray(update[uirun.LATENT]), np.asarray(expected))
    last = np.asarray(out[-1][uirun.LATENT])
    assert np.array_equal(last, np.asarray(render.latent_channels(frames[-1].latent[0], scale)))
    assert last.shape == (17 * scale, 17 * scale, 3)  # 2x2 tiles of 8x8, 1 px apart
    assert np.array_equal(out[-1]["sprites"], frames[-1].x)
    with Image.open(out[-1]["sheet"]) as sheet:  # 32 px sprites enlarged 4x, 16 px ones 8x
        assert sheet.size == (65 * limits.SPRITE_PX // 32, 32 * limits.SPRITE_PX // 32)
    # A pixel model has no latent: the view is cleared; the API's run has no view at all.
    pixel = list(tab.generate("hero", "ddim", 3, 2.0, 0, 1, model="tiny", latent_view=True))
    assert all(update[uirun.LATENT] is None for update in pixel)
    assert all(uirun.LATENT not in update for update in generate(tab, "latent", steps=3))


# -- Upscale 2x -----------------------------------------------------------------------------------


def test_upscale_enlarges_the_last_sprites_as_the_upscaler_does(studio: Studio):
    tab = GenerateTab(studio)
    sprites = generate(tab, "tiny")[-1]["sprites"]
    assert sprites.shape == (2, 16, 16, 3)
    out = list(tab.upscale(sprites, 7, request=page_request()))
    assert out[0]["status"].startswith("starting: 2 × upscaled from 16×16")
    end = out[-1]
    assert "sprites" not in end  # an enlargement is no new run: Edit still gets the last run
    assert end["status"].startswith("done: 2 × upscaled from 16×16 · ") and end["seed"] == 7
    up = studio.upscaler
    sampler = default_sampler(up)
    expected = up.upscale(sprites, sampler=sampler, steps=default_steps(up, sampler), seed=7)
    first, archive = end["files"][2:]
    assert Path(first).name == "upscaled-01.png" and Path(archive).name == "upscaled-sprites.zip"
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.namelist() == ["upscaled-01.png", "upscaled-02.png"]
        pictures = [Image.open(io.BytesIO(zipped.read(name))) for name in zipped.namelist()]
    for png, sprite in zip([Image.open(first), *pictures], [expected[0], *expected], strict=True):
        assert png.mode == "RGBA" and png.size == (32, 32)
        assert np.array_equal(np.asarray(png), sprite)
    # The same seed enlarges the same way; another seed another way.
    again = list(tab.upscale(sprites, 7, request=page_request()))[-1]["files"]
    other = list(tab.upscale(sprites, 8, request=page_request()))[-1]["files"]
    png = [np.asarray(Image.open(files[2])) for files in (again, other)]
    assert np.array_equal(png[0], expected[0]) and not np.array_equal(png[1], expected[0])


def test_upscale_refuses_with_a_message(studio: Studio, tmp_path: Path):
    tab = GenerateTab(studio)
    outputs = {name: gr.State() for name in ("live", "status", "gif", "sheet", "files", "seed")}

    def status(sprites: np.ndarray | None, on: Studio = studio) -> str:
        """The status line the page shows (and a toast) for an upscale of ``sprites``."""
        upscale = guarded(GenerateTab(on).upscale, outputs)
        with pytest.warns(UserWarning):  # gr.Warning: the toast
            return list(upscale(sprites, 0, request=page_request()))[-1][outputs["status"]]

    assert status(None) == "⚠️ Nothing generated yet in this session: press Generate first."
    big = generate(tab, "latent")[-1]["sprites"]
    assert status(big) == (
        "⚠️ The upscaler enlarges 16×16 sprites; these are 32×32. Generate with a 16×16 model first."
    )
    alone = Studio({"tiny": tiny_pipeline()}, OutputStore(tmp_path / "o"))
    small = np.zeros((1, 16, 16, 3), np.uint8)
    assert status(small, alone).startswith("⚠️ This app has no upscaler")
    with pytest.raises(gr.Error, match="Preview must be 'noisy'"):
        list(tab.upscale(small, 0, preview="sideways"))


def test_stop_ends_an_upscale(studio: Studio, monkeypatch):
    monkeypatch.setattr(uirun, "PREVIEW_INTERVAL_S", 0.0)
    tab, me = GenerateTab(studio), page_request("upscaling")
    studio.click(me)
    run = tab.upscale(np.zeros((1, 16, 16, 3), np.uint8), 0, request=me)
    assert next(run)["status"].startswith("starting:")
    assert next(run)["status"].startswith("step 1/")
    studio.stop(me)
    end = list(run)[-1]
    assert end["status"].startswith("stopped at step 2/")
    assert not any(Path(f).name.startswith("upscaled-") for f in end["files"])


def test_the_api_upscales_the_sessions_last_run(models, tmp_path: Path):
    from gradio_client import Client

    from tests.test_app import free_port

    demo = app.build_demo(models, OutputStore(tmp_path))
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
               quiet=True)  # fmt: skip
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert [p["parameter_name"] for p in api["/upscale"]["parameters"]] == [
            "seed", "preview", "gif_ms"
        ]  # fmt: skip
        assert len(api["/generate"]["returns"]) == 6  # the latent view is the page's alone
        with pytest.raises(Exception, match="Nothing generated yet in this session"):
            client.predict(seed=0, api_name="/upscale")
        client.predict(label="hero", sampler="ddim", steps=4, guidance=2.0, seed=1, n=1,
                       model="tiny", api_name="/generate")  # fmt: skip
        _, status, _, _, files, seed = client.predict(seed=5, api_name="/upscale")
        assert status.startswith("done: 1 × upscaled from 16×16") and seed == 5
        with Image.open(files[-1]) as png:
            assert png.size == (32, 32) and png.mode == "RGBA"
    finally:
        demo.close()
