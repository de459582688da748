"""Game-ready sprites: palettes (named, lists, files, locked), outlines, tileable sampling, and
the exports a game engine reads (sprites at integer scales, sheets with Aseprite JSON, GIFs)."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from diffusion import ContextUnet, Schedule, SpritePipeline, UnetConfig, palettes, render
from diffusion.__main__ import main as cli
from diffusion.pipeline import DEFAULT_MODEL
from ui.errors import InputError
from ui.generate import GenerateTab
from ui.limits import PALETTE_FILE
from ui.morph import MorphTab
from ui.storage import OutputStore
from ui.studio import Studio

LABELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def rgba_pipe() -> SpritePipeline:
    """A tiny RGBA ContextUnet with random weights: sprites with clear and opaque pixels."""
    torch.manual_seed(0)
    model = ContextUnet(num_labels=3, resolution=8, in_channels=4, channels=(8, 16), emb_dim=16)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return SpritePipeline(model, Schedule.linear(T=100), LABELS, device="cpu")


def sprites(seed: int = 0, n: int = 5, size: int = 8) -> np.ndarray:
    """Random RGBA sprites, distinct from each other, with hard alpha (about a third clear)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 4), dtype=np.uint8)
    images[..., 3] = np.where(rng.random((n, size, size)) < 0.35, 0, 255)
    return render.harden_alpha(images)


def opaque_colours(images: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(map(int, c)) for c in images[images[..., 3] == 255][:, :3]}


def assert_clear_is_transparent(images: np.ndarray) -> None:
    """Every pixel is opaque (255) or transparent: alpha 0 and all of it (0, 0, 0, 0)."""
    assert set(np.unique(images[..., 3]).tolist()) <= {0, 255}
    assert (images[images[..., 3] == 0] == 0).all()


# -- palettes -------------------------------------------------------------------------------------


def test_named_palettes_hold_their_well_known_colours():
    sizes = {name: len(palettes.load(name)) for name in palettes.NAMED}
    assert sizes == {"db16": 16, "db32": 32, "pico8": 16, "gameboy": 4}
    assert palettes.to_hex(palettes.load("PICO8"))[8] == "#ff004d"  # names ignore case
    assert palettes.to_hex(palettes.load("db16"))[0] == "#140c1c"
    greens = palettes.load("gameboy").astype(int)
    assert (greens[:, 1] > greens[:, 0]).all() and (greens[:, 1] > greens[:, 2]).all()


@pytest.mark.parametrize("palette", ["pico8", "gameboy", ["#000000", "#ff004d", "#29adff"]])
def test_every_opaque_pixel_is_a_palette_colour_and_clear_ones_stay_clear(rgba_pipe, palette):
    raw = rgba_pipe.generate("a", n=4, seed=1, steps=4)
    images = rgba_pipe.generate("a", n=4, seed=1, steps=4, palette=palette)
    allowed = {tuple(map(int, c)) for c in palettes.load(palette)}
    assert 0 < (images[..., 3] == 0).sum() < images[..., 3].size  # both kinds of pixel
    assert opaque_colours(images) <= allowed
    assert len(opaque_colours(raw) - allowed) > 0  # the stage did change something
    np.testing.assert_array_equal(images[..., 3], raw[..., 3])
    assert_clear_is_transparent(images)


def test_a_palette_on_rgb_sprites_covers_every_pixel():
    rgb = sprites()[..., :3]
    snapped = render.apply_palette(rgb, "db32")
    assert opaque_colours(np.dstack([snapped.reshape(-1, 8, 3), np.full((40, 8), 255)])) <= {
        tuple(map(int, c)) for c in palettes.load("db32")
    }


