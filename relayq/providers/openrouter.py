"""The ``openrouter`` adapter: OpenRouter's router over many vendors' models.

``POST https://openrouter.ai/api/v1/chat/completions`` with a bearer key, in
OpenAI's shape; model ids name the vendor (``anthropic/claude-sonnet-4``).
The canonical request is sent unchanged — OpenRouter normalises OpenAI's
fields (messages with image parts, tools and tool_choice, response_format,
temperature, top_p, max_tokens / max_completion_tokens, stop, seed, user) for
each upstream — and OpenRouter's own extras pass through from the request's
extra fields, over any defaults in ``options.defaults``: ``provider`` (routing
preferences), ``models`` (a fallback list), ``transforms``, ``reasoning``,
``usage``, ``plugins``. Attribution headers ``HTTP-Referer`` and ``X-Title``
come from ``options.site_url`` and ``options.app_name``.

Answers are OpenAI's with OpenRouter's extras kept (``provider``, and
``reasoning`` / ``reasoning_details`` on messages and deltas). Streams may
carry ``: OPENROUTER PROCESSING`` comment lines while the upstream is slow;
the SSE decoder skips them. Models are listed from ``GET /models``.

Errors arrive as ``{"error": {"code": <int>, "message", "metadata"}}``, with
the HTTP status equal to ``code`` when the request failed before generation,
or inside a 200 body or as a stream chunk (``error`` beside ``choices`` whose
``finish_reason`` is ``"error"``) when it failed during it; all map by the
code as by a status. Two codes are read differently from other vendors':

- 402 (insufficient credits) → AuthenticationFailed: it is the account, not
  the request, that is at fault, the same call fails until someone pays, and
  other providers could serve it meanwhile — so it is non-retryable and
  counts against this provider, like a revoked key.
- 403 with moderation metadata (``reasons`` / ``flagged_input``) →
  InvalidRequest: the caller's input was flagged; any other 403 stays
  AuthenticationFailed.

Not carried: nothing of the canonical request is dropped; fields a routed
model cannot honour are ignored or rejected by OpenRouter itself.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from relayq.providers.errors import AuthenticationFailed, InvalidRequest, ProviderError
from relayq.providers.openai import OpenAIProvider
from relayq.schemas.chat import ChatCompletionRequest

__all__ = ["DEFAULT_BASE_URL", "OpenRouterOptions", "OpenRouterProvider"]

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
_MODERATION_KEYS = frozenset({"reasons", "flagged_input"})


class OpenRouterOptions(BaseModel):
    """``options`` of an ``openrouter`` provider."""

    model_config = ConfigDict(extra="forbid")

    site_url: str | None = None
    """Sent as ``HTTP-Referer``: the app's URL in OpenRouter's rankings."""
    app_name: str | None = None
    """Sent as ``X-Title``: the app's name in OpenRouter's rankings."""
    defaults: dict[str, Any] = Field(default_factory=dict)
    """Body fields sent with every call unless the request sets them, e.g.
    ``{"provider": {"sort": "throughput", "data_collection": "deny"}}``."""


def _error_object(payload: object) -> dict[str, Any]:
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}


class OpenRouterProvider(OpenAIProvider):
    """OpenRouter's chat completions with attribution and routing extras."""

    speaks_responses = False  # served over chat completions

    type_name = "openrouter"
    max_embedding_inputs = 0  # no embeddings served through this adapter
    serves_text_completions = False  # no legacy completions through this adapter
    serves_images = False  # no image generation through this adapter
    options_model = OpenRouterOptions
    default_base_url = DEFAULT_BASE_URL

    @property
    def router_options(self) -> OpenRouterOptions:
        assert isinstance(self.options, OpenRouterOptions)
        return self.options

    def vendor_headers(self) -> dict[str, str]:
        """OpenRouter's attribution headers, when configured."""
        options = self.router_options
        headers = {"HTTP-Referer": options.site_url, "X-Title": options.app_name}
        return {name: value for name, value in headers.items() if value}

    def request_body(
        self, request: ChatCompletionRequest, *, model: str, stream: bool
    ) -> dict[str, Any]:
        body = super().request_body(request, model=model, stream=stream)
        return {**self.router_options.defaults, **body}

    def adjust_error(self, error: ProviderError, payload: object) -> ProviderError:
        """402 is the account's fault; a 403 for flagged input is the request's."""
        fields = _error_object(payload)
        code = fields.get("code") if isinstance(fields.get("code"), int) else error.status_code
        if code == 402:
            return AuthenticationFailed(error.message, status_code=error.status_code)
        metadata = fields.get("metadata")
        if code == 403 and isinstance(metadata, dict) and _MODERATION_KEYS & metadata.keys():
            return InvalidRequest(error.message, status_code=error.status_code)
        return error
