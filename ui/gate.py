"""The gate between the network and the app: what a request may be before Gradio reads it.

Each check is a refusal with a status and one log line, never a traceback:

- request bodies over MAX_REQUEST_BYTES (an upload: MAX_UPLOAD_REQUEST_BYTES) get 413, whether
  they say their length or stream it;
- uploads: a client address may send UPLOAD_BUDGET_BYTES in UPLOAD_WINDOW_S (then 429), so a
  burst cannot fill the disk before the cache sweeper comes round;
- API names: ``/call/<name>`` answers only the public API (the tabs' ``api_name``s);
  ``/run``, which skips the queue, only the page's own calls: ``/run/predict`` with a session
  and the index of one of its quick helpers (the queued handlers are closed there by
  ``api_open=False``), MAX_HELPERS_PER_CLIENT at once per client address (then 429);
- the queue: a session may have MAX_JOBS_PER_SESSION sampling runs waiting or running, a client
  address MAX_JOBS_PER_CLIENT of them and MAX_EVENTS_PER_CLIENT events of any kind, so one
  caller cannot take the queue (QUEUE_SIZE places) from everyone else;
- inputs Gradio itself refuses (a wrong number, a value not among a dropdown's choices) are
  worded as the app's refusals, a short clean excerpt of the value at most, and so is a JSON
  ``true`` or ``false`` for a number (which Gradio would take as 1 or 0).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from .errors import InputError, clean_excerpt, refused, shorten
from .limits import (
    MAX_EVENTS_PER_CLIENT,
    MAX_HELPERS_PER_CLIENT,
    MAX_JOBS_PER_CLIENT,
    MAX_JOBS_PER_SESSION,
    MAX_REQUEST_BYTES,
    MAX_TEXT,
    MAX_UPLOAD_REQUEST_BYTES,
    SAMPLING_QUEUE,
    UPLOAD_BUDGET_BYTES,
    UPLOAD_WINDOW_S,
)
from .sessions import Sessions, busy, client_address

log = logging.getLogger("sprite_studio")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
API = "/gradio_api"
UPLOADS = (f"{API}/upload", f"{API}/component_server")  # the routes that take files
HELPERS = f"{API}/run/predict"  # where the page calls its quick helpers, by index


def public_api(demo: gr.Blocks) -> list[str]:
    """The API names anyone may call: the events the tabs made public (see docs/app.md)."""
    return sorted(f.api_name for f in demo.fns.values() if f.api_visibility == "public")


def page_helpers(demo: gr.Blocks) -> set[int]:
    """The indexes of the page's quick, unqueued helpers that run on the server: what the page
    may call through ``/run/predict`` (it never calls them by name)."""
    return {i for i, f in demo.fns.items() if not f.queue and f.fn is not None}


class UploadBudget:
    """The bytes each client address has uploaded in the last ``window_s`` seconds."""

    def __init__(self, budget: int = UPLOAD_BUDGET_BYTES, window_s: float = UPLOAD_WINDOW_S):
        self.budget, self.window_s = budget, window_s
        self._sent: dict[str, deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def spend(self, client: str, size: int) -> str | None:
        """Count an upload of ``size`` bytes, or say why it is over the budget."""
        now = time.monotonic()
        with self._lock:
            for key in list(self._sent):  # forget what left the window, and idle clients
                sent = self._sent[key]
                while sent and now - sent[0][0] > self.window_s:
                    sent.popleft()
                if not sent:
                    del self._sent[key]
            sent = self._sent.setdefault(client, deque())
            total = sum(bytes_sent for _, bytes_sent in sent)
            if total + size > self.budget:
                return (
                    f"Your address has uploaded {total / 2**20:.1f} MB in the last "
                    f"{self.window_s / 60:.0f} minutes, near the limit of "
                    f"{self.budget / 2**20:.0f} MB. Try again later."
                )
            sent.append((now, size))
            return None


class RequestGate:
    """ASGI middleware: request bodies within their bound, API names the app answers, the
    page's quick helpers called as the page calls them, and an upload budget per client
    address."""

    def __init__(self, app: Callable, demo: gr.Blocks) -> None:
        self.app, self.demo = app, demo
        self.uploads = UploadBudget()
        self._helpers: Counter[str] = Counter()  # helper calls running, per client address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/")
        limit = MAX_UPLOAD_REQUEST_BYTES if path.startswith(UPLOADS) else MAX_REQUEST_BYTES
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._unknown_name(scope["method"], path)
        if refusal:
            return await _refuse(scope, send, 404, refusal)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _refuse(scope, send, 413, _too_large(limit))
        helper = scope["method"] == "POST" and path == HELPERS
        if not helper and (length is not None or scope["method"] in ("GET", "HEAD", "OPTIONS")):
            if path == UPLOADS[0] and (over := self._spend(scope, headers, int(length or 0))):
                return await _refuse(scope, send, 429, over)
            return await self.app(scope, receive, send)
        # Read the body here, within the bound (a chunked one, or a helper call to look into).
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await _refuse(scope, send, 413, _too_large(limit))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if path == UPLOADS[0] and (over := self._spend(scope, headers, size)):
            return await _refuse(scope, send, 429, over)

        async def replay() -> MutableMapping[str, Any]:
            nonlocal body
            message, body = {"type": "http.request", "body": body, "more_body": False}, b""
            return message

        if not helper:
            return await self.app(scope, replay, send)
        if not self._is_page_call(body):
            return await _refuse(scope, send, 404, self._not_the_api("/run/predict"))
        client = client_address((scope.get("client") or (None,))[0], headers)
        if self._helpers[client] >= MAX_HELPERS_PER_CLIENT:
            return await _refuse(scope, send, 429, _too_many(MAX_HELPERS_PER_CLIENT))
        self._helpers[client] += 1
        try:
            return await self.app(scope, replay, send)
        finally:
            self._helpers[client] -= 1
            if not self._helpers[client]:
                del self._helpers[client]

    def _spend(self, scope: Scope, headers: dict[str, str], size: int) -> str | None:
        host = (scope.get("client") or (None,))[0]
        return self.uploads.spend(client_address(host, headers), size)

    def _is_page_call(self, body: bytes) -> bool:
        """Whether ``body`` calls a quick helper as the page does: by index, with a session."""
        try:
            call = json.loads(body)
        except ValueError:
            return False
        if not isinstance(call, dict) or not call.get("session_hash"):
            return False
        index = call.get("fn_index")
        return type(index) is int and index in page_helpers(self.demo)

    def _unknown_name(self, method: str, path: str) -> str | None:
        if method != "POST":
            return None
        for prefix, known in (
            (f"{API}/call/v2/", public_api(self.demo)),
            (f"{API}/call/", public_api(self.demo)),
            (f"{API}/run/", ["predict"]),  # the page calls its helpers by index only
            (f"{API}/api/", []),  # Gradio's older name for /run, which the page never uses
        ):
            if path.startswith(prefix):
                name = path[len(prefix) :].split("/")[0]
                if name in known or (prefix.endswith("/call/") and name == "v2"):
                    return None
                return self._not_the_api("/" + name)
        return None

    def _not_the_api(self, name: str) -> str:
        api = ", ".join(f"/{n}" for n in public_api(self.demo))
        return (
            f"No API endpoint {clean_excerpt(name)} here. The API: {api}; call it with "
            "gradio_client, or POST to /gradio_api/call/<name>."
        )


def middleware(demo: gr.Blocks) -> list[Middleware]:
    """The gate, for ``demo.launch(app_kwargs={"middleware": ...})``."""
    return [Middleware(RequestGate, demo=demo)]


def _too_large(limit: int) -> str:
    return f"The request is larger than {limit:,} bytes, the most this app takes."


def _too_many(limit: int) -> str:
    return (
        f"Your address already has {limit} requests waiting or running, the most allowed at "
        "once. Wait for some to finish."
    )


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    log.info("refused %s %s: %s", scope["method"], scope["path"][:80], message)
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def admit_to_queue(demo: gr.Blocks, sessions: Sessions) -> None:
    """Check every event as it asks to join ``demo``'s queue, however it came (the page,
    gradio_client, ``/call``): a refusal is an HTTP error with the reason (400; 422 for
    gradio_client, which shows only that one's message), and one log line."""
    queue = demo._queue  # Gradio has no public hook at the queue's door
    push = queue.push

    async def admitted(body: Any, request: Any, username: str | None) -> tuple:
        fn = demo.fns.get(body.fn_index) if body.fn_index is not None else None
        client = client_address(getattr(request.client, "host", None), request.headers)
        refusal = fn and _over_limits(queue, fn, body.session_hash, client)
        if refusal:
            log.info("refused %s from %s: %s", fn.api_name, client, refusal)
            if request.headers.get("x-gradio-user") == "api":  # gradio_client shows a 422's only
                detail = {"__type__": "validate", "is_valid": False, "message": refusal}
                return False, [{**detail, "parameter_name": "queue"}], "validator_error"
            return False, refusal, "error"  # a 400 whose detail the page shows
        if body.session_hash:
            sessions.note_client(body.session_hash, client)
        return await push(body, request, username)

    queue.push = admitted


def _over_limits(queue: Any, fn: Any, session: str | None, client: str) -> str | None:
    """Why an event of ``fn`` from ``session`` at ``client`` may not join, or None."""
    waiting = list(queue.event_ids_to_events.values())  # waiting or running, until done
    ours = [e for e in waiting if _client_of_event(e) == client]
    if len(ours) >= MAX_EVENTS_PER_CLIENT:
        return _too_many(MAX_EVENTS_PER_CLIENT)
    if fn.concurrency_id != SAMPLING_QUEUE:
        return None
    runs = [e for e in waiting if e.fn.concurrency_id == SAMPLING_QUEUE]
    if session and sum(e.session_hash == session for e in runs) >= MAX_JOBS_PER_SESSION:
        return busy().message
    if sum(e in ours for e in runs) >= MAX_JOBS_PER_CLIENT:
        return busy(by_address=True).message
    return None


def _client_of_event(event: Any) -> str | None:
    request = getattr(event, "request", None)
    if request is None:
        return None
    return client_address(getattr(request.client, "host", None), request.headers)


def tidy_input_errors(demo: gr.Blocks) -> None:
    """Gradio's own refusals of an input (a wrong number of inputs, a value not among a
    dropdown's choices) as the app's: an InputError with the first line of the reason cut to a
    clean excerpt, one log line, no traceback. Gradio's words echo the whole value otherwise.
    A JSON ``true`` or ``false`` for a number is refused too: Gradio would take it as 1 or 0."""
    preprocess = demo.preprocess_data

    async def tidied(block_fn: Any, inputs: list[Any], state: Any, explicit_call: bool = False):
        try:
            for block, value in zip(block_fn.inputs, inputs, strict=False):
                if isinstance(value, bool) and isinstance(block, (gr.Number, gr.Slider)):
                    raise _not_a_number(block, value)
            return await preprocess(block_fn, inputs, state, explicit_call)
        except InputError as err:  # the app's own check of an input (the Edit canvas's)
            log.info("refused %s: %s", block_fn.api_name, err.message)
            raise
        except (gr.Error, ValueError, TypeError) as err:
            reason = str(getattr(err, "message", err)).strip()
            choice = re.fullmatch(r"Value: (.*) is not in the list of choices: (.*)", reason, re.S)
            if choice:  # the value can be huge: cut it, not the sentence
                value, choices = choice.groups()
                message = f"Value {shorten(value)} is not in the list of choices: {choices}"
            else:
                message = (reason.splitlines() or ["bad input"])[0]
            message = clean_excerpt(message, 2 * MAX_TEXT)
            log.info("refused %s: %s", block_fn.api_name, message)
            raise InputError(message) from None

    demo.preprocess_data = tidied


def _not_a_number(block: gr.Number | gr.Slider, value: bool) -> InputError:
    low, high = block.minimum, block.maximum
    allowed = "a number" if low is None or high is None else f"a number from {low:g} to {high:g}"
    return refused(block.label or "A number box", allowed, value)
