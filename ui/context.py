"""What every tab shares: the models, the output store, limits, validation and error handling.

No diffusion maths here (that is the ``diffusion`` package) and no layout (each tab has its own).
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, UnidentifiedImageError

from diffusion import SAMPLERS, SpritePipeline, render

log = logging.getLogger("sprite_studio")

MAX_BATCH = 16
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 10.0
# One request may cost at most this many sprite-steps (network calls x sprites): DDPM's 500
# steps for 8 sprites, or the defaults 100 times over. Larger jobs would hold a worker for minutes.
MAX_WORK = 4000
# Runs one browser session may have going or waiting at once; more are refused at their start.
MAX_JOBS_PER_SESSION = 2
MAX_TEXT = 200  # characters of user text echoed back in a message
IMAGE_HEIGHT = 340  # px on the page; the browser scales with image-rendering: pixelated
SCALE = 8  # a 16 px sprite becomes 128 px: big enough to see, nearest-neighbour so still crisp
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096
CONCURRENCY = 2  # sampling is CPU/GPU bound: more parallel runs only make each one slower
QUEUE_SIZE = 64
KEEP_RUNS = 64  # output folders kept on disk; older ones are deleted as new runs start
# Our own sweep of Gradio's file cache and our run folders (Gradio's delete_cache dies on its
# first sweep that overlaps traffic): files older than MAX_AGE go, and the oldest beyond MAX_BYTES.
CACHE_EVERY_S, CACHE_MAX_AGE_S, CACHE_MIN_AGE_S = 60.0, 1800.0, 300.0
CACHE_MAX_BYTES = 512 * 2**20
UNCONDITIONAL = "(none)"
PALETTE_CHOICES = [
    ("raw model output", "raw"),
    ("training palette", "data"),
    ("at most 8 colours", "8"),
    ("at most 4 colours", "4"),
]


class InputError(gr.Error):
    """A bad input: shown to the user, kept out of the server log (it is no fault of the server)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, print_exception=False)


def shorten(value: Any) -> str:
    """``repr(value)``, cut to MAX_TEXT characters so a huge input is not echoed back whole."""
    text = repr(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text):,} characters)"


