"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code", "request_id"}}``.

Clients built for OpenAI (its SDK raises by status code) understand these,
and every message says what is wrong and where. ``request_id`` is the
request's id, the one its ``x-request-id`` header carries and its log lines
name, so an error pasted into a support ticket leads to its lines (OpenAI's
SDKs read the fields they know and keep the rest in the exception's ``body``).
This module alone maps errors to HTTP: routes raise :class:`APIError` for
what they find wrong themselves and let relayq's own exceptions (an unknown
model, a reused idempotency key, a refused webhook URL, a key over its
limits or budget, a queue that did not take a sync call, a route whose every
deployment is drained, an admin's refused change to a key) propagate to the
handlers installed here.

A route may speak another dialect: the routes of Anthropic's Messages API
(``route_class=AnthropicErrorsRoute``) answer the same errors, status and
headers in Anthropic's shape, ``{"type": "error", "error": {"type",
"message"}, "request_id"}`` (:func:`anthropic_error_body`), so Anthropic's SDK
reads them.
Errors answered before a route is matched (an unknown URL, a body refused by
``api/request_checks.py`` or ``api/limits.py``) take the dialect of the API
their path belongs to (:func:`dialect_of`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from api.observability import REQUEST_ID_HEADER, SECURITY_HEADERS, request_id_of
from relayq.intake.intake import BrokerUnavailable, KeyLimited, KindNotServed, OverBudget
from relayq.resilience.key_limits import KeyLimit
from relayq.routing.router import RouteUnavailable, UnknownModel
from relayq.schemas.destinations import WebhookURLRefused
from relayq.schemas.params import param_path
from relayq.store.jobs import IdempotencyConflict
from relayq.store.key_admin import KeyChangeRefused, KeyNotFound, KeyRevoked

__all__ = [
    "ANTHROPIC_ERROR_RESPONSES",
    "ERROR_RESPONSES",
    "APIError",
    "AnthropicErrorBody",
    "AnthropicErrorsRoute",
    "ErrorBody",
    "ErrorDialect",
    "anthropic_error_body",
    "anthropic_error_type",
    "dialect_error_body",
    "dialect_of",
    "error_body",
    "file_not_found",
    "install_error_handlers",
    "invalid_json",
    "job_not_found",
]

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None
    request_id: str | None
    """The request's id, as in its ``x-request-id`` header (None only outside the API's
    request middleware)."""


class ErrorBody(BaseModel):
    """Every error answer: OpenAI's shape."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Invalid request: the message and `param` say what and where.",
    401: "Missing, malformed, unknown, expired or revoked API key or token.",
    403: "The key lacks the scope this route needs, or may not use the model asked for.",
    404: "No such object for this key (job, batch, file, key...), or an unknown model.",
    409: "Idempotency-Key reused with another body, a job or batch that cannot be "
    "cancelled, or a change to a revoked key.",
    413: "Request body over the configured limit.",
    429: "Over a rate limit, or over the key's budget (`insufficient_quota`).",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in _DESCRIPTIONS.items()
}

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorBody(BaseModel):
    """Every error answer of an Anthropic-dialect route: Anthropic's shape."""

    type: Literal["error"] = "error"
    error: AnthropicErrorDetail


ANTHROPIC_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": AnthropicErrorBody, "description": description}
    for status, description in _DESCRIPTIONS.items()
}


class ErrorDialect(str, Enum):
    """The shape a route's errors are written in."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class AnthropicErrorsRoute(APIRoute):
    """A route whose errors are answered in Anthropic's shape (a router's ``route_class``)."""

    error_dialect = ErrorDialect.ANTHROPIC


class APIError(Exception):
    """An error answered to the caller as-is."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


def error_body(
    status_code: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    request_id: str | None,
) -> dict[str, Any]:
    """The answer's body; ``request_id``: :func:`api.observability.request_id_of`'s."""
    kind = _TYPES.get(
        status_code, "server_error" if status_code >= 500 else "invalid_request_error"
    )
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": code,
            "request_id": request_id,
        }
    }


