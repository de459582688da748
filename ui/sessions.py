"""Browser sessions and client addresses: when Stop was pressed, the runs each has in flight,
and how long Gradio keeps a session."""

from __future__ import annotations

import datetime
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import gradio as gr

from .errors import InputError
from .limits import MAX_JOBS_PER_CLIENT, MAX_JOBS_PER_SESSION, PROXY_HOPS, SESSION_TTL_S


class Sessions:
    """Per browser session: when Stop was last pressed, and the runs it has going or waiting;
    per client address: the runs all its sessions have going.

    Gradio's own ``cancels`` kills the handler from outside, which leaves the page showing
    "Error" when it races with a streamed update; a flag checked every step does not, and lets
    a stopped run still hand back the frames it has drawn. Generate clicks are recorded at once
    (outside the queue): a Stop pressed while a run still waits in the queue ends it as it
    starts, and a session with MAX_JOBS_PER_SESSION runs in flight cannot queue another.
    Every run, however it came, is counted again as it starts (:meth:`job`), against its
    session and against its client address (noted when it was queued, :meth:`note_client`).
    """

    FORGET_AFTER_S = 900  # longer than any run allowed by MAX_WORK

    def __init__(self) -> None:
        self._stopped: dict[str, float] = {}
        self._clicked: dict[str, list[float]] = {}
        self._clients: dict[str, tuple[str, float]] = {}  # session -> (address, when noted)
        self._running: Counter[str] = Counter()  # sessions and addresses with runs going
        self._lock = threading.Lock()

    def _forget_old(self, now: float) -> None:
        self._stopped = {k: v for k, v in self._stopped.items() if now - v < self.FORGET_AFTER_S}
        self._clicked = {
            k: kept
            for k, v in self._clicked.items()
            if (kept := [t for t in v if now - t < self.FORGET_AFTER_S])
        }
        self._clients = {k: v for k, v in self._clients.items() if now - v[1] < self.FORGET_AFTER_S}

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

    def note_client(self, session: str, client: str) -> None:
        """``session`` calls from ``client`` (an address, see :func:`client_address`)."""
        now = time.monotonic()
        with self._lock:
            self._forget_old(now)
            self._clients[session] = (client, now)

    def client(self, session: str | None) -> str | None:
        """The client address ``session`` last called from, if known."""
        with self._lock:
            noted = self._clients.get(session or "")
        return noted[0] if noted else None

    def stopped_since(self, session: str | None, since: float) -> bool:
        return session is not None and self._stopped.get(session, -math.inf) > since

    @contextmanager
    def job(self, session: str | None) -> Iterator[float]:
        """A run of ``session``; yields when its click was recorded (or now), for Stop.

        Raises InputError when the session already has MAX_JOBS_PER_SESSION runs going, or its
        client address MAX_JOBS_PER_CLIENT: the handler's own check, whatever way it was called.
        """
        now = time.monotonic()
        keys = [f"session:{session}"] if session else []
        client = self.client(session)
        keys += [f"client:{client}"] if client else []
        with self._lock:
            clicks = self._clicked.get(session or "")
            began = clicks[0] if clicks else now
            session_over = self._running[f"session:{session}"] >= MAX_JOBS_PER_SESSION
            client_over = self._running[f"client:{client}"] >= MAX_JOBS_PER_CLIENT
            if session_over or (client is not None and client_over):
                if clicks:
                    clicks.pop(0)
                raise busy(by_address=not session_over)
            self._running.update(keys)
        try:
            yield began
        finally:
            with self._lock:
                self._running.subtract(keys)
                self._running = +self._running  # drop the zeros
                clicks = self._clicked.get(session or "")
                if clicks:
                    clicks.pop(0)


def busy(by_address: bool = False) -> InputError:
    """The refusal of a run over the limit of its session (or of its client address)."""
    if by_address:
        return InputError(
            f"Your address already has {MAX_JOBS_PER_CLIENT} runs going or waiting, the most "
            "allowed at once. Wait for one to finish."
        )
    return InputError(
        f"You already have {MAX_JOBS_PER_SESSION} runs going or waiting, the most allowed at "
        "once. Wait for one to finish, or press Stop."
    )


def session_of(request: gr.Request | None) -> str | None:
    """The browser session a request comes from (None outside a request, e.g. in tests)."""
    return getattr(request, "session_hash", None)


def client_of(request: gr.Request | None) -> str | None:
    """The client address a request comes from (None outside a request)."""
    client = getattr(request, "client", None)
    if request is None or client is None:
        return None
    return client_address(getattr(client, "host", None), getattr(request, "headers", None))


def client_address(host: str | None, headers: Mapping[str, str] | None) -> str:
    """The address of the caller: the connection's, or behind PROXY_HOPS proxies the one the
    first of them wrote into X-Forwarded-For (entries before it can be forged by anyone)."""
    forwarded = (headers or {}).get("x-forwarded-for") if PROXY_HOPS else None
    hops = [hop.strip() for hop in (forwarded or "").split(",") if hop.strip()]
    if PROXY_HOPS and len(hops) >= PROXY_HOPS:
        return hops[-PROXY_HOPS]
    return host or "unknown"


def expire_sessions(holder: Any, ttl_s: float = SESSION_TTL_S) -> int:
    """Forget Gradio's copy of every session (``demo.state_holder``) unseen for ``ttl_s``;
    returns how many. Gradio forgets a session only when MAX_SESSIONS newer ones push it out."""
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=ttl_s)
    with holder.lock:
        idle = [s for s, used in holder.time_last_used.items() if used < cutoff]
        for session in idle:
            holder.session_data.pop(session, None)
            holder.time_last_used.pop(session, None)
    return len(idle)


class SessionExpiry:
    """:func:`expire_sessions` every ``every_s`` on a daemon thread, until :meth:`stop`."""

    def __init__(self, demo: gr.Blocks, ttl_s: float = SESSION_TTL_S, every_s: float = 60.0):
        self.demo, self.ttl_s, self.every_s = demo, ttl_s, every_s
        self._stop = threading.Event()

    def start(self) -> SessionExpiry:
        def loop() -> None:
            while not self._stop.wait(self.every_s):
                expire_sessions(self.demo.state_holder, self.ttl_s)

        threading.Thread(target=loop, name="session-expiry", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
