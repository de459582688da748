"""Rendering: turn model outputs into the crisp pictures and animations people look at.

Values map to pixels with clamp((x + 1) / 2) for every frame alike (never a per-frame min/max
stretch, which makes noise look like signal), and enlarging is nearest-neighbour only, so one
sprite pixel stays one sharp square.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(n, C, H, W) values in [-1, 1] -> (n, H, W, C) uint8, clamping what lies outside."""
    pixels = ((x.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def grid(
    images: np.ndarray,
    scale: int = 8,
    cols: int | None = None,
    gap: int = 1,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Lay out (n, H, W, 3) uint8 sprites in a grid ``gap`` pixels apart, enlarged ``scale``x."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (n, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    if scale < 1:
        raise ValueError("scale must be a positive integer")
    n, h, w, _ = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = np.empty((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), np.uint8)
    sheet[:] = background
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = img
    return Image.fromarray(sheet).resize(
        (sheet.shape[1] * scale, sheet.shape[0] * scale), Image.Resampling.NEAREST
    )


def save_png(image: Image.Image, path: str | os.PathLike) -> str:
    """Save losslessly as PNG and return the path."""
    image.save(path, format="PNG")
    return os.fspath(path)


def save_gif(
    frames: Sequence[Image.Image],
    path: str | os.PathLike,
    frame_ms: int = 80,
    hold_ms: int = 1500,
    loop: int = 0,
) -> str:
    """Write an animated GIF that shows each frame ``frame_ms`` and holds the last ``hold_ms``."""
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    durations = [frame_ms] * (len(frames) - 1) + [max(hold_ms, frame_ms)]
    stack = np.stack([np.asarray(f.convert("RGB")) for f in frames])
    iio.imwrite(path, stack, extension=".gif", duration=durations, loop=loop)
    return os.fspath(path)
