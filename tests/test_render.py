import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from diffusion import render


def test_to_uint8_maps_the_range_and_clamps():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    out = render.to_uint8(x)
    assert out.shape == (1, 1, 6, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 191, 255, 255]


def test_no_per_frame_stretch():
    # A faint frame stays faint: the course rescaled every frame to its own min/max.
    faint = torch.full((1, 3, 4, 4), -0.9)
    faint[..., 0, 0] = -0.8
    out = render.to_uint8(faint)
    assert out.max() <= 26 and out.min() >= 12


def test_grid_upscales_with_nearest_neighbour_only():
    rng = np.random.default_rng(0)
    sprites = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    img = np.asarray(render.grid(sprites, scale=3, cols=3, gap=1))
    assert img.shape == ((2 * 5 - 1) * 3, (3 * 5 - 1) * 3, 3)
    # Sprite 4 sits in row 1, column 1; each source pixel is one flat 3x3 square.
    top, left = 5 * 3, 5 * 3
    block = img[top : top + 12, left : left + 12]
    np.testing.assert_array_equal(block[::3, ::3], sprites[4])
    np.testing.assert_array_equal(block, np.repeat(np.repeat(sprites[4], 3, 0), 3, 1))
    assert (img[12:15, :] == 255).all()  # the gap row is background


def test_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        render.grid(np.zeros((2, 4, 4, 3), np.float32))


def test_gif_frames_durations_and_hold(tmp_path):
    frames = [Image.new("RGB", (16, 8), (i * 40, 0, 0)) for i in range(5)]
    path = render.save_gif(frames, tmp_path / "a.gif", frame_ms=50, hold_ms=1000)
    stack = iio.imread(path, index=None)
    assert stack.shape[:3] == (5, 8, 16)
    assert [int(stack[i, 0, 0, 0]) for i in range(5)] == [0, 40, 80, 120, 160]
    durations = [iio.immeta(path, index=i)["duration"] for i in range(5)]
    assert durations == [50, 50, 50, 50, 1000]


def test_png_is_lossless(tmp_path):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    path = render.save_png(img, tmp_path / "a.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.asarray(img))
