"""The ``blackbox`` adapter: Blackbox AI's OpenAI-compatible chat completions.

``POST https://api.blackbox.ai/chat/completions`` with a bearer key (Blackbox
documents ``https://enterprise.blackbox.ai`` for Enterprise plans; set it as
``base_url``). Models are named ``blackboxai/<vendor>/<model>``. The request
Blackbox documents is OpenAI's — system/user/assistant/tool messages with
string or content-part content, tools and tool_choice, response_format,
temperature, top_p, max_tokens, stop, seed, user — plus OpenRouter-style
routing extras (``models``, ``provider``, ``transforms``) and samplers
(``top_k``, ``min_p``, ``repetition_penalty``), which pass through as extra
fields. The canonical body is sent unchanged.

Answers are OpenAI's ``chat.completion`` with Blackbox's extras kept
(``provider``, ``choices[].provider_specific_fields``). Blackbox's documented
examples spell absent values as the string ``"None"`` (``"tool_calls":
"None"``, ``"completion_tokens_details": "None"``); in the fields where
OpenAI expects an object, a list or null, that string is read as null.

Not confirmed by Blackbox's documentation, so OpenAI's behaviour is kept:
whether ``max_completion_tokens`` and ``stream_options`` are honoured (both
are sent as given), the stream format (OpenAI's SSE chunks ending in
``data: [DONE]`` are expected), the error body shape (OpenAI's, with the
message read from any of the common shapes) and rate-limit headers
(``Retry-After`` and OpenAI's). :meth:`list_models` answers None, since no
model list endpoint is documented.
"""

from __future__ import annotations

from typing import Any

from relayq.providers.openai import OpenAIProvider

__all__ = ["DEFAULT_BASE_URL", "BlackboxProvider", "none_strings_to_null"]

DEFAULT_BASE_URL = "https://api.blackbox.ai"
_NULLABLE_FIELDS = frozenset(
    {
        "tool_calls",
        "function_call",
        "refusal",
        "logprobs",
        "system_fingerprint",
        "usage",
        "completion_tokens_details",
        "prompt_tokens_details",
        "accepted_prediction_tokens",
        "rejected_prediction_tokens",
        "audio_tokens",
        "reasoning_tokens",
        "cached_tokens",
    }
)
"""Fields where Blackbox's ``"None"`` stands for null."""


def none_strings_to_null(value: Any) -> Any:
    """``value`` with each ``"None"`` in a :data:`_NULLABLE_FIELDS` field made null, in place."""
    if isinstance(value, dict):
        for key, item in value.items():
            if item == "None" and key in _NULLABLE_FIELDS:
                value[key] = None
            else:
                none_strings_to_null(item)
    elif isinstance(value, list):
        for item in value:
            none_strings_to_null(item)
    return value


class BlackboxProvider(OpenAIProvider):
    """Blackbox AI's chat completions: OpenAI's wire format, ``"None"`` read as null."""

    type_name = "blackbox"
    max_embedding_inputs = 0  # no embeddings served through this adapter
    serves_text_completions = False  # no legacy completions through this adapter
    default_base_url = DEFAULT_BASE_URL
    lists_models = False

    def completion_payload(self, payload: Any) -> Any:
        return none_strings_to_null(payload)

    def chunk_payload(self, payload: Any) -> Any:
        return none_strings_to_null(payload)
