"""The ``grok`` adapter: xAI's Grok models on xAI's OpenAI-shaped API.

``POST https://api.x.ai/v1/chat/completions`` with a bearer key. xAI takes
OpenAI's request as it is — messages with image parts, tools and tool_choice,
response_format (JSON mode and ``json_schema``), temperature, top_p,
max_tokens / max_completion_tokens, stop, seed, user, ``reasoning_effort`` —
so the canonical body is sent unchanged, extras (such as the older Live
Search ``search_parameters``) included.

Answers are OpenAI's with xAI's additions kept: ``reasoning_content`` on the
message and on stream deltas of reasoning models, ``citations`` on the
completion, and usage details such as
``completion_tokens_details.reasoning_tokens`` and ``num_sources_used``.
Models are listed from ``GET /v1/models``.

Errors map by status as for OpenAI, with the message from xAI's body
(``{"code": ..., "error": "..."}`` or OpenAI's shape), and one documented
exception: xAI answers an incorrect API key with 400, which becomes
AuthenticationFailed so the provider is marked broken rather than the request.

Not carried: xAI rejects ``presence_penalty``, ``frequency_penalty`` and
``stop`` on its reasoning models, and ``reasoning_effort`` on models without
it; such requests are sent as asked and xAI's 400 comes back as
InvalidRequest.
"""

from __future__ import annotations

from relayq.providers.errors import AuthenticationFailed, InvalidRequest, ProviderError
from relayq.providers.openai import OpenAIProvider

__all__ = ["DEFAULT_BASE_URL", "GrokProvider"]

DEFAULT_BASE_URL = "https://api.x.ai/v1"


class GrokProvider(OpenAIProvider):
    """xAI's chat completions; reasoning content and usage details passed through."""

    speaks_responses = False  # served over chat completions

    type_name = "grok"
    max_embedding_inputs = 0  # no embeddings served through this adapter
    serves_text_completions = False  # no legacy completions through this adapter
    serves_images = False  # no image generation through this adapter
    default_base_url = DEFAULT_BASE_URL

    def adjust_error(self, error: ProviderError, payload: object) -> ProviderError:
        """xAI's 400 for an incorrect API key is an authentication failure."""
        if isinstance(error, InvalidRequest) and "api key" in error.message.lower():
            return AuthenticationFailed(error.message, status_code=error.status_code)
        return error
