"""Palettes: the fixed colour sets a game is drawn in, read from a name, a list or a file.

A palette is (k, 3) uint8 colours, 1 <= k <= MAX_COLOURS. It comes from

- a name of a well-known palette (:data:`NAMED`): "db16" and "db32" (DawnBringer's, the ones
  the DawnLike tiles were drawn in), "pico8" (the PICO-8 console) and "gameboy" (four greens);
- a list of "#rrggbb" strings, or a (k, 3) array;
- a palette file: ``.hex`` (one ``rrggbb`` a line, as Lospec exports), ``.gpl`` (GIMP's
  "GIMP Palette", ``R G B name`` a line) or ``.png`` (its colours, in the order they first
  appear: a strip of swatches, or any picture of at most 256 colours).

:func:`lock` picks one k-colour palette for a whole batch, so every sprite of a sheet (and every
frame of a morph) shares it. Snapping pixels to a palette is the render module's palette stage.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_COLOURS = 256  # what an indexed PNG or a GIF can hold
FILE_TYPES = (".hex", ".gpl", ".png")
NAMED: dict[str, tuple[str, ...]] = {
    "db16": (
        "#140c1c", "#442434", "#30346d", "#4e4a4e", "#854c30", "#346524", "#d04648", "#757161",
        "#597dce", "#d27d2c", "#8595a1", "#6daa2c", "#d2aa99", "#6dc2ca", "#dad45e", "#deeed6",
    ),
    "db32": (
        "#000000", "#222034", "#45283c", "#663931", "#8f563b", "#df7126", "#d9a066", "#eec39a",
        "#fbf236", "#99e550", "#6abe30", "#37946e", "#4b692f", "#524b24", "#323c39", "#3f3f74",
        "#306082", "#5b6ee1", "#639bff", "#5fcde4", "#cbdbfc", "#ffffff", "#9badb7", "#847e87",
        "#696a6a", "#595652", "#76428a", "#ac3232", "#d95763", "#d77bba", "#8f974a", "#8a6f30",
    ),
    "pico8": (
        "#000000", "#1d2b53", "#7e2553", "#008751", "#ab5236", "#5f574f", "#c2c3c7", "#fff1e8",
        "#ff004d", "#ffa300", "#ffec27", "#00e436", "#29adff", "#83769c", "#ff77a8", "#ffccaa",
    ),
    "gameboy": ("#0f380f", "#306230", "#8bac0f", "#9bbc0f"),
}  # fmt: skip
ACCEPTED = (
    f"a palette is a name ({', '.join(NAMED)}), a list of '#rrggbb' colours, or a .hex, .gpl "
    f"or .png file of 1 to {MAX_COLOURS} colours"
)
Source = str | os.PathLike | Sequence[str] | np.ndarray  # what :func:`load` reads


def is_fixed(palette: object) -> bool:
    """Whether ``palette`` (a ``palette=`` value) names fixed colours: a name, a list, an array
    or a file, rather than None (raw), "data" (a model's training palette) or a colour count."""
    if palette is None or isinstance(palette, (bool, int, np.integer)):
        return False
    return not (isinstance(palette, str) and palette == "data")


def load(source: Source) -> np.ndarray:
    """The colours of a palette name, list, array or file: (k, 3) uint8, in their order,
    duplicates dropped. Raises ValueError saying what is wrong and what is accepted."""
    if isinstance(source, np.ndarray):
        colours = _checked_array(source)
    elif isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_file(source)):
        colours = read(source)
    elif isinstance(source, str):
        name = source.strip().lower()
        if name not in NAMED:
            raise ValueError(f"no palette is called {source!r}: {ACCEPTED}")
        colours = from_hex(NAMED[name])
    elif isinstance(source, Sequence) and all(isinstance(c, str) for c in source):
        colours = from_hex(source)
    else:
        raise ValueError(f"not a palette: {_short(source)}; {ACCEPTED}")
    return _checked(colours, "the palette")


def from_hex(colours: Sequence[str]) -> np.ndarray:
    """["#rrggbb", ...] (the '#' optional) -> (k, 3) uint8; ValueError names a bad entry."""
    rows = []
    for colour in colours:
        text = str(colour).strip().removeprefix("#")
        if len(text) != 6 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError(f"{_short(colour)} is not a colour '#rrggbb'; {ACCEPTED}")
        rows.append([int(text[i : i + 2], 16) for i in (0, 2, 4)])
    return np.array(rows, np.uint8).reshape(-1, 3)


def to_hex(palette: np.ndarray) -> list[str]:
    """(k, 3) uint8 -> ["#rrggbb", ...]."""
    return ["#{:02x}{:02x}{:02x}".format(*map(int, c)) for c in np.asarray(palette)]