def test_palette_lock_leaves_at_most_k_colours_in_the_whole_batch(rgba_pipe):
    k = 4
    free = rgba_pipe.generate("b", n=6, seed=2, steps=4, palette=k)
    locked = rgba_pipe.generate("b", n=6, seed=2, steps=4, palette=k, palette_lock=True)
    assert len(opaque_colours(free)) > k  # per sprite k each, so more across the batch
    assert len(opaque_colours(locked)) <= k
    assert all(len(opaque_colours(s[None])) <= k for s in free)
    assert_clear_is_transparent(locked)
    with pytest.raises(ValueError, match="palette_lock=True needs palette= a colour count"):
        rgba_pipe.generate("b", n=2, steps=2, palette="pico8", palette_lock=True)


def test_a_locked_morph_shares_one_palette_across_its_frames(rgba_pipe):
    frames = rgba_pipe.interpolate(
        ("a", 1), ("b", 2), frames=4, sampler="ddim", steps=3, palette=3, palette_lock=True
    )
    assert len(opaque_colours(frames)) <= 3


def test_palette_files_are_read(tmp_path: Path):
    (tmp_path / "p.hex").write_text("ff004d\n\n#29ADFF\n000000\nff004d\n")
    (tmp_path / "p.gpl").write_text(
        "GIMP Palette\nName: three\nColumns: 3\n# a comment\n255   0  77\tRed\n 41 173 255 Blue\n"
    )
    swatches = np.array([[[255, 0, 77, 255], [41, 173, 255, 255], [0, 0, 0, 0]]], np.uint8)
    Image.fromarray(np.repeat(np.repeat(swatches, 8, 0), 8, 1)).save(tmp_path / "p.png")
    # Order kept, duplicates dropped; a PNG's clear pixels are no colour.
    assert palettes.to_hex(palettes.load(tmp_path / "p.hex")) == ["#ff004d", "#29adff", "#000000"]
    assert palettes.to_hex(palettes.load(str(tmp_path / "p.gpl"))) == ["#ff004d", "#29adff"]
    assert palettes.to_hex(palettes.load(tmp_path / "p.png")) == ["#ff004d", "#29adff"]
    snapped = render.apply_palette(sprites(), str(tmp_path / "p.gpl"))
    assert opaque_colours(snapped) == {(255, 0, 77), (41, 173, 255)}


def test_bad_palettes_are_refused_saying_what_is_accepted(tmp_path: Path):
    (tmp_path / "empty.hex").write_text("\n\n")
    (tmp_path / "words.hex").write_text("ff004d\nnot a colour\n")
    (tmp_path / "plain.gpl").write_text("255 0 0 red\n")
    (tmp_path / "notes.txt").write_text("ff004d\n")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # about 1,000 colours
    Image.fromarray(photo).save(tmp_path / "photo.png")
    accepted = "a palette is a name"
    cases = [
        ("empty.hex", "has no colours"),
        ("words.hex", "line 2: 'not a colour' is not a colour"),
        ("plain.gpl", "first line must be 'GIMP Palette'"),
        ("notes.txt", accepted),
        ("broken.png", accepted),
        ("photo.png", "more than a palette's 256"),
        ("missing.hex", "no palette file"),
    ]
    for name, message in cases:
        with pytest.raises(ValueError, match=message):
            palettes.load(tmp_path / name)
    for bad, message in [
        ("neon", accepted),
        ([], "has no colours"),
        (["#12345"], accepted),
        ([f"#{i:06x}" for i in range(300)], "more than 256"),
    ]:
        with pytest.raises(ValueError, match=message):
            palettes.load(bad)
    with pytest.raises(ValueError, match="palette must be None, 'data', a colour count, or"):
        render.check_palette("neon")


def test_palettes_parse_from_the_command_line_and_name_back(tmp_path: Path):
    assert render.parse_palette("db16") == "db16"
    assert render.parse_palette("#000000, #ffffff") == ["#000000", " #ffffff"]
    assert render.palette_name("db16") == "db16"
    assert render.palette_name(["#000000", "#ffffff"]) == "2 colours"
    with pytest.raises(ValueError, match="raw, data or a colour count, or no palette"):
        render.parse_palette("neon")


