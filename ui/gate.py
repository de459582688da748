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
  ``true`` or ``false`` for a number (which Gradio would take as 1 or 0);
- malformed calls, which Gradio answers with a bare 500 and a traceback or by echoing the whole
  body: a keyword ``/call/v2/<name>`` does not take or needs (422), a body of the wrong shape on
  any route (422), an event index that does not exist (400), a page helper or a component call
  given garbage (400);
- the client address of every POST, to which the sessions Gradio makes while serving it belong
  (``ui.sessions.SessionStore`` keeps one address from pushing out another's sessions).
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
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
from .sessions import Sessions, busy, calling_from, client_address, store_sessions_fairly

log = logging.getLogger("sprite_studio")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
API = "/gradio_api"
UPLOADS = (f"{API}/upload", f"{API}/component_server")  # the routes that take files
HELPERS = f"{API}/run/predict"  # where the page calls its quick helpers, by index
CALL_V2 = f"{API}/call/v2/"  # calls by keyword: {"label": "hero", "steps": 20}
SHORT_TEXT = 40  # characters of a caller's name for a thing (an argument) echoed back


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
    """ASGI middleware: request bodies within their bound, API names and keyword arguments the
    app answers, the page's quick helpers called as the page calls them, an upload budget per
    client address, and the client address of every POST for the sessions Gradio makes."""

    def __init__(self, app: Callable, demo: gr.Blocks) -> None:
        self.app, self.demo = app, demo
        self.uploads = UploadBudget()
        self._helpers: Counter[str] = Counter()  # helper calls running, per client address
        self._arguments: dict[str, tuple[list[str], list[str]]] = {}  # see _wrong_arguments

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = client_address((scope.get("client") or (None,))[0], headers)
        if scope["method"] != "POST":  # no session is made on any other method
            return await self._serve(scope, receive, send, headers, client)
        with calling_from(client):
            return await self._serve(scope, receive, send, headers, client)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], client: str
    ) -> None:
        path = scope["path"].rstrip("/")
        limit = MAX_UPLOAD_REQUEST_BYTES if path.startswith(UPLOADS) else MAX_REQUEST_BYTES
        refusal = self._unknown_name(scope["method"], path)
        if refusal:
            return await _refuse(scope, send, 404, refusal)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _refuse(scope, send, 413, _too_large(limit))
        helper = scope["method"] == "POST" and path == HELPERS
        keywords = scope["method"] == "POST" and path.startswith(CALL_V2)
        # A component's server function reads its form unchecked: its errors are refusals.
        app = self._component_call if path.startswith(UPLOADS[1]) else self.app
        if not (helper or keywords) and (
            length is not None or scope["method"] in ("GET", "HEAD", "OPTIONS")
        ):
            if path == UPLOADS[0] and (over := self.uploads.spend(client, int(length or 0))):
                return await _refuse(scope, send, 429, over)
            return await app(scope, receive, send)
        # Read the body here, within the bound (a chunked one, or a call to look into).
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
        if path == UPLOADS[0] and (over := self.uploads.spend(client, size)):
            return await _refuse(scope, send, 429, over)

        async def replay() -> MutableMapping[str, Any]:
            nonlocal body
            message, body = {"type": "http.request", "body": body, "more_body": False}, b""
            return message

        if keywords and (wrong := self._wrong_arguments(path, body)):
            return await _refuse(scope, send, 422, wrong)
        if not helper:
            return await app(scope, replay, send)
        if not self._is_page_call(body):
            return await _refuse(scope, send, 404, self._not_the_api("/run/predict"))
        if self._helpers[client] >= MAX_HELPERS_PER_CLIENT:
            return await _refuse(scope, send, 429, _too_many(MAX_HELPERS_PER_CLIENT))
        self._helpers[client] += 1
        try:
            return await self.app(scope, replay, _refusals_as_400(send))
        finally:
            self._helpers[client] -= 1
            if not self._helpers[client]:
                del self._helpers[client]

    async def _component_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/component_server``, with what its unchecked reading of the form raises (a missing
        field, an unknown component, a bad picture) answered as one refusal each."""
        started = False

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except (gr.Error, AttributeError, LookupError, TypeError, ValueError) as err:
            if started:
                raise
            reason = getattr(err, "message", None) or (
                f"The page never sends this component call ({type(err).__name__}: "
                f"{clean_excerpt(str(err), SHORT_TEXT)})."
            )
            await _refuse(scope, send, 400, clean_excerpt(reason, 2 * MAX_TEXT))

    def _wrong_arguments(self, path: str, body: bytes) -> str | None:
        """Why a ``/call/v2/<name>`` body names arguments ``name`` does not take or leaves out
        one it needs, or None (a body that is no JSON object is left to Gradio's own check)."""
        try:
            call = json.loads(body)
        except ValueError:
            return None
        name = "/" + path[len(CALL_V2) :].split("/")[0]
        if not self._arguments:
            for endpoint, info in self.demo.get_api_info()["named_endpoints"].items():
                params = info["parameters"]
                self._arguments[endpoint] = (
                    [p["parameter_name"] for p in params],
                    [p["parameter_name"] for p in params if not p.get("parameter_has_default")],
                )
        if not isinstance(call, dict) or name not in self._arguments:
            return None
        known, needed = self._arguments[name]
        unknown = [key for key in call if key not in known]
        missing = [key for key in needed if key not in call]
        if not unknown and not missing:
            return None
        head = (
            f"{name} takes no argument {clean_excerpt(repr(unknown[0]), SHORT_TEXT)}"
            if unknown
            else f"{name} needs the argument {missing[0]!r}"
        )
        return f"{head}; its arguments: {', '.join(known)}."

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


def app_kwargs(demo: gr.Blocks, sessions: Sessions) -> dict[str, Any]:
    """The gate, for ``demo.launch(app_kwargs=...)``: the middleware, a one-line refusal of
    a body of the wrong shape, and a session store fair between client addresses."""
    return {
        "middleware": [Middleware(RequestGate, demo=demo)],
        "exception_handlers": {RequestValidationError: _malformed},
        "lifespan": store_sessions_fairly(sessions),
    }


async def _malformed(request: Request, err: Exception) -> JSONResponse:
    """A body of the wrong shape (not JSON, a field missing or of the wrong type), said in one
    line with a short excerpt of the value: FastAPI's own answer echoes the whole body."""
    errors = err.errors() if isinstance(err, RequestValidationError) else []
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    got = f" (got {clean_excerpt(repr(first['input']), SHORT_TEXT)})" if "input" in first else ""
    reason = f"{where}: {first.get('msg', 'malformed')}{got}"
    if first.get("type") == "json_invalid":  # its place is a character offset, its input {}
        reason = "the body is not valid JSON"
    message = clean_excerpt(f"The request does not fit {request.url.path}: {reason}.", 2 * MAX_TEXT)
    log.info("refused %s %s: %s", request.method, clean_excerpt(request.url.path, 80), message)
    return JSONResponse({"error": message}, status_code=422)


def _refusals_as_400(send: Send) -> Send:
    """``send`` for a helper call, with Gradio's 500 for an error it raised as ``gr.Error`` (the
    app's refusals, and Gradio's input checks as tidied) turned into 400: the input was at
    fault. Any other 500, a fault of the server, stays."""
    held: MutableMapping[str, Any] | None = None

    async def sending(message: MutableMapping[str, Any]) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] == 500:
            held = message  # wait for the body, which says what kind of error it is
            return
        if held is not None and message["type"] == "http.response.body":
            await send({**held, "status": 400 if _is_refusal(message.get("body", b"")) else 500})
            held = None
        await send(message)

    return sending