def anthropic_error_type(status_code: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    return _ANTHROPIC_TYPES.get(
        status_code, "api_error" if status_code >= 500 else "invalid_request_error"
    )


def anthropic_error_body(
    status_code: int, message: str, *, request_id: str | None
) -> dict[str, Any]:
    """Anthropic's error shape, with the request's id beside the error as Anthropic's API
    gives it."""
    return {
        "type": "error",
        "error": {"type": anthropic_error_type(status_code), "message": message},
        "request_id": request_id,
    }


_ANTHROPIC_PREFIX = "/v1/messages"
"""Anthropic's Messages API and Message Batches: every path under it speaks Anthropic's
dialect, routed or not."""


def dialect_of(scope: Scope) -> ErrorDialect:
    """The dialect of the route ``scope`` matched; before a route is matched (the body
    checks) or when none is, the dialect of the API its path belongs to."""
    dialect = getattr(scope.get("route"), "error_dialect", None)
    if isinstance(dialect, ErrorDialect):
        return dialect
    path = str(scope.get("path", ""))
    if path == _ANTHROPIC_PREFIX or path.startswith(_ANTHROPIC_PREFIX + "/"):
        return ErrorDialect.ANTHROPIC
    return ErrorDialect.OPENAI


def _dialect(request: Request) -> ErrorDialect:
    return dialect_of(request.scope)


def dialect_error_body(
    scope: Scope,
    status_code: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """An error body in the dialect of ``scope``'s API, with its request id: for the
    middleware that answers before any route runs."""
    request_id = request_id_of(scope)
    if dialect_of(scope) is ErrorDialect.ANTHROPIC:
        return anthropic_error_body(status_code, message, request_id=request_id)
    return error_body(status_code, message, code=code, param=param, request_id=request_id)


def _response(request: Request, exc: APIError) -> JSONResponse:
    request_id = request_id_of(request.scope)
    if _dialect(request) is ErrorDialect.ANTHROPIC:
        body = anthropic_error_body(exc.status_code, exc.message, request_id=request_id)
    else:
        body = error_body(
            exc.status_code, exc.message, code=exc.code, param=exc.param, request_id=request_id
        )
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def invalid_json(detail: str, *, param: str | None = None) -> APIError:
    """A body that is not JSON relayq reads; ``detail`` says why, and where if known."""
    return APIError(
        400,
        f"We could not parse the JSON body of your request ({detail}). "
        "Send a valid JSON object with Content-Type: application/json.",
        code="invalid_json",
        param=param,
    )


def job_not_found(job_id: str) -> APIError:
    """No job ``job_id`` for the caller's key (another key's job is not found either)."""
    return APIError(404, f"No job found with id '{job_id}'.", code="job_not_found", param="id")


def file_not_found(file_id: str, *, param: str = "file_id") -> APIError:
    """No file ``file_id`` for the caller's key; ``param``: where the request names it."""
    return APIError(404, f"No such File object: {file_id}", code="file_not_found", param=param)


def validation_error(errors: Sequence[Any]) -> APIError:
    """The first validation error as a 400 that names the offending field."""
    first = errors[0]
    kind, loc, msg = first.get("type", ""), first.get("loc", ()), first.get("msg", "")
    param = param_path(loc)
    more = f" ({len(errors) - 1} more problem(s) in the request)" if len(errors) > 1 else ""
    if kind == "json_invalid":
        return invalid_json(first.get("ctx", {}).get("error", msg))
    if param is None and kind in {"model_attributes_type", "dict_type", "missing"}:
        return APIError(
            400,
            "The request body must be a JSON object (send Content-Type: application/json).",
            code="invalid_body",
        )
    if kind == "invalid_job_kind":
        return APIError(400, f"Invalid 'kind': {msg}.", code="invalid_value", param="kind")
    if kind == "missing":
        return APIError(
            400,
            f"Missing required parameter: '{param}'.{more}",
            code="missing_required_parameter",
            param=param,
        )
    if kind == "too_short" and isinstance(first.get("input"), list):
        minimum = first.get("ctx", {}).get("min_length", 1)
        return APIError(
            400,
            f"Invalid '{param}': empty array. Expected an array with minimum length "
            f"{minimum}, but got an empty array instead.{more}",
            code="empty_array",
            param=param,
        )
    if kind == "value_error":  # our own validators' words, without pydantic's "Value error, "
        msg = str(first.get("ctx", {}).get("error", msg))
    return APIError(400, f"Invalid '{param}': {msg}.{more}", code="invalid_value", param=param)


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return _response(request, exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _response(request, validation_error(exc.errors()))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"Unknown request URL: {request.method} {request.url.path}."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    # A 400 here comes from reading the body (a multipart upload without its
    # boundary, say): routes answer with APIError.
    code = {400: "invalid_body", 413: "request_too_large"}.get(exc.status_code)
    return _response(request, APIError(exc.status_code, message, code=code, headers=exc.headers))


async def _on_unknown_model(request: Request, exc: Exception) -> JSONResponse:
    """A 404 naming the model and listing the ones this key may use."""
    assert isinstance(exc, UnknownModel)
    known = ", ".join(exc.available) or "none"
    return _response(
        request,
        APIError(
            404,
            f"The model '{exc.model}' does not exist or you do not have access to it. "
            f"Available models: {known}.",
            code="model_not_found",
            param="model",
        ),
    )


async def _on_kind_not_served(request: Request, exc: Exception) -> JSONResponse:
    """A 400: the model exists, but none of its deployments serves what was asked."""
    assert isinstance(exc, KindNotServed)
    return _response(
        request,
        APIError(
            400,
            f"The model '{exc.model}' does not serve {exc.kind.value}: none of its "
            f"deployments is on a provider that does.",
            code="model_not_supported",
            param="model",
        ),
    )


async def _on_route_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A 503: every deployment of the model's route is drained by an operator."""
    assert isinstance(exc, RouteUnavailable)
    return _response(
        request,
        APIError(
            503,
            f"The model '{exc.model}' is unavailable: every deployment serving it is drained "
            f"({', '.join(exc.drained)}). Retry later.",
            code="route_unavailable",
            param="model",
        ),
    )


async def _on_idempotency_conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IdempotencyConflict)
    anew = "request" if exc.kind == "job" else exc.kind
    return _response(
        request,
        APIError(
            409,
            f"Idempotency-Key '{exc.idempotency_key}' was already used for {exc.kind} "
            f"'{exc.existing}' with a different request body. Use a new key for a new {anew}.",
            code="idempotency_key_reused",
            param="Idempotency-Key",
        ),
    )


async def _on_webhook_url_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WebhookURLRefused)
    return _response(
        request,
        APIError(
            400,
            f"Invalid '{exc.param}': {exc.reason}. Webhooks are sent only to publicly "
            "routable addresses.",
            code="webhook_destination_refused",
            param=exc.param,
        ),
    )


async def _on_key_not_found(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KeyNotFound)
    message = f"No API key found with id '{exc.key_id}'."
    return _response(request, APIError(404, message, code="key_not_found", param="key_id"))


async def _on_key_change_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KeyChangeRefused)
    status = 409 if isinstance(exc, KeyRevoked) else 400
    return _response(request, APIError(status, exc.message, code=exc.code, param=exc.param))


