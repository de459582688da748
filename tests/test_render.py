import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

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


# --- the palette stage -------------------------------------------------------------------------

PALETTE = np.array([[255, 255, 255], [20, 12, 28], [211, 69, 73], [109, 170, 44]], np.uint8)


def noisy_palette_sprites(n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = PALETTE[rng.integers(0, len(PALETTE), (n, 16, 16))]
    noisy = np.clip(clean.astype(int) + rng.integers(-10, 11, clean.shape), 0, 255)
    return clean, noisy.astype(np.uint8)


def test_data_palette_keeps_the_frequent_colours_in_order():
    clean, _ = noisy_palette_sprites(60)
    clean[0, 0, 0] = (1, 2, 3)  # one stray pixel of 15,360: below the share threshold
    pal = render.data_palette(clean)
    assert {tuple(c) for c in pal} == {tuple(c) for c in PALETTE}
    counts = [(clean.reshape(-1, 3) == c).all(1).sum() for c in pal]
    assert counts == sorted(counts, reverse=True)
    assert render.palette_from_hex(render.palette_to_hex(pal)).tolist() == pal.tolist()


def test_snapping_lands_every_pixel_on_the_palette():
    clean, noisy = noisy_palette_sprites()
    snapped = render.apply_palette(noisy, "data", PALETTE)
    assert snapped.dtype == np.uint8 and snapped.shape == noisy.shape
    # Noise of at most 10 per channel is far smaller than the gaps of this palette.
    assert np.array_equal(snapped, clean)
    odd = np.array([[[[250, 200, 200]]]], np.uint8)  # a pink nearer to white than to red
    assert render.apply_palette(odd, "data", PALETTE)[0, 0, 0].tolist() == [255, 255, 255]


REDS = np.array([[211, 69, 73], [172, 50, 50]], np.uint8)  # one palette step apart in OKLab
STRAY = np.array([187, 57, 59], np.uint8)  # just past the middle, nearer the second red


def red_sprite() -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([PALETTE, REDS[1:]]), np.tile(REDS[0], (1, 16, 16, 1))


def test_a_few_stray_pixels_do_not_earn_a_palette_colour():
    palette, sprite = red_sprite()
    # Noise pushed 3 pixels just past the middle between the two reds: alone, each would snap
    # to the second red.
    alone = render.apply_palette(STRAY[None, None, None], "data", palette)
    assert alone[0, 0, 0].tolist() == REDS[1].tolist()
    lab = render.to_oklab(np.stack([STRAY, REDS[0]]))
    assert 3 * ((lab[0] - lab[1]) ** 2).sum() < render.PALETTE_COLOUR_COST
    sprite[0, 5, 5:8] = STRAY
    assert (render.apply_palette(sprite, "data", palette) == REDS[0]).all()
    # A row (16 pixels) drawn in the second red, with a little noise, pays for its place.
    _, sprite = red_sprite()
    sprite[0, 9] = REDS[1] + [2, 1, 2]
    snapped = render.apply_palette(sprite, "data", palette)
    assert (snapped[0, 9] == REDS[1]).all() and (np.delete(snapped[0], 9, 0) == REDS[0]).all()


def test_a_sprite_already_in_the_palette_comes_back_unchanged():
    # One pixel of the second red would not pay for its place if it were noise, but a colour
    # a sprite has exactly is an artist's choice (a highlight), not noise.
    palette, sprite = red_sprite()
    sprite[0, 3, 3] = REDS[1]
    assert np.array_equal(render.apply_palette(sprite, "data", palette), sprite)
    rgba = np.concatenate([sprite, np.full((1, 16, 16, 1), 255, np.uint8)], -1)
    assert np.array_equal(render.apply_palette(rgba, palette), rgba)
    sprite[0, 3, 3] += 1  # now it is noise: it joins the red around it
    assert (render.apply_palette(sprite, "data", palette) == REDS[0]).all()


@pytest.mark.parametrize("k", [2, 3, 8])
def test_k_colours_means_at_most_k(k):
    _, noisy = noisy_palette_sprites()
    reduced = render.apply_palette(noisy, k)
    for sprite in reduced:
        assert len(np.unique(sprite.reshape(-1, 3), axis=0)) <= k
    # The reduction stays close to the sprite: each pixel moves by less than a palette gap.
    if k >= len(PALETTE):
        assert np.abs(reduced.astype(int) - noisy.astype(int)).max() <= 20


def test_palette_choices_are_checked():
    _, noisy = noisy_palette_sprites(1)
    assert render.apply_palette(noisy, None) is noisy
    for bad, message in [("neon", "palette must be"), (1, "between 2 and 256"), (True, "must be")]:
        with pytest.raises(ValueError, match=message):
            render.apply_palette(noisy, bad, PALETTE)
    with pytest.raises(ValueError, match="training palette"):
        render.apply_palette(noisy, "data", None)


def test_a_one_frame_gif(tmp_path):
    # steps = 1, or Stop during the first step, leaves one frame: still a valid GIF.
    sprite = np.full((4, 4, 3), (10, 200, 30), np.uint8)
    path = render.save_gif([render.grid(sprite, scale=2)], tmp_path / "one.gif", hold_ms=700)
    frames = iio.imread(path, index=None)
    assert frames.shape[0] == 1 and frames[0, 0, 0, :3].tolist() == [10, 200, 30]
    assert iio.immeta(path)["duration"] == 700


def test_gif_keeps_few_colour_frames_exact_and_noise_close(tmp_path):
    rng = np.random.default_rng(2)
    colours = rng.integers(0, 256, (200, 3), dtype=np.uint8)
    sheet = colours[rng.integers(0, 200, (64, 64))]  # 200 colours: a finished, paletted sheet
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # every pixel its own colour
    path = render.save_gif([Image.fromarray(noise), Image.fromarray(sheet)], tmp_path / "g.gif")
    stack = iio.imread(path, index=None)[..., :3]
    np.testing.assert_array_equal(stack[1], sheet)
    # 256 colours for uniform noise: the best possible is about 10 levels off per channel.
    assert np.abs(stack[0].astype(int) - noise).mean() < 16


def gif_stack(path) -> np.ndarray:
    """Every frame of a GIF as Pillow composes it, RGBA: (frames, H, W, 4)."""
    with Image.open(path) as gif:
        return np.stack([np.asarray(f.convert("RGBA")) for f in ImageSequence.Iterator(gif)])


def test_a_gif_enlarged_after_quantising_is_the_gif_of_enlarged_frames(tmp_path):
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (3, 4, 6, 6, 4), dtype=np.uint8)  # 3 frames of 4 RGBA sprites
    noise[..., 3] = np.where(noise[..., 3] < 128, 0, 255)  # hard alpha, as sprites have
    paletted = noise.copy()
    paletted[..., :3] = rng.integers(0, 256, (5, 3), dtype=np.uint8)[
        rng.integers(0, 5, (3, 4, 6, 6))
    ]
    for frames in (noise, paletted, noise[..., :3]):
        small = render.save_gif([render.grid(f, 1) for f in frames], tmp_path / "s.gif", scale=5)
        large = render.save_gif([render.grid(f, 5) for f in frames], tmp_path / "l.gif")
        stack = gif_stack(small)
        assert stack.shape == (3, 13 * 5, 13 * 5, 4)  # 2x2 sprites of 6, 1 px apart, 5x
        np.testing.assert_array_equal(stack, gif_stack(large))
        assert (stack[..., 3] == 0).any() == (frames.shape[-1] == 4)
    with pytest.raises(ValueError, match="scale"):
        render.save_gif([render.grid(noise[0], 1)], tmp_path / "x.gif", scale=0)


