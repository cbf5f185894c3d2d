"""A wire-level fake of xAI's OpenAI-shaped API for Grok models.

It serves ``POST /v1/chat/completions`` and ``GET /v1/models`` with a bearer
key, answering as the examples in tests/fixtures/grok/ show: reasoning models
(``reasoning`` set) put ``reasoning_content`` on the message, or stream it as
``reasoning_content`` deltas before the answer; usage carries
``completion_tokens_details.reasoning_tokens`` and ``num_sources_used``.
Errors use xAI's ``{"code": ..., "error": "..."}`` body, and an incorrect key
answers 400, as xAI documents (a missing one 401).
"""

from __future__ import annotations

from typing import Any

from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply

__all__ = ["DEFAULT_REASONING", "FakeGrok", "xai_error"]

DEFAULT_REASONING = "The user greets me, so I greet them back."


def xai_error(
    message: str, *, code: str = "Client specified an invalid argument"
) -> dict[str, Any]:
    """xAI's error body."""
    return {"code": code, "error": message}


def _reasoning_usage(usage: dict[str, Any], reasoning_tokens: int) -> dict[str, Any]:
    usage["completion_tokens_details"] = {
        "reasoning_tokens": reasoning_tokens,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    }
    usage["prompt_tokens_details"] = {
        "text_tokens": usage["prompt_tokens"],
        "audio_tokens": 0,
        "image_tokens": 0,
        "cached_tokens": 0,
    }
    usage["num_sources_used"] = 0
    return usage


class FakeGrok(FakeOpenAI):
    """xAI's API; :attr:`base_url` is like ``https://api.x.ai/v1``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        content: str = DEFAULT_CONTENT,
        reasoning: str | None = DEFAULT_REASONING,
    ) -> None:
        super().__init__(api_key=api_key, content=content, models=("grok-4", "grok-3-mini"))
        self.reasoning = reasoning

    def unauthorized_status(self, *, key_given: bool) -> int:
        return 400 if key_given else 401

    def unauthorized_body(self, *, key_given: bool) -> dict[str, Any]:
        if key_given:
            return xai_error(
                "Incorrect API key provided: xa***ey. You can obtain an API key from "
                "https://console.x.ai."
            )
        return xai_error("No authorization header", code="Unauthenticated")

    def _reasoning_tokens(self) -> int:
        return len(self.reasoning.split()) if self.reasoning else 0

    def completion_body(self, body: dict[str, Any], content: str, reply: Reply) -> dict[str, Any]:
        answer = super().completion_body(body, content, reply)
        answer.pop("service_tier", None)
        if self.reasoning:
            answer["choices"][0]["message"]["reasoning_content"] = self.reasoning
        _reasoning_usage(answer["usage"], self._reasoning_tokens())
        return answer

    def stream_chunks(
        self, body: dict[str, Any], content: str, reply: Reply
    ) -> list[dict[str, Any]]:
        chunks = super().stream_chunks(body, content, reply)
        for chunk in chunks:
            if chunk.get("usage"):
                _reasoning_usage(chunk["usage"], self._reasoning_tokens())
        if not self.reasoning:
            return chunks
        template = chunks[1]
        thoughts = []
        for word in self.reasoning.split(" "):
            choice = {**template["choices"][0], "delta": {"reasoning_content": word + " "}}
            thoughts.append({**template, "choices": [choice]})
        return [chunks[0], *thoughts, *chunks[1:]]
