"""A wire-level fake of Blackbox AI's OpenAI-compatible chat completions API.

It serves ``POST /chat/completions`` at the root with a bearer key. The
``chat.completion`` it answers copies the shape of Blackbox's documented
example (tests/fixtures/blackbox/): an OpenRouter-style ``gen-`` id, a
``provider``, ``provider_specific_fields`` on the choice, and absent values
spelt as the string ``"None"``. Streams, errors and the 401 are OpenAI's,
since Blackbox documents none of them.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply

__all__ = ["FakeBlackbox"]


class FakeBlackbox(FakeOpenAI):
    """Blackbox's API; :attr:`base_url` is like ``https://api.blackbox.ai``."""

    def __init__(self, *, api_key: str | None = None, content: str = DEFAULT_CONTENT) -> None:
        super().__init__(api_key=api_key, content=content, models=())

    @property
    def base_url(self) -> str:
        return self.origin

    def routes(self) -> list[tuple[str, str]]:
        return [("POST", "/chat/completions"), ("GET", "/models")]

    def completion_body(self, body: dict[str, Any], content: str, reply: Reply) -> dict[str, Any]:
        answer = super().completion_body(body, content, reply)
        answer.pop("service_tier", None)
        answer["id"] = "gen-1757140020-fake"
        answer["model"] = str(body.get("model", "")).removeprefix("blackboxai/")
        answer["system_fingerprint"] = "None"
        answer["provider"] = "OpenAI"
        choice = answer["choices"][0]
        choice.pop("logprobs", None)
        message = choice["message"]
        message.pop("refusal", None)
        message.setdefault("tool_calls", "None")
        message["function_call"] = "None"
        choice["provider_specific_fields"] = {"native_finish_reason": choice["finish_reason"]}
        answer["usage"]["completion_tokens_details"] = {
            "accepted_prediction_tokens": "None",
            "audio_tokens": "None",
            "reasoning_tokens": 0,
            "rejected_prediction_tokens": "None",
        }
        return answer