def test_palette_stages_parse_from_text_and_name_back():
    parsed = [render.parse_palette(t) for t in ("raw", " none", "data", "8")]
    assert parsed == [None, None, "data", 8]
    assert [render.palette_name(p) for p in (None, "data", 8)] == ["raw", "data", "8"]
    with pytest.raises(ValueError, match="raw, data or a colour count"):
        render.parse_palette("neon")


def test_latent_channels_maps_a_fixed_range_one_grey_tile_per_channel():
    latent = np.zeros((2, 2, 3), np.float32)  # (h, w, C)
    latent[..., 0] = [[-3.0, 0.0], [3.0, 10.0]]
    latent[..., 1] = [[-1.5, 1.5], [-10.0, 0.3]]
    latent[..., 2] = 0.01  # a faint channel stays grey: no stretch to its own range
    img = np.asarray(render.latent_channels(latent, scale=2, cols=3))
    # Three 2x2 tiles in a row, 1 px apart, enlarged 2x; grey: R = G = B.
    assert img.shape == ((2 * 1) * 2, (3 * 3 - 1) * 2, 3)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    tiles = [img[::2, ::2][:, 3 * k : 3 * k + 2, 0] for k in range(3)]
    assert tiles[0].tolist() == [[0, 128], [255, 255]]  # -3 -> 0, 0 -> 128, 3 and above -> 255
    assert tiles[1].tolist() == [[64, 191], [0, 140]]  # 255 * (x + 3) / 6, clipped below
    assert tiles[2].tolist() == [[128, 128], [128, 128]]
    assert (img[:, 4:6] == 255).all()  # the gap between the first two tiles
    wide = np.asarray(render.latent_channels(latent, scale=1, span=10.0, cols=1))
    assert wide.shape == (3 * 3 - 1, 2, 3) and wide[1, 1, 0] == 255 and wide[0, 0, 0] == 89
    with pytest.raises(ValueError, match=r"one latent \(h, w, C\)"):
        render.latent_channels(latent[None])
    with pytest.raises(ValueError, match="span must be a positive number"):
        render.latent_channels(latent, span=0)


def noisy_with_strays() -> tuple[np.ndarray, np.ndarray]:
    """Noisy palette sprites, each with 3 red pixels just nearer the second red (a stray colour
    the default cost leaves out), and the palette with that second red."""
    palette, _ = red_sprite()
    _, noisy = noisy_palette_sprites()
    noisy[:, 0, :3] = STRAY
    return palette, noisy


def test_colour_cost_zero_is_the_pixel_by_pixel_snap():
    palette, noisy = noisy_with_strays()
    lab, palette_lab = render.to_oklab(noisy), render.to_oklab(palette)
    nearest = palette[((lab[..., None, :] - palette_lab) ** 2).sum(-1).argmin(-1)]
    assert (nearest[:, 0, :3] == REDS[1]).all()
    assert np.array_equal(render.snap_to_palette(noisy, palette, colour_cost=0), nearest)
    assert not np.array_equal(render.snap_to_palette(noisy, palette), nearest)
    # The same through the stage, for RGBA sprites: only their opaque pixels, sprite by sprite.
    alpha = np.where(np.random.default_rng(2).random(noisy.shape[:3]) < 0.3, 0, 255)
    alpha[:, 0, :3] = 255
    rgba = render.harden_alpha(np.concatenate([noisy, alpha[..., None].astype(np.uint8)], -1))
    opaque = rgba[..., 3] == 255
    snapped = render.apply_palette(rgba, "data", palette, colour_cost=0)
    assert np.array_equal(snapped[opaque][:, :3], nearest[opaque])
    assert (snapped[~opaque] == render.TRANSPARENT).all()
    assert not np.array_equal(render.apply_palette(rgba, "data", palette), snapped)
