"""How a failure reaches a person: one message in the status line, never a bare "Error".

The messages share one wording: "<What> must be <what is allowed> (got <value>).", or "<What> is
empty: enter <what is allowed>." for an empty box, each a sentence with a capital and a full stop.
"""

from __future__ import annotations

import functools
import inspect
import logging
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from .limits import MAX_TEXT

log = logging.getLogger("sprite_studio")


class InputError(gr.Error):
    """A bad input: shown to the user, kept out of the server log (it is no fault of the server)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, print_exception=False)


def is_api_call(request: gr.Request | None) -> bool:
    """Whether the request comes from an API client rather than the page: gradio_client (which
    marks itself) or raw HTTP through ``/gradio_api/call/<name>``."""
    headers = getattr(request, "headers", None)
    if headers is not None and headers.get("x-gradio-user") == "api":
        return True
    return "/call/" in str(getattr(getattr(request, "url", None), "path", ""))


def clean_excerpt(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` as it may be echoed into a message or a log line: without control and format
    characters (escape codes, right-to-left overrides, which could disguise the message), and
    cut to ``limit`` characters, saying how long it was."""
    text = "".join(c for c in str(text) if not unicodedata.category(c).startswith("C"))
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def shorten(value: Any) -> str:
    """``repr(value)`` as :func:`clean_excerpt` cuts it, so a huge input is not echoed whole."""
    return clean_excerpt(repr(value))


def is_empty(value: Any) -> bool:
    """Whether a box was left empty (a cleared number box sends None, a text box "")."""
    return value is None or (isinstance(value, str) and not value.strip())


def refused(name: str, allowed: str, value: Any) -> InputError:
    """The error for ``value`` in the box called ``name``, which takes ``allowed``
    (e.g. "a whole number from 1 to 100")."""
    if is_empty(value):
        return InputError(f"{name} is empty: enter {allowed}.")
    return InputError(f"{name} must be {allowed} (got {shorten(value)}).")


def as_sentence(err: ValueError) -> str:
    """A message of the ``diffusion`` package ("eta must be ..., got 1.5") in the app's wording:
    capitalised, the value in brackets, a full stop."""
    head, sep, got = str(err).rpartition(", got ")
    text = f"{head} (got {got})" if sep else str(err)
    return text[:1].upper() + text[1:].rstrip(".") + "."


def article(word: str) -> str:
    """The article spoken before ``word``: "an item", "a hero"."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def unexpected_message(err: BaseException) -> str:
    return (
        f"Something went wrong on the server ({type(err).__name__}). Nothing was changed; "
        "try again, or with fewer steps or a smaller batch. The server log has the details."
    )


def logged(err: BaseException, name: str) -> str:
    """The message a person gets for ``err`` in handler ``name``, logged once: an InputError's
    own words, anything else "something went wrong" with its traceback in the server log."""
    if isinstance(err, InputError):
        log.info("%s refused: %s", name, err.message)
        return err.message
    log.exception("%s failed", name)
    return unexpected_message(err)


def refusing(fn: Callable) -> Callable:
    """An API-only handler (``gr.api``), whose every failure reaches the client as one
    message (an InputError), as :func:`guarded`'s do for API calls."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise InputError(logged(err, fn.__name__)) from None

    return call


def guarded(
    fn: Callable,
    outputs: dict[str, gr.components.Component],
    status: str | None = "status",
) -> Callable:
    """Wire a handler that yields or returns ``{output name: value}`` to Gradio components.

    Every exception ends as a message: an InputError as it is, anything else as "something went
    wrong" with the traceback in the server log. On the page the message goes to the ``status``
    output (and a toast), other outputs stay as they were, so no output is stamped "Error"; an
    API client gets it as a gr.Error. Returns a function whose outputs are
    ``list(outputs.values())``.
    """

    def to_components(values: dict[str, Any]) -> dict:
        unknown = set(values) - set(outputs)
        if unknown:
            raise KeyError(f"{fn.__name__} returned unknown outputs {sorted(unknown)}")
        return {outputs[name]: value for name, value in values.items()}

    def failure(err: BaseException, request: gr.Request | None) -> dict:
        message = logged(err, fn.__name__)
        if is_api_call(request) or status is None:
            raise InputError(message) from None
        gr.Warning(message)
        return to_components({status: f"⚠️ {message}"})

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