async def _on_broker_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A sync call whose message the queue did not take (no row stores it for later)."""
    return _response(
        request, APIError(503, f"The job queue is unavailable: {exc}.", code="overloaded")
    )


async def _on_key_limited(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KeyLimited)
    decision, limits = exc.decision, exc.limits
    if decision.limit is KeyLimit.TOKENS_PER_MINUTE:
        return _tokens_limited(request, exc)
    if decision.limit is KeyLimit.MAX_CONCURRENT_JOBS:
        message = (
            f"Too many unfinished jobs: this key may have {limits.max_concurrent_jobs} "
            "queued or running at once. Retry when one ends."
        )
        code, retry_after = "too_many_concurrent_jobs", 1.0
    else:
        message = (
            f"Rate limit reached: this key may make {limits.requests_per_minute} "
            "requests per minute."
        )
        code, retry_after = "rate_limit_exceeded", decision.retry_after or 1.0
    seconds = str(max(1, math.ceil(retry_after)))
    return _response(request, APIError(429, message, code=code, headers={"Retry-After": seconds}))


def _tokens_limited(request: Request, exc: KeyLimited) -> JSONResponse:
    """A key over its tokens per minute, in OpenAI's words, with its rate-limit headers."""
    limit = exc.limits.tokens_per_minute or 0
    used = exc.decision.tokens_used or 0
    wait = exc.decision.retry_after
    headers = {
        "x-ratelimit-limit-tokens": str(limit),
        "x-ratelimit-remaining-tokens": str(max(0, limit - used)),
    }
    if wait is None:  # the request alone is more than a window holds: waiting cannot help
        message = (
            f"Request too large for key {exc.key_id} on tokens per min (TPM): Limit {limit}, "
            f"Requested {exc.tokens}. The input or output tokens must be reduced in order "
            "to run successfully."
        )
    else:
        seconds = max(1, math.ceil(wait))
        headers["Retry-After"] = str(seconds)
        headers["x-ratelimit-reset-tokens"] = f"{seconds}s"
        message = (
            f"Rate limit reached for key {exc.key_id} on tokens per min (TPM): Limit {limit}, "
            f"Used {used}, Requested {exc.tokens}. Please try again in {seconds}s."
        )
    return _response(request, APIError(429, message, code="rate_limit_exceeded", headers=headers))


