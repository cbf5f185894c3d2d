"""A wire-level fake of Perplexity's Sonar chat completions API.

It serves ``POST /chat/completions`` at the root (Perplexity's base URL has
no ``/v1``) with a bearer key, answering as the recorded examples in
tests/fixtures/perplexity/ show: a ``chat.completion`` carrying
``citations``, ``search_results`` (and ``images`` / ``related_questions``
when the request asks for them) and usage with ``search_context_size``,
``num_search_queries`` and ``cost``; a stream whose every chunk carries the
running usage, the citations and the search results, whose last chunk says
``"object": "chat.completion.done"``, and which ends without
``data: [DONE]``.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply, error_body

__all__ = ["CITATIONS", "SEARCH_RESULTS", "FakePerplexity"]

CITATIONS = [
    "https://en.wikipedia.org/wiki/Greeting",
    "https://www.merriam-webster.com/dictionary/hello",
]
SEARCH_RESULTS = [
    {
        "title": "Greeting - Wikipedia",
        "url": CITATIONS[0],
        "date": "2025-03-02",
        "last_updated": "2025-06-01",
        "snippet": "A greeting is an act of communication...",
        "source": "web",
    },
    {
        "title": "Hello Definition & Meaning",
        "url": CITATIONS[1],
        "date": None,
        "last_updated": "2025-05-20",
        "snippet": "used as a greeting or in answering the telephone",
        "source": "web",
    },
]
IMAGES = [
    {
        "image_url": "https://upload.wikimedia.org/hello.png",
        "origin_url": CITATIONS[0],
        "height": 480,
        "width": 640,
    }
]
RELATED_QUESTIONS = ["What are greetings in other languages?", "Where does 'hello' come from?"]


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "search_context_size": "low",
        "num_search_queries": 1,
        "cost": {
            "input_tokens_cost": 0.00001,
            "output_tokens_cost": 0.00001,
            "request_cost": 0.005,
            "total_cost": 0.00502,
        },
    }


class FakePerplexity(FakeOpenAI):
    """Perplexity's API; :attr:`base_url` is like ``https://api.perplexity.ai``."""

    send_done = False

    def __init__(self, *, api_key: str | None = None, content: str = DEFAULT_CONTENT) -> None:
        super().__init__(api_key=api_key, content=content, models=())

    @property
    def base_url(self) -> str:
        return self.origin

    def routes(self) -> list[tuple[str, str]]:
        return [("POST", "/chat/completions"), ("GET", "/models")]

    def unauthorized_body(self, *, key_given: bool) -> dict[str, Any]:
        return {"error": {"message": "Invalid API key", "type": "invalid_api_key", "code": 401}}

    def _search_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {"citations": CITATIONS, "search_results": SEARCH_RESULTS}
        if body.get("return_images"):
            fields["images"] = IMAGES
        if body.get("return_related_questions"):
            fields["related_questions"] = RELATED_QUESTIONS
        return fields

    def completion_body(self, body: dict[str, Any], content: str, reply: Reply) -> dict[str, Any]:
        answer = super().completion_body(body, content, reply)
        usage = answer["usage"]
        for key in ("service_tier", "system_fingerprint"):
            answer.pop(key, None)
        answer["choices"][0]["message"].pop("refusal", None)
        answer["choices"][0].pop("logprobs", None)
        answer["usage"] = _usage(usage["prompt_tokens"], usage["completion_tokens"])
        return {**answer, **self._search_fields(body)}

    def stream_chunks(
        self, body: dict[str, Any], content: str, reply: Reply
    ) -> list[dict[str, Any]]:
        chunks = [c for c in super().stream_chunks(body, content, reply) if c["choices"]]
        if chunks[0]["choices"][0]["delta"].get("content") == "":
            chunks = chunks[1:]  # Perplexity's first chunk already carries text
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        search = self._search_fields(body)
        for produced, chunk in enumerate(chunks[:-1], start=1):
            chunk.pop("system_fingerprint", None)
            chunk["choices"][0].pop("logprobs", None)
            chunk["choices"][0]["delta"].pop("refusal", None)
            chunk["choices"][0]["delta"].setdefault("role", "assistant")
            chunk["usage"] = _usage(prompt_tokens, produced)
            chunk.update(search)
        last = chunks[-1]
        last.pop("system_fingerprint", None)
        last["object"] = "chat.completion.done"
        last["choices"] = [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": last["choices"][0]["finish_reason"],
            }
        ]
        last["usage"] = _usage(prompt_tokens, len(chunks) - 1)
        last.update(search)
        return chunks


def perplexity_error(message: str, *, code: int, type: str = "invalid_request") -> dict[str, Any]:
    """Perplexity's error body: OpenAI's shape with the status as ``code``."""
    body = error_body(message, type=type)
    body["error"]["code"] = code
    return body
