"""Browser sessions and client addresses: when Stop was pressed, the runs each has in flight,
and how many sessions Gradio keeps, for how long, and whose go first."""

from __future__ import annotations

import datetime
import math
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import gradio as gr
from gradio.state_holder import StateHolder

from .errors import InputError
from .limits import (
    MAX_JOBS_PER_CLIENT,
    MAX_JOBS_PER_SESSION,
    MAX_SESSIONS_PER_CLIENT,
    PROXY_HOPS,
    SESSION_TTL_S,
)

UNKNOWN = "unknown"  # the owner of a session made outside any request we could place
# The client address of the request being served: Gradio makes a session on its first look at
# it, deep in its own routes, where no request is passed along.
_caller: ContextVar[str | None] = ContextVar("sprite_studio_caller", default=None)


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


@contextmanager
def calling_from(address: str) -> Iterator[None]:
    """Sessions Gradio makes within this block belong to ``address`` (see :class:`SessionStore`)."""
    token = _caller.set(address)
    try:
        yield
    finally:
        _caller.reset(token)


class SessionStore(StateHolder):
    """Gradio's store of sessions (``demo.state_holder``), fair between client addresses.

    Gradio's own store, once full, drops the least recently used session, whoever it belongs
    to: anyone who opens new sessions (every raw API call opens one) pushes every visitor out.
    Here each session belongs to the client address that made it (noted when it queued, or the
    address of the request during which it was made). An address holds at most ``per_client``
    sessions: beyond, its own longest unseen one goes. When the store is full, the longest
    unseen session of the address holding the most goes, the newcomer's own on a tie. So a flood
    from one address replaces its own sessions: it costs other visitors at most what one new
    visitor would. New sessions are not refused: a refusal would fail every honest API call
    made after the cap, since each of those opens a session of its own.
    """

    def __init__(self, sessions: Sessions, per_client: int = MAX_SESSIONS_PER_CLIENT) -> None:
        super().__init__()
        self.sessions, self.per_client = sessions, per_client
        self._owners: dict[str, str] = {}

    def owner(self, session: str) -> str | None:
        """The client address ``session`` belongs to, while it is held."""
        with self.lock:
            return self._owners.get(session) if session in self.session_data else None

    def update(self, session_id: str) -> None:
        """Gradio's hook after each look at a session: mark it used, and on its first look
        give it an owner and make room for it."""
        with self.lock:
            if session_id not in self.session_data:
                return
            self.session_data.move_to_end(session_id)
            if session_id not in self._owners:
                self._make_room(session_id)

    def _make_room(self, new: str) -> None:
        self._owners = {s: a for s, a in self._owners.items() if s in self.session_data}
        address = self.sessions.client(new) or _caller.get() or UNKNOWN
        self._owners[new] = address
        held = Counter(self._owners.get(s, UNKNOWN) for s in self.session_data)
        if held[address] > self.per_client:
            losers = {address}
        elif len(self.session_data) > self.capacity:
            most = max(held.values())
            mine = held[address] == most and held[address] > 1
            losers = {address} if mine else {a for a, n in held.items() if n == most}
        else:
            return
        # session_data runs from the longest unseen to the latest used.
        victim = next(
            s for s in self.session_data if s != new and self._owners.get(s, UNKNOWN) in losers
        )
        del self.session_data[victim]
        self.time_last_used.pop(victim, None)
        self._owners.pop(victim, None)

    def replace(self, app: Any) -> None:
        """Take the place of Gradio's store in the server ``app``, keeping what it holds."""
        with app.state_holder.lock:
            self.session_data.update(app.state_holder.session_data)
            self.time_last_used.update(app.state_holder.time_last_used)
        app.state_holder = self
        self.set_blocks(app.get_blocks())


def store_sessions_fairly(
    sessions: Sessions,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan for ``demo.launch(app_kwargs={"lifespan": ...})``: a :class:`SessionStore`
    takes the place of Gradio's store as the server starts, before any request."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        SessionStore(sessions).replace(app)
        yield

    return lifespan


def expire_sessions(holder: Any, ttl_s: float = SESSION_TTL_S) -> int:
    """Forget Gradio's copy of every session (``demo.state_holder``) unseen for ``ttl_s``;
    returns how many. Gradio forgets a session only when the store is full."""
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