async def _on_over_budget(request: Request, exc: Exception) -> JSONResponse:
    """OpenAI's answer for a spent quota: 429, type and code ``insufficient_quota``
    (Anthropic's dialect has no such type: a ``rate_limit_error`` there)."""
    assert isinstance(exc, OverBudget)
    if _dialect(request) is ErrorDialect.ANTHROPIC:
        return _response(request, APIError(429, exc.describe(), code="insufficient_quota"))
    body = {
        "error": {
            "message": exc.describe(),
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
            "request_id": request_id_of(request.scope),
        }
    }
    return JSONResponse(body, status_code=429)


async def _on_database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unreachable: %s", exc)
    message = "The service cannot reach its database; retry shortly."
    return _response(
        request,
        APIError(503, message, code="database_unavailable", headers={"Retry-After": "5"}),
    )


async def _on_pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
    log.warning("no database connection free: %s", exc)
    message = "The service is overloaded (no database connection free); retry shortly."
    return _response(
        request, APIError(503, message, code="overloaded", headers={"Retry-After": "2"})
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A 500. Starlette answers it outside every middleware, the request observer's too,
    so the answer gets the request id's header and the security headers here."""
    log.exception("unhandled error", exc_info=exc)
    message = "The server had an error while processing your request."
    response = _response(request, APIError(500, message))
    for name, value in SECURITY_HEADERS:
        response.headers[name.decode()] = value.decode()
    request_id = request_id_of(request.scope)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    # Connection-level failures only (OperationalError: unreachable, lost, timed out).
    app.add_exception_handler(OperationalError, _on_database_down)
    # Every connection of the pool stayed busy for its whole timeout.
    app.add_exception_handler(PoolTimeout, _on_pool_exhausted)
    app.add_exception_handler(KeyLimited, _on_key_limited)
    app.add_exception_handler(OverBudget, _on_over_budget)
    app.add_exception_handler(UnknownModel, _on_unknown_model)
    app.add_exception_handler(RouteUnavailable, _on_route_unavailable)
    app.add_exception_handler(KindNotServed, _on_kind_not_served)
    app.add_exception_handler(IdempotencyConflict, _on_idempotency_conflict)
    app.add_exception_handler(WebhookURLRefused, _on_webhook_url_refused)
    app.add_exception_handler(BrokerUnavailable, _on_broker_unavailable)
    app.add_exception_handler(KeyNotFound, _on_key_not_found)
    app.add_exception_handler(KeyChangeRefused, _on_key_change_refused)
    app.add_exception_handler(Exception, _on_unexpected)