# -- outline --------------------------------------------------------------------------------------


def test_outline_rings_the_silhouette_outside_it():
    sprite = np.zeros((1, 7, 7, 4), np.uint8)
    sprite[0, 2:5, 3] = sprite[0, 3, 2:5] = (200, 10, 10, 255)  # a plus
    out = render.outline(sprite, "#00ff00")
    ring = (out[0, ..., 3] == 255) & (sprite[0, ..., 3] == 0)
    expected = np.zeros((7, 7), bool)
    for y, x in [(1, 3), (5, 3), (3, 1), (3, 5), (2, 2), (2, 4), (4, 2), (4, 4)]:
        expected[y, x] = True
    np.testing.assert_array_equal(ring, expected)  # 4-neighbours only: no corner pixels
    assert (out[0][ring] == (0, 255, 0, 255)).all()
    np.testing.assert_array_equal(out[sprite[..., 3] == 255], sprite[sprite[..., 3] == 255])
    assert_clear_is_transparent(out)
    with pytest.raises(ValueError, match="needs RGBA"):
        render.outline(sprite[..., :3])


def test_outline_comes_last_in_the_pipeline(rgba_pipe):
    images = rgba_pipe.generate("c", n=3, seed=3, steps=4, palette="pico8", outline="#000000")
    plain = rgba_pipe.generate("c", n=3, seed=3, steps=4, palette="pico8")
    np.testing.assert_array_equal(images, render.outline(plain, "#000000"))


# -- tiles ----------------------------------------------------------------------------------------


def test_circular_padding_wraps_only_when_asked():
    torch.manual_seed(0)
    model = ContextUnet(num_labels=1, resolution=8, channels=(8,), emb_dim=8, groups=4)
    conv = model.stem
    x = torch.randn(1, 3, 8, 8)
    shifted = torch.roll(x, (3, 5), (2, 3))
    wrapped, zero = conv(x, circular=True), conv(x)
    # A circular convolution commutes with a circular shift, edges included.
    torch.testing.assert_close(conv(shifted, circular=True), torch.roll(wrapped, (3, 5), (2, 3)))
    torch.testing.assert_close(zero, torch.conv2d(x, conv.weight, conv.bias, padding=1))
    assert not torch.allclose(wrapped[..., 0], zero[..., 0])  # edges differ...
    torch.testing.assert_close(wrapped[..., 1:-1, 1:-1], zero[..., 1:-1, 1:-1])  # not inside
    for p in model.parameters():  # the zero-initialised output layers would hide the edges
        torch.nn.init.normal_(p, std=0.3)
    t, c = torch.tensor([250.0]), torch.ones(1, 1)
    assert not torch.allclose(model(x, t, c, circular=True), model(x, t, c))


def boundary_jumps(images: np.ndarray) -> np.ndarray:
    """The mean colour jump at each of the W column boundaries and H row boundaries of tiles
    laid side by side: (2, 16), the last of each row the wrap-around one."""
    x = render.composite(images).astype(float)
    across = np.abs(x - np.roll(x, -1, axis=2)).mean(axis=(0, 1, 3))
    down = np.abs(x - np.roll(x, -1, axis=1)).mean(axis=(0, 2, 3))
    return np.stack([across, down])


def test_tileable_terrain_has_seams_no_rougher_than_its_inside():
    pipe = SpritePipeline.from_pretrained(DEFAULT_MODEL, device="cpu")
    # The whole setting is pinned, guidance at every step included, so that a change of the
    # model's defaults does not move the measurement.
    kind = {"sampler": "dpmpp_2m", "steps": 6, "seed": 0, "palette": "data"}
    kind["guidance_sigma_min"] = 0.0
    # 16 tiles: with 8, one seed's plain tiles happened to wrap almost smoothly (1.16x).
    plain = pipe.generate("terrain", n=16, **kind)
    tiles = pipe.generate("terrain", n=16, tileable=True, **kind)
    wrap, inside = render.seams(tiles)
    plain_wrap, plain_inside = render.seams(plain)
    assert plain_wrap > 1.2 * plain_inside and wrap < 1.2 * inside
    # Each of the 15 boundaries inside a tile, across and down, has its own mean jump: a
    # tileable tile's wrap-around seam is no rougher than the roughest of them.
    jumps = boundary_jumps(tiles)
    assert (jumps[:, -1] <= jumps[:, :-1].max(axis=1)).all()
    assert render.tile(tiles, 3).shape == (16, 48, 48, 4)
    np.testing.assert_array_equal(render.tile(tiles, 3)[:, 16:32, 32:48], tiles)