def read(path: str | os.PathLike) -> np.ndarray:
    """The colours of a ``.hex``, ``.gpl`` or ``.png`` palette file: (k, 3) uint8."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in FILE_TYPES:
        raise ValueError(f"{path.name} is not a palette file; {ACCEPTED}")
    if not path.is_file():
        raise ValueError(f"no palette file {os.fspath(path)!r}")
    if kind == ".png":
        colours = _png_colours(path)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path.name} is not a text palette file; {ACCEPTED}") from None
        colours = _gpl_colours(text, path.name) if kind == ".gpl" else _hex_colours(text, path.name)
    return _checked(colours, path.name)


def lock(images: np.ndarray, k: int) -> np.ndarray:
    """One palette of at most ``k`` colours for a whole batch of uint8 sprites (n, H, W, 3 or 4):
    Pillow's median cut over every opaque pixel of every sprite at once, so the sprites of a
    sheet share their colours. (k', 3) uint8 with k' <= k."""
    images = np.asarray(images)
    pixels = images[..., :3]
    if images.shape[-1] == 4:
        pixels = pixels[images[..., 3] >= 128]
    pixels = pixels.reshape(1, -1, 3)
    if pixels.shape[1] == 0:
        return np.zeros((1, 3), np.uint8)
    quantised = Image.fromarray(np.ascontiguousarray(pixels)).quantize(
        colors=int(k), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    used = np.unique(np.asarray(quantised))
    palette = np.array(quantised.getpalette()[: 3 * (int(used.max()) + 1)], np.uint8)
    return palette.reshape(-1, 3)[used]


def describe(palette: object) -> str:
    """A short name for a fixed palette in reports: its name, its file's name, or "k colours"."""
    if isinstance(palette, str) and palette.strip().lower() in NAMED:
        return palette.strip().lower()
    if isinstance(palette, (str, os.PathLike)):
        return Path(palette).name
    return f"{len(palette)} colours"  # type: ignore[arg-type]


def _looks_like_file(text: str) -> bool:
    return Path(text).suffix.lower() in FILE_TYPES or os.sep in text or "/" in text


def _hex_colours(text: str, name: str) -> np.ndarray:
    lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1)]
    rows = []
    for number, line in lines:
        if not line or line.startswith((";", "//")):
            continue
        try:
            rows.append(from_hex([line])[0])
        except ValueError:
            raise ValueError(
                f"{name}, line {number}: {_short(line)} is not a colour; a .hex file has one "
                "rrggbb colour a line"
            ) from None
    return np.array(rows, np.uint8).reshape(-1, 3)


def _gpl_colours(text: str, name: str) -> np.ndarray:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "GIMP Palette":
        raise ValueError(f"{name} is not a GIMP palette: its first line must be 'GIMP Palette'")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        line = line.strip()
        if not line or line.startswith("#") or line.split(":")[0] in ("Name", "Columns"):
            continue
        parts = line.split()
        try:
            rgb = [int(v) for v in parts[:3]]
        except ValueError:
            rgb = []
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ValueError(
                f"{name}, line {number}: {_short(line)} is not a colour; a .gpl colour line "
                "is 'R G B name' with R, G, B from 0 to 255"
            )
        rows.append(rgb)
    return np.array(rows, np.uint8).reshape(-1, 3)


def _png_colours(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            rgba = np.asarray(image.convert("RGBA"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise ValueError(f"{path.name} is not a PNG we can read; {ACCEPTED}") from None
    pixels = rgba[rgba[..., 3] >= 128][:, :3]
    colours, first = np.unique(pixels.reshape(-1, 3), axis=0, return_index=True)
    if len(colours) > MAX_COLOURS:
        raise ValueError(
            f"{path.name} has {len(colours):,} colours, more than a palette's {MAX_COLOURS}: "
            "it is a picture, not a palette (a strip of swatches, one per colour)"
        )
    return colours[np.argsort(first)].astype(np.uint8)


def _checked_array(array: np.ndarray) -> np.ndarray:
    if array.ndim != 2 or array.shape[1] != 3 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"a palette array is (k, 3) whole numbers, got {array.dtype} {array.shape}"
        )
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError("a palette array's values lie from 0 to 255")
    return array.astype(np.uint8)


def _checked(colours: np.ndarray, what: str) -> np.ndarray:
    """Duplicates dropped (first kept); refused when empty or over MAX_COLOURS."""
    _, first = np.unique(colours, axis=0, return_index=True)
    colours = colours[np.sort(first)]
    if len(colours) == 0:
        raise ValueError(f"{what} has no colours; {ACCEPTED}")
    if len(colours) > MAX_COLOURS:
        raise ValueError(f"{what} has {len(colours)} colours, more than {MAX_COLOURS}; {ACCEPTED}")
    return colours


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
