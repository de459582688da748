"""Atomic file writes: a reader (or a crash) never sees half a config, weights or checkpoint."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, content: bytes | str | Callable[[Path], object]) -> Path:
    """Write ``content`` (bytes, text, or a function that writes a given path) to a temporary
    file beside ``path``, flush it to disk, then rename it over ``path`` in one step."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if callable(content):
            content(tmp)
        else:
            tmp.write_bytes(content.encode() if isinstance(content, str) else content)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