def whole(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or an InputError that says what is allowed."""
    message = f"{name} must be a whole number from {low} to {high} (got {shorten(value)})."
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(message) from None
    if not math.isfinite(number) or number != round(number) or not low <= number <= high:
        raise InputError(message)
    return int(number)


def finite(value: Any, name: str, low: float, high: float) -> float:
    """``value`` as a float in [low, high], or an InputError that says what is allowed."""
    message = f"{name} must be a number from {low:g} to {high:g} (got {shorten(value)})."
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(message) from None
    if not (math.isfinite(number) and low <= number <= high):
        raise InputError(message)
    return number


def check_seed(seed: Any) -> int:
    if seed is None or seed == "":
        raise InputError("Enter a seed (a whole number), or press 🎲 Random for one.")
    return whole(seed, "Seed", 0, MAX_SEED)


def parse_palette(value: Any, pipe: SpritePipeline) -> str | int | None:
    """A palette choice ("raw", "data" or a colour count) -> the pipeline's ``palette=``."""
    if value in (None, "", "raw"):
        return None
    if value == "data":
        if pipe.palette is None:
            raise InputError("This model has no training palette: choose 'raw' or a colour count.")
        return "data"
    return whole(value, "Palette colours", 2, 256)


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def load_upload(path: str | os.PathLike, resolution: int) -> np.ndarray:
    """An uploaded image file -> (resolution, resolution, 3) uint8, or an InputError saying why not.

    See ``render.to_sprite`` for how a picture becomes a sprite.
    """
    size = os.path.getsize(path)
    if size > MAX_UPLOAD_BYTES:
        raise InputError(
            f"That file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 2**20:.0f} MB."
        )
    unreadable = "That file is not an image we can read. Upload a PNG (or GIF, JPEG, WebP, BMP)."
    too_big = f"That image has more than {MAX_UPLOAD_PIXELS:,} pixels; sprites are much smaller."
    try:
        im = Image.open(path)
    except Image.DecompressionBombError:
        raise InputError(too_big) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputError(unreadable) from None
    with im:
        # Checked before decoding so a small file that unpacks to gigapixels is never loaded.
        if im.width * im.height > MAX_UPLOAD_PIXELS:
            raise InputError(f"That image is {im.width}×{im.height} pixels. {too_big}")
        try:
            return render.to_sprite(im, resolution)
        except (OSError, ValueError):  # a valid header over truncated or corrupt data
            raise InputError(unreadable) from None


# -- files on disk ----------------------------------------------------------------------------


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


# -- sessions: Stop and fair use --------------------------------------------------------------


class Sessions:
    """Per browser session: when Stop was last pressed, and the runs it has going or waiting.

    Gradio's own ``cancels`` kills the handler from outside, which leaves the page showing
    "Error" when it races with a streamed update; a flag checked every step does not, and lets
    a stopped run still hand back the frames it has drawn. Generate clicks are recorded at once
    (outside the queue): a Stop pressed while a run still waits in the queue ends it as it
    starts, and a session with MAX_JOBS_PER_SESSION runs in flight cannot queue another.
    """

    FORGET_AFTER_S = 900  # longer than any run allowed by MAX_WORK

    def __init__(self) -> None:
        self._stopped: dict[str, float] = {}
        self._clicked: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _forget_old(self, now: float) -> None:
        self._stopped = {k: v for k, v in self._stopped.items() if now - v < self.FORGET_AFTER_S}
        self._clicked = {
            k: kept
            for k, v in self._clicked.items()
            if (kept := [t for t in v if now - t < self.FORGET_AFTER_S])
        }

    def press_stop(self, session: str | None) -> None:
        if session is None:
            return
        now = time.monotonic()
        with self._lock:
            self._forget_old(now)
            self._stopped[session] = now

    def click(self, session: str | None) -> None:
        """Generate was pressed: record it, or refuse when the session has too many in flight."""
        if session is None:
            return
        now = time.monotonic()
        with self._lock:
            self._forget_old(now)
            clicks = self._clicked.setdefault(session, [])
            if len(clicks) >= MAX_JOBS_PER_SESSION:
                raise InputError(
                    f"You already have {len(clicks)} runs going or waiting, the most allowed at "
                    "once. Wait for one to finish, or press Stop."
                )
            clicks.append(now)

    def stopped_since(self, session: str | None, since: float) -> bool:
        return session is not None and self._stopped.get(session, -math.inf) > since

    @contextmanager
    def job(self, session: str | None) -> Iterator[float]:
        """A run of ``session``; yields when its click was recorded (or now), for Stop."""
        now = time.monotonic()
        with self._lock:
            clicks = self._clicked.get(session or "")
            began = clicks[0] if clicks else now
        try:
            yield began
        finally:
            with self._lock:
                clicks = self._clicked.get(session or "")
                if clicks:
                    clicks.pop(0)


def session_of(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def is_api_call(request: gr.Request | None) -> bool:
    """Whether the request comes from gradio_client (which marks itself) rather than the page."""
    headers = getattr(request, "headers", None)
    return headers is not None and headers.get("x-gradio-user") == "api"


# -- handlers: no bare "Error" ----------------------------------------------------------------


def unexpected_message(err: BaseException) -> str:
    return (
        f"Something went wrong on the server ({type(err).__name__}). Nothing was changed; "
        "try again, or with fewer steps or a smaller batch. The server log has the details."
    )


def guarded(
    fn: Callable,
    outputs: dict[str, gr.components.Component],
    status: str | None = "status",
    on_error: dict[str, Any] | None = None,
) -> Callable:
    """Wire a handler that yields or returns ``{output name: value}`` to Gradio components.

    Every exception ends as a message: an InputError as it is, anything else as "something went
    wrong" with the traceback in the server log. On the page the message goes to the ``status``
    output (and a toast), other outputs stay as they were (or take ``on_error``), so no output
    is stamped "Error"; an API client gets it as a gr.Error. Returns a function whose outputs
    are ``list(outputs.values())``.
    """
    on_error = on_error or {}

    def to_components(values: dict[str, Any]) -> dict:
        unknown = set(values) - set(outputs)
        if unknown:
            raise KeyError(f"{fn.__name__} returned unknown outputs {sorted(unknown)}")
        return {outputs[name]: value for name, value in values.items()}

    def failure(err: BaseException, request: gr.Request | None) -> dict:
        if isinstance(err, InputError):
            log.info("%s refused: %s", fn.__name__, err.message)
            message = err.message
        else:
            log.exception("%s failed", fn.__name__)
            message = unexpected_message(err)
        if is_api_call(request) or status is None:
            raise InputError(message) from None
        gr.Warning(message)
        return to_components({status: f"⚠️ {message}", **on_error})

    def request_of(args: tuple, kwargs: dict) -> gr.Request | None:
        found = kwargs.get("request")
        return found or next((a for a in args if isinstance(a, gr.Request)), None)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args: Any, **kwargs: Any) -> Iterator[dict]:
            try:
                for values in fn(*args, **kwargs):
                    yield to_components(values)
            except Exception as err:
                yield failure(err, request_of(args, kwargs))

        return stream

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> dict:
        try:
            return to_components(fn(*args, **kwargs))
        except Exception as err:
            return failure(err, request_of(args, kwargs))

    return call


# -- the shared context -----------------------------------------------------------------------


class Studio:
    """The models, the output store and the sessions: what every tab's handlers work with."""

    def __init__(self, models: dict[str, SpritePipeline], store: OutputStore | None = None):
        if not models:
            raise ValueError("Sprite Diffusion Studio needs at least one model")
        self.models = dict(models)
        self.store = store or OutputStore()
        self.default_model = next(iter(self.models))
        self.sessions = Sessions()

    def pipe(self, model: str | None) -> SpritePipeline:
        if not model:
            return self.models[self.default_model]
        if model not in self.models:
            raise InputError(
                f"Unknown model {shorten(model)}. Available: {', '.join(self.models)}."
            )
        return self.models[model]

    def draw_sprite(self, model: str | None, label: str | None = None) -> tuple[np.ndarray, str]:
        """One fresh sprite of ``label`` (any, by default) with the model's recommended
        settings, and a line that says what it is."""
        pipe = self.pipe(model)
        label = label if label in pipe.labels else secrets.choice(pipe.labels)
        seed = random_seed()
        d = pipe.defaults
        sprite = pipe.generate(context=label, n=1, seed=seed)[0]
        return (
            sprite,
            f"a **{label}**, drawn with {d['sampler']} in {d['steps']} steps, seed {seed}",
        )

    @staticmethod
    def last_sprite(sprites: np.ndarray | None) -> np.ndarray:
        """The first sprite of this session's last Generate run."""
        if sprites is None or len(sprites) == 0:
            raise InputError("Nothing generated yet in this session: use the Generate tab first.")
        return sprites[0]

    def stop(self, request: gr.Request) -> None:
        """Ask this session's running (or waiting) generate or compare to end at its next step."""
        self.sessions.press_stop(session_of(request))

    def click(self, request: gr.Request) -> None:
        self.sessions.click(session_of(request))


def check_work(sampler: str, steps: int, n: int) -> None:
    """Refuse one request that would hold a worker for minutes."""
    work = steps * SAMPLERS[sampler].calls_per_step * n
    if work > MAX_WORK:
        raise InputError(
            f"That run needs {work:,.0f} sprite-steps (steps × batch size"
            f"{' × 2 calls per step' if SAMPLERS[sampler].calls_per_step > 1 else ''}); the "
            f"limit is {MAX_WORK:,}. Use fewer steps or a smaller batch."
        )


def sprite_image(label: str, min_width: int = 160, **kwargs: Any) -> gr.Image:
    """An output image of sprites, drawn with hard pixel edges (the ``pixel`` CSS class), with
    its caption above the picture and no toolbar, so nothing covers a sprite."""
    with gr.Column(min_width=min_width):
        gr.Markdown(f"**{label}**", elem_classes="caption")
        return gr.Image(
            label=label,
            show_label=False,
            buttons=[],
            elem_classes="pixel",
            interactive=False,
            **kwargs,
        )


def sheet(images: np.ndarray) -> Image.Image:
    """Sprites as the page shows them: a grid enlarged SCALE times."""
    return render.grid(images, SCALE)
