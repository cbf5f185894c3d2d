"""Request input checked once, at the edge, before any route reads it.

FastAPI parses a JSON body with Python's ``json`` module and maps only its
syntax errors to a validation error. Everything else that module does with
a bad body reached the caller as a 400 without a code (bytes that are not
UTF-8, nesting deeper than its recursion, an integer of over 4,300 digits)
or went through to be stored: ``NaN``, integers beyond 64 bits and lone
surrogates, which the JSON columns then refused, as a 500. A NUL in the URL
(``%00`` in an id or a query parameter) reached PostgreSQL, which refuses it
in text, as a 500 too. Checking here, with the parser FastAPI uses, covers
every route, the ones to come as well, and answers with what is wrong and
the path to it as ``param``.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import APIError, dialect_error_body, invalid_json
from relayq.schemas.json_values import MAX_DEPTH, first_unkeepable, text_problem
from relayq.schemas.params import param_path

__all__ = ["RequestChecks", "body_problem", "is_json", "url_problem"]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this type as JSON (``application/json``, ``…+json``)."""
    if not content_type:
        return False  # FastAPI's strict content type: no header, no JSON
    kind = content_type.partition(";")[0].strip().lower()
    maintype, _, subtype = kind.partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


class _NotJSON(ValueError):
    """``NaN``, ``Infinity`` and ``-Infinity``: Python reads them, JSON has no such values."""


def _refuse_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON value (send null, or leave the field out)")


def body_problem(body: bytes) -> APIError | None:
    """Why a JSON request body cannot be taken, as the error to answer; None if it can."""
    try:
        # utf-8-sig: a byte order mark is ignored, as FastAPI's parser does (RFC 8259 allows it).
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return invalid_json(
            f"it is not valid UTF-8: byte 0x{body[exc.start]:02x} at position {exc.start}"
        )
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        return invalid_json(f"it is nested more than {MAX_DEPTH} levels deep")
    except ValueError as exc:  # JSONDecodeError, _NotJSON, an integer of over 4,300 digits
        if "integer string conversion" in str(exc):
            return invalid_json(f"it has an integer of over {sys.get_int_max_str_digits()} digits")
        return invalid_json(str(exc))
    found = first_unkeepable(value)
    if found is None:
        return None
    if found.too_deep:
        return invalid_json(found.reason, param=param_path(found.path[:1]))
    param = param_path(found.path)
    where = f"'{param}'" if param is not None else "request body"
    return APIError(400, f"Invalid {where}: {found.reason}.", code="invalid_value", param=param)


def url_problem(path: str, query: bytes) -> APIError | None:
    """Why a request's path (decoded) or query string cannot be taken; None if they can."""
    problem = text_problem(path)
    if problem is not None:
        return APIError(400, f"Invalid URL path: it {problem}.", code="invalid_value")
    if b"%00" not in query:  # a NUL in a query string can only come percent-encoded
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        for text in (name, value):
            problem = text_problem(text)
            if problem is not None:
                shown = name.encode("unicode_escape").decode()[:100]
                return APIError(
                    400, f"Invalid '{shown}': it {problem}.", code="invalid_value", param=shown
                )
    return None


class RequestChecks:
    """Answers 400 for what :func:`url_problem` or :func:`body_problem` refuses.

    A JSON body is read here (whole, as FastAPI would; a size limit outside
    this middleware bounds it) and handed on unchanged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = url_problem(scope["path"], scope["query_string"])
        if problem is not None:
            await _answer(scope, send, problem)
            return
        headers = dict(scope["headers"])
        if scope["method"] not in _BODY_METHODS or not is_json(
            headers.get(b"content-type", b"").decode("latin-1")
        ):
            await self.app(scope, receive, send)
            return
        body, final = await _read(receive)
        problem = body_problem(body) if body else None
        if problem is not None:
            await _answer(scope, send, problem)
            return
        await self.app(scope, _replay(body, final, receive), send)


async def _read(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole body, and the message that ended it when it was not a body part."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message  # the client went away mid-body
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _replay(body: bytes, final: Message | None, receive: Receive) -> Receive:
    """A receive that gives the body once, then whatever the connection says next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if final is not None:
                return final
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _answer(scope: Scope, send: Send, error: APIError) -> None:
    body = dialect_error_body(scope, 400, error.message, code=error.code, param=error.param)
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
