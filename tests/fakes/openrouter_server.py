"""A wire-level fake of OpenRouter's OpenAI-compatible API.

It serves ``POST /api/v1/chat/completions`` and ``GET /api/v1/models`` with a
bearer key, as OpenRouter's API reference shows (tests/fixtures/openrouter/):
answers carry the serving ``provider``; streams send ``: OPENROUTER
PROCESSING`` comment lines between events; errors are ``{"error": {"code":
<int>, "message", "metadata"}}`` (:func:`openrouter_error`), and an error
during generation arrives as a chunk with ``error`` beside a choice whose
``finish_reason`` is ``"error"`` (:func:`midstream_error`, for
``Reply(error_after=..., error=...)``).
"""

from __future__ import annotations

import time
from typing import Any

from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply

__all__ = ["FakeOpenRouter", "midstream_error", "openrouter_error"]


def openrouter_error(
    code: int, message: str, *, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """OpenRouter's error body."""
    error: dict[str, Any] = {"code": code, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    return {"error": error}


def midstream_error(
    message: str = "Provider disconnected unexpectedly", *, code: int | str = "server_error"
) -> dict[str, Any]:
    """The chunk OpenRouter streams when generation fails after it started."""
    return {
        "id": "gen-fake0001",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "openai/gpt-4o-mini",
        "provider": "OpenAI",
        "error": {"code": code, "message": message},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }


class FakeOpenRouter(FakeOpenAI):
    """OpenRouter's API; :attr:`base_url` is like ``https://openrouter.ai/api/v1``."""

    keepalive = "OPENROUTER PROCESSING"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        content: str = DEFAULT_CONTENT,
        models: tuple[str, ...] = ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4"),
    ) -> None:
        super().__init__(api_key=api_key, content=content, models=models)

    @property
    def base_url(self) -> str:
        return f"{self.origin}/api/v1"

    def routes(self) -> list[tuple[str, str]]:
        return [("POST", "/api/v1/chat/completions"), ("GET", "/api/v1/models")]

    def unauthorized_body(self, *, key_given: bool) -> dict[str, Any]:
        message = "User not found." if key_given else "No auth credentials found"
        return openrouter_error(401, message)

    def models_body(self) -> dict[str, Any]:
        data = [
            {
                "id": model,
                "canonical_slug": model,
                "name": model.replace("/", ": "),
                "created": 1721260800,
                "context_length": 128000,
                "pricing": {"prompt": "0.00000015", "completion": "0.0000006"},
            }
            for model in self.models
        ]
        return {"data": data}

    def completion_body(self, body: dict[str, Any], content: str, reply: Reply) -> dict[str, Any]:
        answer = super().completion_body(body, content, reply)
        answer.pop("service_tier", None)
        answer["id"] = "gen-fake0001"
        answer["provider"] = "OpenAI"
        answer["choices"][0]["native_finish_reason"] = answer["choices"][0]["finish_reason"]
        answer["usage"]["cost"] = 0.0000123
        return answer

    def stream_chunks(
        self, body: dict[str, Any], content: str, reply: Reply
    ) -> list[dict[str, Any]]:
        chunks = super().stream_chunks(body, content, reply)
        for chunk in chunks:
            chunk["id"] = "gen-fake0001"
            chunk["provider"] = "OpenAI"
        return chunks