def test_seams_measure_the_jump_across_the_wrap():
    ramp = np.repeat(np.arange(0, 160, 10, dtype=np.uint8)[None, :], 16, 0)
    tile = np.stack([ramp] * 3 + [np.full_like(ramp, 255)], -1)[None]
    wrap, inside = render.seams(tile)
    # Across columns: 10 inside, 150 at the wrap; down rows: 0 both ways.
    assert inside == pytest.approx(10 * 16 * 15 / (16 * 15 * 2))
    assert wrap == pytest.approx(150 * 16 / 32)


# -- exports --------------------------------------------------------------------------------------


def test_sheet_json_frames_point_at_exactly_the_sprites(tmp_path: Path):
    images = sprites(n=5)
    tags = [("walk", 0, 2), ("idle", 3, 4, "pingpong")]
    png = render.save_sheet(images, tmp_path / "hero.png", columns=3, scale=2, tags=tags)
    sheet = np.asarray(Image.open(png))
    meta = json.loads((tmp_path / "hero.json").read_text())
    assert sheet.shape == (2 * 8 * 2, 3 * 8 * 2, 4)  # no gutters
    assert meta["meta"]["size"] == {"w": 48, "h": 32} and meta["meta"]["scale"] == "2"
    assert meta["meta"]["image"] == "hero.png" and meta["meta"]["format"] == "RGBA8888"
    assert meta["meta"]["frameTags"] == [
        {"name": "walk", "from": 0, "to": 2, "direction": "forward"},
        {"name": "idle", "from": 3, "to": 4, "direction": "pingpong"},
    ]
    assert len(meta["frames"]) == 5
    for sprite, frame in zip(images, meta["frames"], strict=True):
        r = frame["frame"]
        assert (r["w"], r["h"]) == (16, 16) and frame["sourceSize"] == {"w": 16, "h": 16}
        assert frame["rotated"] is False and frame["trimmed"] is False and frame["duration"] > 0
        crop = sheet[r["y"] : r["y"] + r["h"], r["x"] : r["x"] + r["w"]]
        np.testing.assert_array_equal(crop[::2, ::2], sprite)
        np.testing.assert_array_equal(crop[1::2, 1::2], sprite)  # nearest-neighbour
    assert (sheet[16:, 32:] == 0).all()  # the sixth cell is empty and clear
    with pytest.raises(ValueError, match="a tag is"):
        render.save_sheet(images, tmp_path / "x.png", tags=[("late", 3, 9)])


def test_single_sprites_at_integer_scales_stay_transparent(tmp_path: Path):
    images = sprites(n=2)
    paths = render.save_sprites(images, tmp_path, "tile", scales=render.EXPORT_SCALES)
    names = [Path(p).name for p in paths]
    assert names[:4] == ["tile-01.png", "tile-01@2x.png", "tile-01@4x.png", "tile-01@8x.png"]
    for path, scale in zip(paths, render.EXPORT_SCALES * 2, strict=True):
        picture = np.asarray(Image.open(path))
        sprite = images[0 if "01" in path else 1]
        assert picture.shape == (8 * scale, 8 * scale, 4)
        np.testing.assert_array_equal(picture[::scale, ::scale], sprite)
        assert_clear_is_transparent(picture)


