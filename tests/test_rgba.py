"""Transparent sprites: RGBA models, hard alpha, compositing, the palette stage, PNG and GIF."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion import ContextUnet, Schedule, SpritePipeline, render
from diffusion.data import frame_alpha
from diffusion.train import init_from, training_tensor

from .conftest import LABELS, MixtureOracle


def rgba_images() -> np.ndarray:
    """Three 8x8 RGBA sprites: a coloured shape on a transparent background, as the data has."""
    g = np.random.default_rng(0)
    images = np.zeros((3, 8, 8, 4), np.uint8)
    colours = [(255, 0, 0, 255), (0, 0, 255, 255), (0, 0, 0, 255)]  # never white, as in the data
    for k in range(3):
        images[k, g.random((8, 8)) < 0.5] = colours[k]
    return images


@pytest.fixture
def rgba_pipe() -> SpritePipeline:
    schedule = Schedule.linear(T=500)
    pixels = render.to_tensor(render.model_pixels(rgba_images(), 4))
    oracle = MixtureOracle(pixels, [0.5, 0.3, 0.2], [0, 1, 2], schedule, len(LABELS))
    oracle.config = SimpleNamespace(in_channels=4, resolution=8)
    pipe = SpritePipeline(oracle, schedule, LABELS, device="cpu")
    pipe.palette = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    return pipe


def test_an_rgba_model_draws_its_sprites_with_hard_alpha(rgba_pipe):
    out = rgba_pipe.generate(None, n=16, sampler="ddim", steps=25, seed=0)
    assert rgba_pipe.rgba and out.shape == (16, 8, 8, 4) and out.dtype == np.uint8
    assert set(np.unique(out[..., 3])) <= {0, 255}
    assert (out[out[..., 3] == 0] == render.TRANSPARENT).all()
    targets = rgba_images()
    # Every sprite is one of the data's, alpha and colours exactly.
    assert all(any(np.array_equal(o, t) for t in targets) for o in out)


def test_background_composites_and_equals_the_rgb_path(rgba_pipe):
    rgba = rgba_pipe.generate("a", n=4, steps=10, seed=3)
    on_white = rgba_pipe.generate("a", n=4, steps=10, seed=3, background="white")
    assert on_white.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(on_white, render.composite(rgba, "white"))
    on_red = rgba_pipe.generate("a", n=4, steps=10, seed=3, background="#ff0000")
    clear = rgba[..., 3] == 0
    assert clear.any() and (on_red[clear] == (255, 0, 0)).all()
    np.testing.assert_array_equal(on_red[~clear], on_white[~clear])
    with pytest.raises(ValueError, match="colour"):
        rgba_pipe.generate("a", steps=2, background="#12")


def test_the_palette_stage_keeps_transparency(rgba_pipe):
    raw = rgba_pipe.generate(None, n=8, steps=10, seed=1)
    for palette in ("data", 2):
        snapped = rgba_pipe.generate(None, n=8, steps=10, seed=1, palette=palette)
        np.testing.assert_array_equal(snapped[..., 3], raw[..., 3])
        assert (snapped[snapped[..., 3] == 0] == render.TRANSPARENT).all()
    snapped = rgba_pipe.generate(None, n=8, steps=10, seed=1, palette="data")
    opaque = snapped[snapped[..., 3] == 255][:, :3]
    assert {tuple(c) for c in opaque} <= {tuple(c) for c in rgba_pipe.palette}


def test_rgb_models_stay_rgb(tiny_pipe):
    out = tiny_pipe.generate("a", n=2, steps=3, seed=0)
    assert out.shape[-1] == 3 and not tiny_pipe.rgba
    np.testing.assert_array_equal(
        out, tiny_pipe.generate("a", n=2, steps=3, seed=0, background="white")
    )


def test_edits_take_rgba_and_rgb_images(rgba_pipe):
    sprite = rgba_images()[1]
    mask = np.zeros((8, 8), bool)
    mask[:, 4:] = True
    out = rgba_pipe.generate(None, n=4, sampler="ddim", steps=20, seed=0, image=sprite, mask=mask)
    np.testing.assert_array_equal(
        out[:, :, :4], np.broadcast_to(sprite[:, :4], out[:, :, :4].shape)
    )
    # An RGB sprite on white is read with its white as transparent: the same sprite.
    on_white = render.composite(sprite, "white")
    again = rgba_pipe.generate(
        None, n=4, sampler="ddim", steps=20, seed=0, image=on_white, mask=mask
    )
    np.testing.assert_array_equal(again, out)


def test_rgba_sheets_png_and_gif_are_transparent(tmp_path):
    sprites = rgba_images()
    sheet = render.grid(sprites, scale=2, cols=3)
    assert sheet.mode == "RGBA"
    pixels = np.asarray(sheet)
    assert (pixels[:, 16:18, 3] == 0).all()  # the gutter between sprites is clear
    render.save_png(sheet, tmp_path / "s.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "s.png")), pixels)
    render.save_gif([sheet, sheet], tmp_path / "s.gif")
    with Image.open(tmp_path / "s.gif") as gif:
        back = np.asarray(gif.convert("RGBA"))
    np.testing.assert_array_equal(back[..., 3] == 0, pixels[..., 3] == 0)
    np.testing.assert_array_equal(back[pixels[..., 3] == 255], pixels[pixels[..., 3] == 255])


def test_model_pixels_and_frame_alpha():
    rgba = rgba_images()
    pixels = render.model_pixels(rgba, 4)
    np.testing.assert_array_equal(pixels[..., :3], render.composite(rgba, "white"))
    np.testing.assert_array_equal(render.model_pixels(pixels[..., :3], 4), pixels)
    frames = pixels[..., :3].copy()
    frames[0, 0, 0] = (10, 20, 30)  # a pixel that changed to a colour is opaque
    alpha = frame_alpha(pixels[..., :3], rgba[..., 3], frames)
    assert alpha[0, 0, 0] == 255
    np.testing.assert_array_equal(alpha.ravel()[1:], rgba[..., 3].ravel()[1:])


def test_an_rgb_model_starts_an_rgba_one_where_it_left_off(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "rgb")
    c = tiny_pipe.model.config
    rgba = ContextUnet(
        num_labels=c.num_labels, resolution=8, channels=c.channels, emb_dim=c.emb_dim, T=c.T,
        in_channels=4,
    )  # fmt: skip
    prior = init_from(rgba, tmp_path / "rgb")
    assert prior["steps"] == 0
    x = training_tensor(np.full((2, 8, 8, 3), 200, np.uint8), np.full((2, 8, 8), 255, np.uint8))
    t, ctx = torch.full((2,), 30.0), torch.zeros(2, 3)
    with torch.no_grad():
        out, before = rgba(x, t, ctx), tiny_pipe.model(x[:, :3], t, ctx)
    torch.testing.assert_close(out[:, :3], before)
    assert (out[:, 3] == 0).all()


def test_a_repaint_keeps_its_pixels_through_the_palette_stage(oracle_pipe):
    image = np.full((8, 8, 3), 128, np.uint8)  # a grey that the palette does not hold
    oracle_pipe.palette = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True
    out = oracle_pipe.generate(None, n=2, steps=10, seed=0, image=image, mask=mask, palette="data")
    assert (out[:, :, 4:] == 128).all()  # kept exactly, grey and all
    assert {tuple(c) for c in out[:, :, :4].reshape(-1, 3)} <= {(0, 0, 0), (255, 255, 255)}
