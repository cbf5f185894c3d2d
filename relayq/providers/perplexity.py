"""The ``perplexity`` adapter: Perplexity's Sonar chat completions, grounded in web search.

``POST https://api.perplexity.ai/chat/completions`` with a bearer key, in
OpenAI's shape. The canonical request is carried as OpenAI's (messages with
image parts, tools and tool_choice, response_format ``json_schema`` — and
Perplexity's own ``regex`` — temperature, top_p, max_tokens, stop), with two
changes: ``max_completion_tokens`` is sent as ``max_tokens`` (the only name
Perplexity documents) and ``stream_options`` is not sent (Perplexity puts the
running usage on every chunk unasked).

Search options — ``search_domain_filter``, ``search_recency_filter``,
``search_mode``, ``return_images``, ``return_related_questions``,
``web_search_options``, ``disable_search`` and the rest — pass through from
the request's extra fields, over any defaults set in ``options.defaults``.
The answer's ``citations``, ``search_results``, ``images`` and
``related_questions`` (and usage extras such as ``search_context_size``,
``citation_tokens``, ``num_search_queries`` and ``cost``) are kept on the
``chat.completion`` and on each chunk.

Streams differ from OpenAI's in three ways, all normalised: chunks may say
``"object": "chat.completion"`` and the last one ``"chat.completion.done"``
(both become ``chat.completion.chunk``); older streams repeat the whole
message so far as ``choices[].message`` beside the ``delta`` (dropped, it
duplicates the deltas); and most models end the body without
``data: [DONE]``, so a stream whose last chunk carries a ``finish_reason`` is
complete, while one that ends before any does raises.

Not carried: ``seed``, ``user``, ``logit_bias`` and ``n`` are sent as given
but Perplexity documents no such fields, so they may be ignored or rejected.
:meth:`list_models` answers None: Perplexity publishes no model list.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from relayq.providers.openai import OpenAIProvider
from relayq.schemas.chat import ChatCompletionChunk, ChatCompletionRequest

__all__ = ["DEFAULT_BASE_URL", "PerplexityOptions", "PerplexityProvider"]

DEFAULT_BASE_URL = "https://api.perplexity.ai"
_CHUNK_OBJECTS = frozenset({"chat.completion", "chat.completion.chunk", "chat.completion.done"})


class PerplexityOptions(BaseModel):
    """``options`` of a ``perplexity`` provider."""

    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict)
    """Body fields sent with every call unless the request sets them, e.g.
    ``{"search_recency_filter": "week", "web_search_options": {"search_context_size": "high"}}``."""


def normalize_chunk(payload: Any) -> Any:
    """A Perplexity stream event as an OpenAI ``chat.completion.chunk`` object."""
    if not isinstance(payload, dict):
        return payload
    if payload.get("object") in _CHUNK_OBJECTS:
        payload["object"] = "chat.completion.chunk"
    choices = payload.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        if isinstance(choice, dict):
            choice.pop("message", None)
    return payload


class PerplexityProvider(OpenAIProvider):
    """Perplexity's chat completions, search options in, citations out."""

    speaks_responses = False  # served over chat completions

    type_name = "perplexity"
    max_embedding_inputs = 0  # no embeddings served through this adapter
    serves_text_completions = False  # no legacy completions through this adapter
    serves_images = False  # no image generation through this adapter
    options_model = PerplexityOptions
    default_base_url = DEFAULT_BASE_URL
    lists_models = False

    def request_body(
        self, request: ChatCompletionRequest, *, model: str, stream: bool
    ) -> dict[str, Any]:
        body = super().request_body(request, model=model, stream=stream)
        body.pop("stream_options", None)
        if "max_completion_tokens" in body:
            body.setdefault("max_tokens", body.pop("max_completion_tokens"))
        assert isinstance(self.options, PerplexityOptions)
        return {**self.options.defaults, **body}

    def chunk_payload(self, payload: Any) -> Any:
        return normalize_chunk(payload)

    def stream_complete(self, last: ChatCompletionChunk | None) -> bool:
        """Complete when the last chunk finished a choice (Perplexity may omit ``[DONE]``)."""
        return last is not None and any(c.finish_reason for c in last.choices)