def test_transparent_gif_keeps_clear_pixels_clear(tmp_path: Path):
    images = sprites(n=3)
    frames = [render.grid(s, scale=2, gap=0) for s in images]
    path = render.save_gif(frames, tmp_path / "a.gif")
    read = iio.imread(path, index=None, mode="RGBA")
    for got, sprite in zip(read, images, strict=True):
        clear = sprite[..., 3] == 0
        assert (got[::2, ::2][clear][:, 3] == 0).all()
        assert (got[::2, ::2][~clear][:, 3] == 255).all()


def test_the_command_line_writes_a_sheet_with_palette_lock_and_outline(rgba_pipe, tmp_path):
    rgba_pipe.save_pretrained(tmp_path / "m")
    out = tmp_path / "out"
    args = ["sample", "--model", str(tmp_path / "m"), "--label", "a", "--n", "4", "--steps", "3"]
    args += ["--sampler", "ddim", "--palette-lock", "3", "--outline", "#ff0000", "--sheet"]
    cli([*args, "--scale", "1", "--out", str(out)])
    sheet = np.asarray(Image.open(out / "a.png"))
    meta = json.loads((out / "a.json").read_text())
    assert sheet.shape == (16, 16, 4) and len(meta["frames"]) == 4
    assert meta["meta"]["frameTags"][0]["name"] == "a"
    assert len(opaque_colours(sheet) - {(255, 0, 0)}) <= 3
    assert_clear_is_transparent(sheet)


# -- the app --------------------------------------------------------------------------------------

APP_LABELS = ["hero", "creature", "food", "weapon_spell", "item", "terrain"]


def tiny_rgba_pipeline() -> SpritePipeline:
    """A tiny RGBA model with the app's labels, random weights: clear and opaque pixels."""
    torch.manual_seed(0)
    config = UnetConfig(num_labels=6, in_channels=4, channels=(8, 16), emb_dim=16, groups=4, T=100)
    model = ContextUnet(config)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return SpritePipeline(model, Schedule.linear(100), APP_LABELS, device="cpu")


@pytest.fixture(scope="module")
def app_pipe() -> SpritePipeline:
    return tiny_rgba_pipeline()


@pytest.fixture
def studio(app_pipe: SpritePipeline, tmp_path: Path) -> Studio:
    return Studio({"tiny": app_pipe}, OutputStore(tmp_path / "out", keep=4))


def generate(studio: Studio, **kwargs) -> dict:
    args = {"label": "terrain", "sampler": "ddim", "steps": 3, "guidance": 2.0, "seed": 0, "n": 3}
    return list(GenerateTab(studio).generate(**{**args, **kwargs}))[-1]


