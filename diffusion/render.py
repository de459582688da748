"""Rendering: turn model outputs into the crisp pictures and animations people look at.

Values map to pixels with clamp((x + 1) / 2) for every frame alike (never a per-frame min/max
stretch, which makes noise look like signal), and enlarging is nearest-neighbour only, so one
sprite pixel stays one sharp square.

Sprites are RGB (n, H, W, 3) or, from a model of transparency, RGBA (n, H, W, 4) with hard
alpha: a pixel is opaque (255) or transparent (0, and then all of it is ``TRANSPARENT``), as
pixel art is. A model sees an RGBA sprite as its colours composited on white plus the alpha as
a fourth channel (:func:`model_pixels`), so the RGB of a transparent pixel is never asked of it.

The optional palette stage makes the output pixel-perfect: pixel artists work in a fixed
palette, so ``apply_palette`` snaps each sprite to the training palette (nearest in OKLab,
where distance follows perceived difference, using only the colours that earn their place in
that sprite) or reduces each sprite to at most k colours with Pillow's quantiser.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from . import palettes


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(n, C, H, W) values in [-1, 1] -> (n, H, W, C) uint8, clamping what lies outside."""
    pixels = ((x.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(n, H, W, C) or (H, W, C) uint8 -> (n, C, H, W) float in [-1, 1]: to_uint8 undone."""
    array = np.ascontiguousarray(images)
    # torch shares the memory and warns on read-only arrays (a decoded PIL image is one).
    x = torch.from_numpy(array if array.flags.writeable else array.copy())
    x = x[None] if x.ndim == 3 else x
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1


TRANSPARENT = (0, 0, 0, 0)  # every transparent pixel we output, so equal sprites are equal arrays
WHITE = (255, 255, 255)
Colour = str | Sequence[int]  # "#rrggbb", "white", "black" or (r, g, b)


def parse_colour(colour: Colour) -> tuple[int, int, int]:
    """A background colour as (r, g, b) from "#rrggbb", "white", "black" or a triple."""
    named = {"white": WHITE, "black": (0, 0, 0)}
    if isinstance(colour, str):
        text = colour.strip().lower()
        if text in named:
            return named[text]
        if len(text) == 7 and text[0] == "#":
            try:
                return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
            except ValueError:
                pass
        raise ValueError(f"a colour is '#rrggbb', 'white' or 'black', not {colour!r}")
    values = tuple(colour)
    if len(values) != 3 or not all(
        isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in values
    ):
        raise ValueError(f"a colour is three whole numbers from 0 to 255, not {colour!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def harden_alpha(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 (..., 4) -> alpha 0 or 255 (cut at the middle) and ``TRANSPARENT`` pixels."""
    opaque = np.asarray(rgba)[..., 3] >= 128
    out = np.array(rgba, dtype=np.uint8)
    out[..., 3] = np.where(opaque, 255, 0)
    out[~opaque] = TRANSPARENT
    return out


def composite(images: np.ndarray, background: Colour = WHITE) -> np.ndarray:
    """RGBA uint8 (..., 4) over a ``background`` colour -> RGB (..., 3); RGB passes through."""
    images = np.asarray(images)
    if images.shape[-1] == 3:
        return images
    alpha = images[..., 3:].astype(np.float64) / 255
    bg = np.asarray(parse_colour(background), np.float64)
    return np.rint(images[..., :3] * alpha + bg * (1 - alpha)).astype(np.uint8)


def outline(images: np.ndarray, colour: Colour = "black") -> np.ndarray:
    """A one-pixel ``colour`` outline around the opaque silhouette of RGBA sprites (..., H, W,
    4), outside it: every transparent pixel beside an opaque one (left, right, above or below,
    as pixel artists draw outlines) becomes opaque ``colour``. Opaque pixels stay as they are."""
    images = np.asarray(images)
    if images.shape[-1] != 4:
        raise ValueError("an outline goes around transparent sprites: it needs RGBA sprites")
    rgb = parse_colour(colour)
    opaque = images[..., 3] >= 128
    beside = np.zeros_like(opaque)
    beside[..., 1:, :] |= opaque[..., :-1, :]
    beside[..., :-1, :] |= opaque[..., 1:, :]
    beside[..., :, 1:] |= opaque[..., :, :-1]
    beside[..., :, :-1] |= opaque[..., :, 1:]
    out = images.copy()
    out[beside & ~opaque] = (*rgb, 255)
    return out


def tile(images: np.ndarray, times: int = 3) -> np.ndarray:
    """Each (n, H, W, C) sprite repeated ``times`` x ``times`` as one (n, tH, tW, C) picture:
    how a tile looks laid on a floor, seams included."""
    return np.tile(np.asarray(images), (1, times, times, 1))


def seams(images: np.ndarray) -> tuple[float, float]:
    """(wrap, interior): the mean colour jump (absolute difference per RGB channel, 0 to 255,
    on white where transparent) between the pixels that meet when (n, H, W, C) tiles are laid
    side by side (the last column beside the first, the last row above the first) and, for
    comparison, between neighbouring pixels inside the tiles. A seamless tile has wrap close
    to interior."""
    x = composite(np.asarray(images), WHITE).astype(np.float64)
    interior = np.concatenate(
        [np.abs(np.diff(x, axis=-2)).ravel(), np.abs(np.diff(x, axis=-3)).ravel()]
    )
    wrap = np.concatenate(
        [
            np.abs(x[..., :, 0, :] - x[..., :, -1, :]).ravel(),
            np.abs(x[..., 0, :, :] - x[..., -1, :, :]).ravel(),
        ]
    )
    return float(wrap.mean()), float(interior.mean())


def model_pixels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 RGB or RGBA sprites in the pixels a model of ``channels`` (3 or 4) works in.

    RGB models see sprites on white. RGBA models see the colours on white plus the alpha; an RGB
    sprite given to one is read as drawn on white, so its pure-white pixels are transparent
    (no opaque pixel of the training sprites is pure white).
    """
    images = np.asarray(images)
    rgb = composite(images, WHITE)
    if channels == 3:
        return rgb
    if images.shape[-1] == 4:
        alpha = images[..., 3]
    else:
        alpha = np.where((images == 255).all(axis=-1), 0, 255).astype(np.uint8)
    return np.concatenate([rgb, alpha[..., None]], axis=-1)


def model_output(pixels: np.ndarray) -> np.ndarray:
    """A model's uint8 output -> the sprites we hand out: RGB as it is, RGBA hardened."""
    return pixels if pixels.shape[-1] == 3 else harden_alpha(pixels)


# None (raw), "data" (the training palette), k colours, or fixed colours (see diffusion.palettes:
# a name such as "db16", a list of "#rrggbb", a (k, 3) array or a .hex/.gpl/.png file).
Palette = str | int | Sequence[str] | np.ndarray | os.PathLike | None
# A colour joins the training palette when it covers at least this share of all pixels; rarer
# ones are alpha-blend leftovers of the source tiles, not colours an artist chose.
PALETTE_MIN_SHARE = 1e-4


def data_palette(images: np.ndarray, min_share: float = PALETTE_MIN_SHARE) -> np.ndarray:
    """The palette of (n, H, W, 3) uint8 sprites: (k, 3) uint8, most frequent colour first."""
    colours, counts = np.unique(np.asarray(images).reshape(-1, 3), axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    keep = counts[order] >= max(1, min_share * counts.sum())
    return colours[order][keep].astype(np.uint8)


def palette_to_hex(palette: np.ndarray) -> list[str]:
    return ["#{:02x}{:02x}{:02x}".format(*map(int, c)) for c in palette]


def palette_from_hex(colours: Sequence[str]) -> np.ndarray:
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colours], np.uint8)


def to_oklab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB (..., 3) -> OKLab (..., 3) float (Ottosson 2020): L in [0, 1]."""
    c = np.asarray(rgb, np.float64) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    lms = linear @ np.array(
        [
            [0.4122214708, 0.2119034982, 0.0883024619],
            [0.5363325363, 0.6806995451, 0.2817188376],
            [0.0514459929, 0.1073969566, 0.6299787005],
        ]
    )
    return np.cbrt(lms) @ np.array(
        [
            [0.2104542553, 1.9779984951, 0.0259040371],
            [0.7936177850, -2.4285922050, 0.7827717662],
            [-0.0040720468, 0.4505937099, -0.8086757660],
        ]
    )


# A palette colour stays in a sprite only while dropping it would cost the sprite at least this
# much: the summed squared OKLab distance its pixels would move, to their next-nearest kept
# colour. A model's raw pixels carry a little colour noise, and snapping pixel by pixel turns it
# into stray pixels of neighbouring palette colours (10.6 colours a sprite where real ones have
# 8.6, and a critic told them from real sprites more often than the raw output). 0.05 is five
# pixels a palette step (0.1 in OKLab) away: measured against 0.02-0.2 on sprites16 output,
# it scored best by the critic and pattern KID (docs/evaluation.md, "The palette stage").
PALETTE_COLOUR_COST = 0.05


def snap_to_palette(
    images: np.ndarray, palette: np.ndarray, colour_cost: float = PALETTE_COLOUR_COST
) -> np.ndarray:
    """Snap each (H, W, 3) uint8 sprite of ``images`` to ``palette``, nearest in OKLab, using
    only the palette colours that earn their place (:data:`PALETTE_COLOUR_COST`).

    Colours the sprite already has exactly are always kept, so a sprite in the palette comes
    back unchanged (an artist's one-pixel highlight is a choice, not noise)."""
    images, palette = np.asarray(images), np.asarray(palette, np.uint8)
    if images.size == 0:
        return images.copy()
    lab = to_oklab(palette)
    sprites = images.reshape(-1, images.shape[-3] * images.shape[-2], 3)
    out = np.empty_like(sprites)
    for i, sprite in enumerate(sprites):
        # Distances over a sprite's distinct colours, weighted by their pixel counts.
        colours, inverse, counts = np.unique(
            sprite, axis=0, return_inverse=True, return_counts=True
        )
        error = ((to_oklab(colours)[:, None] - lab[None]) ** 2).sum(-1)
        kept = _earning_colours(error, counts, colour_cost)
        out[i] = palette[kept[error[:, kept].argmin(1)]][inverse.reshape(-1)]
    return out.reshape(images.shape)


def _earning_colours(error: np.ndarray, counts: np.ndarray, colour_cost: float) -> np.ndarray:
    """The palette indices a sprite keeps: start from those its colours are nearest to, then
    drop the cheapest one at a time (backward elimination) while it costs under
    ``colour_cost``. ``error`` is (colours, palette) squared distances."""
    nearest = error.argmin(1)
    kept, exact = np.unique(nearest), np.unique(nearest[error.min(1) == 0])
    while len(kept) > 1:
        near = error[:, kept]
        nearest = near.argmin(1)
        best, second = np.sort(near, axis=1)[:, :2].T
        # Dropping a colour moves only its own pixels, each to its second-nearest kept colour.
        cost = np.bincount(nearest, counts * (second - best), len(kept))
        cost[np.isin(kept, exact)] = np.inf
        cheapest = int(cost.argmin())
        if cost[cheapest] >= colour_cost:
            break
        kept = np.delete(kept, cheapest)
    return kept


def reduce_colours(images: np.ndarray, k: int) -> np.ndarray:
    """Reduce each (H, W, 3) uint8 sprite to at most ``k`` colours (Pillow's median cut)."""
    images = np.asarray(images)
    out = np.empty_like(images)
    if images.size == 0:
        return out
    for i, sprite in enumerate(images.reshape(-1, *images.shape[-3:])):
        quantised = Image.fromarray(sprite).quantize(
            colors=k, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        out.reshape(-1, *images.shape[-3:])[i] = np.asarray(quantised.convert("RGB"))
    return out


def parse_palette(text: str) -> Palette:
    """A palette stage as written on a command line: "raw" (or "none"), "data", a count, a
    palette's name ("db16"), a palette file, or colours "#000000,#ff004d,..."."""
    text = text.strip()
    if text in ("raw", "none"):
        return None
    if text == "data":
        return text
    try:
        return int(text)
    except ValueError:
        pass
    palette: Palette = [c for c in text.split(",") if c.strip()] if "," in text else text
    try:
        palettes.load(palette)
    except ValueError as err:
        raise ValueError(f"a palette stage is raw, data or a colour count, or {err}") from None
    return palette


def palette_name(palette: Palette) -> str:
    """The stage's name in reports: "raw", "data", the colour count or the fixed palette's."""
    if palettes.is_fixed(palette):
        return palettes.describe(palette)
    return "raw" if palette is None else str(palette)


def check_palette(palette: Palette, data_colours: np.ndarray | None = None) -> None:
    """Raise ValueError unless ``palette`` is a valid palette-stage choice."""
    if palette is None:
        return
    if palettes.is_fixed(palette):
        try:
            palettes.load(palette)  # type: ignore[arg-type]
        except ValueError as err:
            raise ValueError(f"palette must be None, 'data', a colour count, or {err}") from None
        return
    if isinstance(palette, str):
        if palette != "data":
            raise ValueError(f"palette must be None, 'data' or a colour count, got {palette!r}")
        if data_colours is None or len(data_colours) == 0:
            raise ValueError("palette='data' needs a model with a training palette")
    elif isinstance(palette, bool) or not isinstance(palette, (int, np.integer)):
        raise ValueError(f"palette must be None, 'data' or a colour count, got {palette!r}")
    elif not 2 <= palette <= 256:
        raise ValueError(f"a palette colour count must be between 2 and 256, got {palette}")


def check_lock(palette: Palette, lock: bool) -> None:
    """Raise ValueError unless ``palette_lock=lock`` fits ``palette``: a lock needs a count k."""
    if not isinstance(lock, (bool, np.bool_)):
        raise ValueError(f"palette_lock must be True or False, got {lock!r}")
    counted = isinstance(palette, (int, np.integer)) and not isinstance(palette, bool)
    if lock and not counted:
        raise ValueError(
            "palette_lock=True needs palette= a colour count k (one k-colour palette for the "
            f"whole batch), got {palette_name(palette)!r}"
        )


def apply_palette(
    images: np.ndarray,
    palette: Palette,
    data_colours: np.ndarray | None = None,
    lock: bool = False,
    colour_cost: float = PALETTE_COLOUR_COST,
) -> np.ndarray:
    """The palette stage: ``None`` leaves uint8 sprites as they are, ``"data"`` snaps them to
    ``data_colours`` (a model's training palette), an int k leaves at most k colours a sprite
    (with ``lock``, at most k in the whole batch: one palette shared by every sprite), and a
    fixed palette (see :mod:`diffusion.palettes`) snaps them to its colours, each sprite using
    only the colours that earn ``colour_cost`` (:func:`snap_to_palette`; 0 snaps pixel by pixel).
    Only opaque pixels of RGBA sprites are touched: transparent ones have no colour."""
    check_palette(palette, data_colours)
    check_lock(palette, lock)
    if palette is None:
        return images
    images = np.asarray(images)
    if lock:
        palette = palettes.lock(images, int(palette))  # type: ignore[arg-type]
    if palettes.is_fixed(palette):
        colours = palettes.load(palette)  # type: ignore[arg-type]
        stage = functools.partial(snap_to_palette, palette=colours, colour_cost=colour_cost)
    elif isinstance(palette, str):
        stage = functools.partial(snap_to_palette, palette=data_colours, colour_cost=colour_cost)
    else:
        stage = functools.partial(reduce_colours, k=int(palette))
    if images.shape[-1] == 3:
        return stage(images)
    out = images.copy()
    for sprite in out.reshape(-1, *images.shape[-3:]):
        opaque = sprite[..., 3] >= 128
        # One sprite's opaque pixels as a 1-row picture: its colours are chosen per sprite.
        sprite[..., :3][opaque] = stage(sprite[..., :3][opaque][None, None])[0, 0]
    return out


def to_sprite(image: Image.Image, resolution: int, alpha: bool = False) -> np.ndarray:
    """Any picture -> (resolution, resolution, 3) uint8 on white, as the model's sprites are, or
    with ``alpha`` (for a model of transparency) (resolution, resolution, 4) with hard alpha.

    Without ``alpha`` transparent pixels become white; 16-bit greyscale is scaled to 8 bits
    (Pillow's own conversion clips it to white); other sizes are centre-cropped to a square and
    resized, box filter down, nearest-neighbour up, so an enlarged sprite comes back exactly.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        levels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or levels.max() > 255 else 255.0
        image = Image.fromarray(np.round(levels / top * 255).clip(0, 255).astype(np.uint8), "L")
    rgba = image.convert("RGBA")
    shrinking = min(rgba.size) > resolution
    method = Image.Resampling.BOX if shrinking else Image.Resampling.NEAREST
    if alpha:
        return harden_alpha(np.asarray(ImageOps.fit(rgba, (resolution, resolution), method=method)))
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    return np.asarray(ImageOps.fit(rgb, (resolution, resolution), method=method))


CHECKER_PX = 16  # the side of a checkerboard square, in pixels of the picture shown


def checkerboard(image: Image.Image, square: int = CHECKER_PX) -> Image.Image:
    """An RGBA picture over the grey checkerboard that painting programs show for "clear"."""
    if image.mode != "RGBA":
        return image
    y, x = np.indices((image.height, image.width)) // square
    board = np.where(((x + y) % 2 == 0)[..., None], 0xEE, 0xC8).astype(np.uint8)
    back = Image.fromarray(np.repeat(board, 3, axis=-1)).convert("RGBA")
    return Image.alpha_composite(back, image).convert("RGB")


def mask_from_strokes(alpha: np.ndarray, resolution: int, share: float = 0.25) -> np.ndarray:
    """Brush strokes painted over an enlarged sprite -> bool (resolution, resolution) mask.

    ``alpha`` (H, W) is the painted layer's opacity; a sprite pixel is masked when at least
    ``share`` of its enlarged square is painted.
    """
    painted = Image.fromarray((np.asarray(alpha) > 0).astype(np.uint8) * 255)
    # A box filter averages each square: exactly the painted share when H is a multiple.
    covered = painted.resize((resolution, resolution), Image.Resampling.BOX)
    return np.asarray(covered) >= share * 255


def grid(
    images: np.ndarray,
    scale: int = 8,
    cols: int | None = None,
    gap: int = 1,
    background: tuple[int, int, int] = WHITE,
) -> Image.Image:
    """Lay out (n, H, W, 3 or 4) uint8 sprites in a grid ``gap`` pixels apart, enlarged
    ``scale``x; gaps are ``background`` for RGB sprites and transparent for RGBA ones."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (3, 4) or images.dtype != np.uint8:
        raise ValueError(f"expected (n, H, W, 3|4) uint8 images, got {images.shape} {images.dtype}")
    if scale < 1:
        raise ValueError("scale must be a positive integer")
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = np.empty((rows * (h + gap) - gap, cols * (w + gap) - gap, c), np.uint8)
    sheet[:] = background if c == 3 else TRANSPARENT
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = img
    return Image.fromarray(sheet).resize(
        (sheet.shape[1] * scale, sheet.shape[0] * scale), Image.Resampling.NEAREST
    )


# A latent model's latents (``Frame.latent``) are about N(0, 1): values from -3 to 3 (three
# standard deviations) map to black..white, the same range for every frame and every model.
LATENT_SPAN = 3.0


def latent_channels(
    latent: np.ndarray, scale: int = 8, span: float = LATENT_SPAN, cols: int | None = None
) -> Image.Image:
    """One sprite's latent, float (h, w, C), as a picture of C grey tiles, channel k the k-th:
    values -``span`` .. ``span`` map linearly to 0 .. 255 (clipped beyond), the same mapping
    for every frame, never a stretch to each frame's own range; laid out as :func:`grid` lays
    sprites (``cols`` tiles a row), enlarged ``scale``x nearest-neighbour."""
    latent = np.asarray(latent, np.float32)
    if latent.ndim != 3:
        raise ValueError(f"expected one latent (h, w, C), got shape {latent.shape}")
    if not span > 0:
        raise ValueError(f"span must be a positive number, got {span!r}")
    grey = np.clip((latent + span) / (2 * span) * 255, 0, 255).round().astype(np.uint8)
    tiles = np.repeat(grey.transpose(2, 0, 1)[..., None], 3, axis=-1)  # (C, h, w, 3)
    return grid(tiles, scale, cols)


def save_png(image: Image.Image, path: str | os.PathLike) -> str:
    """Save losslessly as PNG and return the path."""
    image.save(path, format="PNG")
    return os.fspath(path)


EXPORT_SCALES = (1, 2, 4, 8)  # the enlargements a game maker downloads, nearest-neighbour
SHEET_APP = "Sprite Diffusion Studio"  # meta.app of a sheet's JSON, where Aseprite names itself
Tag = tuple[str, int, int] | tuple[str, int, int, str]  # (name, from, to[, direction])
DIRECTIONS = ("forward", "reverse", "pingpong")


def save_sprites(
    images: np.ndarray,
    folder: str | os.PathLike,
    name: str = "sprite",
    scales: Sequence[int] = (1,),
) -> list[str]:
    """Each of (n, H, W, 3 or 4) uint8 sprites as a PNG of its own at every one of ``scales``
    (nearest-neighbour; transparent where the sprite is): ``name-01.png`` at 1x,
    ``name-01@4x.png`` at 4x. Returns the paths, sprite by sprite."""
    images = np.asarray(images)
    images = images[None] if images.ndim == 3 else images
    paths = []
    for i, sprite in enumerate(images, start=1):
        for scale in scales:
            suffix = "" if scale == 1 else f"@{scale}x"
            path = os.path.join(folder, f"{name}-{i:02d}{suffix}.png")
            paths.append(save_png(grid(sprite, scale=scale), path))
    return paths


def save_sheet(
    images: np.ndarray,
    path: str | os.PathLike,
    columns: int | None = None,
    scale: int = 1,
    *,
    tags: Sequence[Tag] | None = None,
    frame_ms: int = 100,
) -> str:
    """Write (n, H, W, 3 or 4) uint8 sprites as a sprite sheet a game engine reads: ``path``, a
    PNG of the sprites side by side without gutters (``columns`` a row, about square by
    default; enlarged ``scale``x, nearest-neighbour; transparent where they are), and beside it
    ``path`` with ``.json``, in Aseprite's JSON "array" format: ``frames`` (each sprite's
    rectangle in the sheet, ``frame_ms`` each) and ``meta`` (``image``, ``size``, ``scale`` and
    ``frameTags``: the named runs of frames, by default one tag over all frames named after the
    file). A tag is (name, first frame, last frame) and optionally a direction, "forward",
    "reverse" or "pingpong". Returns the PNG's path.
    """
    images = np.asarray(images)
    images = images[None] if images.ndim == 3 else images
    n, h, w, c = images.shape
    if columns is not None and (isinstance(columns, bool) or columns < 1):
        raise ValueError(f"columns must be a whole number of at least 1, got {columns!r}")
    columns = min(columns or math.ceil(math.sqrt(n)), n)
    sheet = grid(images, scale=scale, cols=columns, gap=0)
    path = os.fspath(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    tags = [(stem, 0, n - 1)] if tags is None else list(tags)
    frame_tags = []
    for tag in tags:
        name, first, last, *direction = tag
        direction = direction[0] if direction else "forward"
        if not 0 <= first <= last < n or direction not in DIRECTIONS:
            raise ValueError(
                f"a tag is (name, first, last[, direction]) with 0 <= first <= last < {n} and a "
                f"direction in {DIRECTIONS}, got {tag!r}"
            )
        frame_tags.append({"name": name, "from": first, "to": last, "direction": direction})
    size = {"w": w * scale, "h": h * scale}
    frames = []
    for i in range(n):
        row, col = divmod(i, columns)
        frames.append(
            {
                "filename": f"{stem} {i}",
                "frame": {"x": col * size["w"], "y": row * size["h"], **size},
                "rotated": False,
                "trimmed": False,
                "spriteSourceSize": {"x": 0, "y": 0, **size},
                "sourceSize": size,
                "duration": int(frame_ms),
            }
        )
    meta = {
        "app": SHEET_APP,
        "version": "1",
        "image": os.path.basename(path),
        "format": "RGBA8888" if c == 4 else "RGB888",
        "size": {"w": sheet.width, "h": sheet.height},
        "scale": str(scale),
        "frameTags": frame_tags,
        "layers": [],
        "slices": [],
    }
    save_png(sheet, path)
    with open(os.path.splitext(path)[0] + ".json", "w", encoding="utf-8") as file:
        json.dump({"frames": frames, "meta": meta}, file, indent=1)
    return path


def save_gif(
    frames: Sequence[Image.Image],
    path: str | os.PathLike,
    frame_ms: int = 80,
    hold_ms: int = 1500,
    loop: int = 0,
    scale: int = 1,
) -> str:
    """Write an animated GIF that shows each frame ``frame_ms`` and holds the last ``hold_ms``,
    each frame enlarged ``scale``x (nearest-neighbour).

    A frame of at most 256 colours (a finished sheet with a palette) is stored exactly; a
    noisier one goes through Pillow's fast octree quantiser, which took 14 ms for twenty
    128 px noise frames where Pillow's default median cut took 570 ms. Frames are quantised
    before they are enlarged: the same colours, at a scale² smaller cost.
    """
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    if scale < 1:
        raise ValueError("scale must be a positive integer")
    durations = [frame_ms] * (len(frames) - 1) + [max(hold_ms, frame_ms)]
    transparent = any(f.mode == "RGBA" for f in frames)
    paletted = [_gif_frame(f, transparent) for f in frames]
    if scale > 1:
        paletted = [
            p.resize((p.width * scale, p.height * scale), Image.Resampling.NEAREST)
            for p in paletted
        ]
    # Pillow takes a list of durations for an animation but only a number for a single frame.
    duration = durations if len(frames) > 1 else durations[0]
    extra = {"transparency": GIF_CLEAR, "disposal": 2} if transparent else {}
    paletted[0].save(
        path, format="GIF", save_all=True, append_images=paletted[1:], duration=duration,
        loop=loop, **extra,
    )  # fmt: skip
    return os.fspath(path)


GIF_CLEAR = 255  # the palette index of transparent pixels in a transparent GIF


def _gif_frame(frame: Image.Image, transparent: bool) -> Image.Image:
    """One GIF frame: exact when it has few colours; with index GIF_CLEAR for clear pixels."""
    rgb = frame.convert("RGB")
    colours = 255 if transparent else 256  # keep one index free for "clear"
    exact = rgb.getcolors(colours) is not None  # None means more colours than that
    method = Image.Quantize.MEDIANCUT if exact else Image.Quantize.FASTOCTREE
    paletted = rgb.quantize(colours, method=method)
    if transparent:
        clear = np.asarray(frame.convert("RGBA"))[..., 3] < 128
        indices = np.asarray(paletted).copy()
        indices[clear] = GIF_CLEAR
        palette = paletted.getpalette() or []
        paletted = Image.fromarray(indices, "P")
        paletted.putpalette(palette + [0] * (768 - len(palette)))
    return paletted
