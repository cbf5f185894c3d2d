"""The provider error tree.

Adapters map every foreign failure (an HTTP status, a vendor error body, an
aiohttp exception) to one of these at the boundary, ``raise ... from exc``.
Execution, retries and (later) the breaker and fallback read only these types.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "InvalidRequest",
    "MalformedResponse",
    "ModelNotFound",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "error_for_status",
    "vendor_message",
]


class ProviderError(Exception):
    """A provider call that did not produce a completion."""

    code: str = "provider_error"
    retryable: bool = False
    """Whether the same call may succeed if tried again later."""
    provider_side: bool = True
    """Whether the failure is the provider's (counts against its health)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code

    def to_dict(self) -> dict[str, object]:
        """The error as stored on a job and an attempt."""
        return {"code": self.code, "message": self.message, "status_code": self.status_code}


class AuthenticationFailed(ProviderError):
    """The provider rejected our credentials (401/403)."""

    code = "provider_authentication_failed"


class InvalidRequest(ProviderError):
    """The provider rejected the request itself (400/422); retrying cannot help."""

    code = "invalid_request"
    provider_side = False


class ModelNotFound(ProviderError):
    """The upstream model does not exist at this provider (404)."""

    code = "model_not_found"


class RateLimited(ProviderError):
    """The provider asked us to slow down (429)."""

    code = "rate_limited"
    retryable = True
    provider_side = False

    def __init__(
        self, message: str, *, status_code: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "retry_after": self.retry_after}


class ProviderUnavailable(ProviderError):
    """The provider failed or is overloaded (5xx, 529)."""

    code = "provider_unavailable"
    retryable = True


class ProviderTimeout(ProviderError):
    """The provider did not answer in time."""

    code = "provider_timeout"
    retryable = True


class ProviderConnectionError(ProviderError):
    """The provider could not be reached."""

    code = "provider_connection_error"
    retryable = True


class MalformedResponse(ProviderError):
    """The provider answered with something that is not a valid completion."""

    code = "malformed_response"
    retryable = True


def error_for_status(
    status_code: int, message: str, *, retry_after: float | None = None
) -> ProviderError:
    """The error an upstream's HTTP ``status_code`` stands for.

    One mapping shared by every adapter (and the mock provider), so the same
    status means the same error type whichever vendor sent it. 408 and 409 are
    transient (vendors' own SDKs retry them); any other 4xx is the caller's
    fault; a status outside 4xx/5xx is no valid answer at all.
    """
    if status_code in (401, 403):
        return AuthenticationFailed(message, status_code=status_code)
    if status_code == 404:
        return ModelNotFound(message, status_code=status_code)
    if status_code == 408:
        return ProviderTimeout(message, status_code=status_code)
    if status_code == 429:
        return RateLimited(message, status_code=status_code, retry_after=retry_after)
    if status_code == 409 or status_code >= 500:
        return ProviderUnavailable(message, status_code=status_code)
    if status_code >= 400:
        return InvalidRequest(message, status_code=status_code)
    return MalformedResponse(message, status_code=status_code)


def vendor_message(payload: object) -> str | None:
    """The human message in a decoded error body, in the shapes vendors use.

    ``{"error": {"message": ...}}`` (OpenAI), ``{"error": "..."}``,
    ``{"message": ...}`` and ``{"detail": "..."}`` (FastAPI-based servers).
    """
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        payload = error
    elif isinstance(error, str) and error:
        return error
    for key in ("message", "detail"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    return None
