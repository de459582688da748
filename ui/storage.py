"""Files on disk: one folder per run, and a sweeper that bounds what a long-running app leaves."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .limits import (
    CACHE_EVERY_S,
    CACHE_MAX_AGE_S,
    CACHE_MAX_BYTES,
    CACHE_MIN_AGE_S,
    KEEP_RUNS,
)

log = logging.getLogger("sprite_studio")


class OutputStore:
    """One folder per run under a private temp root; only the newest ``keep`` folders survive,
    and never one that a live run still owns (see :meth:`run`)."""

    def __init__(self, root: str | os.PathLike | None = None, keep: int = KEEP_RUNS) -> None:
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="sprite-studio-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._live: set[Path] = set()
        self._lock = threading.Lock()

    @contextmanager
    def run(self) -> Iterator[Path]:
        """A fresh folder for one run, protected from pruning until the block ends."""
        with self._lock:
            folder = self.root / f"{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"
            folder.mkdir()
            self._live.add(folder)
            runs = sorted(p for p in self.root.iterdir() if p.is_dir())
            for old in runs[: -self.keep]:
                if old not in self._live:
                    shutil.rmtree(old, ignore_errors=True)
        try:
            yield folder
        finally:
            with self._lock:
                self._live.discard(folder)

    def is_live(self, path: Path) -> bool:
        """Whether ``path`` is (inside) the folder of a run still going."""
        with self._lock:
            return any(path == live or live in path.parents for live in self._live)


class CacheSweeper:
    """Bound the files a long-running app leaves behind, by age and by total size.

    Sweeps ``folders`` (Gradio's upload/cache folder and our run folders) every ``every_s``:
    files older than ``max_age_s`` are deleted, then the oldest until the total is under
    ``max_bytes``; files younger than ``min_age_s`` (still being written or served) and files
    that ``protect`` claims are never touched. Every filesystem race (a file deleted or created
    by a request meanwhile) is tolerated, so a sweep never dies.
    """

    def __init__(
        self,
        folders: Sequence[str | os.PathLike],
        *,
        every_s: float = CACHE_EVERY_S,
        max_age_s: float = CACHE_MAX_AGE_S,
        min_age_s: float = CACHE_MIN_AGE_S,
        max_bytes: int = CACHE_MAX_BYTES,
        protect: Callable[[Path], bool] = lambda path: False,
    ) -> None:
        self.folders = [Path(f) for f in folders]
        self.every_s, self.max_age_s, self.min_age_s = every_s, max_age_s, min_age_s
        self.max_bytes, self.protect = max_bytes, protect
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _files(self) -> list[tuple[float, int, Path]]:
        found = []
        for folder in self.folders:
            for dirpath, _, names in os.walk(folder):
                for name in names:
                    path = Path(dirpath) / name
                    try:
                        st = path.stat()
                    except OSError:
                        continue
                    found.append((st.st_mtime, st.st_size, path))
        return sorted(found)

    def sweep(self, now: float | None = None) -> int:
        """One sweep; returns the number of files deleted."""
        now = time.time() if now is None else now
        files = self._files()
        total = sum(size for _, size, _ in files)
        deleted = 0
        for mtime, size, path in files:  # oldest first
            age = now - mtime
            if age < self.min_age_s:
                break
            if age < self.max_age_s and total <= self.max_bytes:
                break
            if self.protect(path):
                continue
            try:
                path.unlink()
            except OSError:
                continue
            total -= size
            deleted += 1
        self._remove_empty_folders(now)
        return deleted

    def _remove_empty_folders(self, now: float) -> None:
        for folder in self.folders:
            for dirpath, _, _ in sorted(os.walk(folder), reverse=True):
                path = Path(dirpath)
                try:
                    old = now - path.stat().st_mtime >= self.min_age_s
                    if path != folder and old and not self.protect(path):
                        path.rmdir()  # only succeeds when empty
                except OSError:
                    continue

    def start(self) -> CacheSweeper:
        """Sweep every ``every_s`` on a daemon thread until :meth:`stop`."""

        def loop() -> None:
            while not self._stop.wait(self.every_s):
                try:
                    self.sweep()
                except Exception:  # a sweep must never end the sweeping
                    log.exception("cache sweep failed; trying again in %.0f s", self.every_s)

        self._thread = threading.Thread(target=loop, name="cache-sweeper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