def _is_refusal(body: bytes) -> bool:
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and "title" in answer  # only a gr.Error carries a title


def _too_large(limit: int) -> str:
    return f"The request is larger than {limit:,} bytes, the most this app takes."


def _too_many(limit: int) -> str:
    return (
        f"Your address already has {limit} requests waiting or running, the most allowed at "
        "once. Wait for some to finish."
    )


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    log.info("refused %s %s: %s", scope["method"], clean_excerpt(scope["path"], 80), message)
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
        if body.fn_index is not None and fn is None:  # Gradio would fail with a KeyError
            refusal = f"No event with index {clean_excerpt(str(body.fn_index), SHORT_TEXT)} here."
        else:
            refusal = fn and _over_limits(queue, fn, body.session_hash, client)
        if refusal:
            log.info("refused %s from %s: %s", getattr(fn, "api_name", "an event"), client, refusal)
            if request.headers.get("x-gradio-user") == "api":  # gradio_client shows a 422's only
                detail = {"__type__": "validate", "is_valid": False, "message": refusal}
                return False, [{**detail, "parameter_name": "queue"}], "validator_error"
            return False, refusal, "error"  # a 400 whose detail the page shows
        if body.session_hash:
            sessions.note_client(body.session_hash, client)
        answer = await push(body, request, username)
        if body.session_hash:  # a call without a session now has one of its own
            sessions.note_client(body.session_hash, client)
        return answer

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
