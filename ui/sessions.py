"""Browser sessions: when Stop was pressed, the runs each has in flight, and who is calling."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

from .limits import MAX_JOBS_PER_SESSION


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

    def click(self, session: str | None) -> bool:
        """A run was asked for: record it and return True, or return False (recording nothing)
        when the session already has MAX_JOBS_PER_SESSION in flight."""
        if session is None:
            return True
        now = time.monotonic()
        with self._lock:
            self._forget_old(now)
            clicks = self._clicked.setdefault(session, [])
            if len(clicks) >= MAX_JOBS_PER_SESSION:
                return False
            clicks.append(now)
            return True

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
    """The browser session a request comes from (None outside a request, e.g. in tests)."""
    return getattr(request, "session_hash", None)


def is_api_call(request: gr.Request | None) -> bool:
    """Whether the request comes from gradio_client (which marks itself) rather than the page."""
    headers = getattr(request, "headers", None)
    return headers is not None and headers.get("x-gradio-user") == "api"
