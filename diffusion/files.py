"""Config and weight files: atomic writes, so a reader (or a crash) never sees half a config,
weights or checkpoint; and a config read that names its file when it is not a JSON object."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def read_config(path: Path) -> dict[str, Any]:
    """A config.json as a dict, or a ValueError naming the file: not JSON, or not an object."""
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got a {type(config).__name__}")
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write a config.json atomically, indented and ending in a newline, as a person would."""
    return atomic_write(path, json.dumps(config, indent=2) + "\n")
