"""The app with a model of transparency: clear downloads, a checkerboard on the page, a chosen
background colour, and uploads that keep their alpha."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion import ContextUnet, Schedule, SpritePipeline, UnetConfig
from ui import run as uirun
from ui.edit import EditTab
from ui.errors import InputError
from ui.generate import GenerateTab
from ui.storage import OutputStore
from ui.studio import Studio

LABELS = ["hero", "creature"]


@pytest.fixture(scope="module")
def rgba_pipe() -> SpritePipeline:
    torch.manual_seed(0)
    config = UnetConfig(num_labels=2, channels=(8, 16), emb_dim=16, groups=4, T=50, in_channels=4)
    model = ContextUnet(config)
    torch.nn.init.normal_(model.out[-1].weight, std=0.2)
    with torch.no_grad():  # a clear left half, whatever the rest draws
        model.out[-1].bias[3] = 0.0
    pipe = SpritePipeline(model, Schedule.linear(50), LABELS, device="cpu")
    pipe.palette = np.array([[20, 12, 28], [211, 69, 73], [109, 170, 44]], np.uint8)
    return pipe


@pytest.fixture
def studio(rgba_pipe: SpritePipeline, tmp_path: Path) -> Studio:
    return Studio({"rgba": rgba_pipe}, OutputStore(tmp_path / "out", keep=4))


def generate(studio: Studio, **kwargs) -> dict:
    args = {"label": "hero", "sampler": "ddim", "steps": 6, "guidance": 2.0, "seed": 0, "n": 4}
    return list(GenerateTab(studio).generate(**{**args, **kwargs}))[-1]


def test_downloads_are_transparent_and_the_page_shows_a_checkerboard(studio):
    out = generate(studio)
    sprites = out["sprites"]
    assert sprites.shape == (4, 16, 16, 4) and (sprites[..., 3] == 0).any()
    with Image.open(out["sheet"]) as png:
        assert png.mode == "RGBA" and (np.asarray(png)[..., 3] == 0).any()
    with Image.open(out["gif"]) as gif:
        assert "transparency" in gif.info
    with Image.open(out["live"]) as page:  # clear pixels over grey squares, never black
        shown = np.asarray(page.convert("RGB"))
    clear = np.asarray(Image.open(out["sheet"]))[..., 3] == 0
    assert {tuple(c) for c in np.unique(shown[clear], axis=0)} <= {(0xEE,) * 3, (0xC8,) * 3}


def test_previews_are_the_page_picture_at_one_pixel_a_sprite_pixel(studio, monkeypatch):
    monkeypatch.setattr(uirun, "PREVIEW_INTERVAL_S", 0.0)  # a preview every step
    args = {"label": "hero", "sampler": "ddim", "steps": 3, "guidance": 2.0, "seed": 0, "n": 4}
    updates = list(GenerateTab(studio).generate(**args))
    previews = [u["live"] for u in updates[1:-1]]
    assert len(previews) == 2 and all(p.size == (33, 33) for p in previews)  # 2x2 of 16, 1 apart
    sprites = updates[-1]["sprites"]
    assert (sprites[..., 3] == 0).any()
    # Enlarged as the browser draws it (pixelated), a preview is the page's sheet exactly,
    # checkerboard squares included.
    small, page = uirun.preview(sprites), np.asarray(uirun.on_page(sprites))
    enlarged = small.resize((page.shape[1], page.shape[0]), Image.Resampling.NEAREST)
    np.testing.assert_array_equal(np.asarray(enlarged), page)
    assert len(np.unique(page.reshape(-1, 3), axis=0)) > 2  # sprites drawn, not a bare board


def test_a_background_colour_gives_rgb_sprites_on_it(studio):
    clear = generate(studio)["sprites"][..., 3] == 0
    out = generate(studio, background="#ff0000")
    assert out["sprites"].shape[-1] == 3
    assert (out["sprites"][clear] == (255, 0, 0)).all()
    with pytest.raises(InputError, match="Background"):
        generate(studio, background="#12345")


def test_an_upload_keeps_its_alpha(studio, tmp_path):
    picture = np.zeros((16, 16, 4), np.uint8)
    picture[4:12, 4:12] = (200, 30, 30, 255)
    Image.fromarray(picture).save(tmp_path / "up.png")
    sprite, _ = studio.upload("rgba", str(tmp_path / "up.png"))
    np.testing.assert_array_equal(sprite, picture)
    value = EditTab(studio).use_upload("rgba", str(tmp_path / "up.png"))["editor"]
    read, mask = EditTab(studio).read_canvas(value, 16, alpha=True)
    np.testing.assert_array_equal(read, picture)
    assert mask is None


def test_a_morph_of_transparent_sprites_is_transparent(studio):
    from ui.morph import MorphTab

    done = list(MorphTab(studio).morph("hero", 1, "creature", 2, 3, "ddim", 4, 2.0))[-1]
    assert done["status"].startswith("done:")
    with Image.open(done["strip"]) as strip:
        assert strip.mode == "RGBA" and (np.asarray(strip)[..., 3] == 0).any()
    with Image.open(done["gif"]) as gif:
        assert "transparency" in gif.info


def test_forward_shows_a_transparent_sprite_on_white_and_on_a_checkerboard(studio):
    from ui.forward import ForwardTab

    sprite = np.zeros((16, 16, 4), np.uint8)
    sprite[4:12, 4:12] = (200, 30, 30, 255)
    out = ForwardTab(studio).noised("rgba", sprite, 0)
    clean = np.asarray(out["clean"])
    assert clean.shape[-1] == 3 and tuple(clean[0, 0]) in {(0xEE,) * 3, (0xC8,) * 3}
    noised = np.asarray(next(out[k] for k in ("linear", "cosine", "quadratic")))
    assert noised.shape[-1] == 3  # the colours on white, as the network sees them