def test_generate_offers_game_downloads_and_lays_tiles_3x3(studio: Studio):
    out = generate(studio, palette="pico8", outline="#000000", tileable=True, exports="2")
    names = [Path(f).name for f in out["files"]]
    assert names == [
        "denoising.gif", "sprites.png", "tiles-3x3.png", "sheet.png", "sheet.json",
        "denoising-sheet.png", "denoising-sheet.json", "terrain-sprites.zip",
    ]  # fmt: skip
    assert "palette pico8 · tileable · outline #000000" in out["status"]
    sprites = out["sprites"]
    allowed = {tuple(map(int, c)) for c in palettes.load("pico8")} | {(0, 0, 0)}
    assert opaque_colours(sprites) <= allowed
    files = {Path(f).name: f for f in out["files"]}
    sheet = np.asarray(Image.open(files["sheet.png"]))
    meta = json.loads(Path(files["sheet.json"]).read_text())
    assert meta["meta"]["scale"] == "2" and len(meta["frames"]) == 3
    for sprite, frame in zip(sprites, meta["frames"], strict=True):
        r = frame["frame"]
        np.testing.assert_array_equal(
            sheet[r["y"] : r["y"] + 32 : 2, r["x"] : r["x"] + 32 : 2], sprite
        )
    steps = json.loads(Path(files["denoising-sheet.json"]).read_text())
    assert [t["name"] for t in steps["meta"]["frameTags"]] == ["sprite 1", "sprite 2", "sprite 3"]
    assert len(steps["frames"]) == 3 * 3  # three sprites, three steps each
    with zipfile.ZipFile(files["terrain-sprites.zip"]) as zipped:
        assert len(zipped.namelist()) == 3 * len(render.EXPORT_SCALES)
        alone = np.asarray(Image.open(zipped.open("terrain-02@4x.png")))
    np.testing.assert_array_equal(alone[::4, ::4], sprites[1])
    assert_clear_is_transparent(alone)
    laid = np.asarray(Image.open(files["tiles-3x3.png"]))
    assert laid.shape[1] == (2 * (48 + 1) - 1) * 4  # two tiles a row, each 3 sprites wide
    np.testing.assert_array_equal(laid[: 48 * 4 : 4, : 48 * 4 : 4], render.tile(sprites[:1])[0])
    # The denoising GIF shows the tiles laid as the page does, every frame.
    frames = iio.imread(files["denoising.gif"], index=None, mode="RGBA")
    assert len(frames) == 3 and frames[0].shape[:2] == laid.shape[:2]
    for frame in frames:
        first = frame[: 48 * 4, : 48 * 4]
        np.testing.assert_array_equal(first[: 16 * 4], first[16 * 4 : 32 * 4])
        np.testing.assert_array_equal(first[:, : 16 * 4], first[:, 16 * 4 : 32 * 4])


def test_the_app_reads_an_uploaded_palette_and_refuses_bad_ones(studio: Studio, tmp_path: Path):
    good = tmp_path / "mine.gpl"
    good.write_text("GIMP Palette\nName: mine\n255 0 77 red\n41 173 255 blue\n")
    out = generate(studio, palette=PALETTE_FILE, palette_file=str(good))
    assert opaque_colours(out["sprites"]) <= {(255, 0, 77), (41, 173, 255)}
    assert "palette 2 colours" in out["status"]
    assert out["files"] == [out["gif"], out["sheet"]]  # no game downloads unless asked
    bad = tmp_path / "bad.gpl"
    bad.write_text("255 0 0 red\n")
    for kwargs, message in [
        ({"palette_file": str(bad)}, "first line must be 'GIMP Palette'"),
        ({"palette_file": None}, "Upload a palette file (.hex, .gpl, .png)"),
    ]:
        with pytest.raises(InputError, match=re.escape(message)):
            generate(studio, palette=PALETTE_FILE, **kwargs)
    for kwargs, message in [
        ({"palette": str(good)}, "Palette must be raw, data, a number of colours"),  # no paths
        ({"palette": "pico8", "palette_lock": True}, "One palette for the batch picks"),
        ({"outline": "blue-ish"}, "Outline must be none or a colour like #000000"),
        ({"exports": "3"}, "Game download scale must be off or one of 1, 2, 4, 8"),
    ]:
        with pytest.raises(InputError, match=re.escape(message)):
            generate(studio, **kwargs)


def test_a_locked_batch_in_the_app_shares_its_colours(studio: Studio):
    out = generate(studio, label="hero", palette="4", palette_lock=True, n=6)
    assert len(opaque_colours(out["sprites"])) <= 4
    assert "palette 4, one for the batch" in out["status"]


def test_morph_offers_its_frames_as_a_pingpong_sheet(studio: Studio):
    tab = MorphTab(studio)
    out = list(tab.morph("hero", 1, "food", 2, 4, "ddim", 3, 2.0))[-1]
    sheet_json = next(f for f in out["files"] if f.endswith(".json"))
    meta = json.loads(Path(sheet_json).read_text())
    assert meta["meta"]["frameTags"] == [
        {"name": "morph", "from": 0, "to": 3, "direction": "pingpong"}
    ]
    assert meta["meta"]["size"] == {"w": 4 * 16, "h": 16} and len(meta["frames"]) == 4
