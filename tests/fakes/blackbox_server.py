"""A wire-level fake of Blackbox AI's OpenAI-compatible chat completions API.

It serves ``POST /chat/completions`` at the root with a bearer key. The
``chat.completion`` it answers copies the shape of Blackbox's documented
example (tests/fixtures/blackbox/): an OpenRouter-style ``gen-`` id, a
``provider``, ``provider_specific_fields`` on the choice, and absent values
spelt as the string ``"None"``. Streams, errors and the 401 are OpenAI's,
since Blackbox documents none of them.

An image model (:attr:`FakeBlackbox.image_models`) answers as Blackbox's
"Create Image" reference shows (tests/fixtures/blackbox/image_generation.json):
a ``chat.completion`` whose message content is the image's URL, with zero
usage and ``"None"`` for the absent details.
"""

from __future__ import annotations

import time
from typing import Any

from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply

__all__ = ["IMAGE_MODEL", "FakeBlackbox", "image_completion"]

IMAGE_MODEL = "blackboxai/black-forest-labs/flux-pro"
"""The image model of Blackbox's documented example."""


def image_completion(model: str, url: str) -> dict[str, Any]:
    """Blackbox's answer of an image model: the image's URL as the message's content."""
    return {
        "id": f"chatcmpl-{int(time.time())}",
        "created": int(time.time()),
        "model": f"{model.removeprefix('blackboxai/')}:1e237aa703bf",
        "object": "chat.completion",
        "system_fingerprint": "None",
        "choices": [
            {
                "finish_reason": "stop",
                "index": 0,
                "message": {
                    "content": url,
                    "role": "assistant",
                    "tool_calls": "None",
                    "function_call": "None",
                },
            }
        ],
        "usage": {
            "completion_tokens": 0,
            "prompt_tokens": 0,
            "total_tokens": 0,
            "completion_tokens_details": "None",
            "prompt_tokens_details": "None",
        },
    }


class FakeBlackbox(FakeOpenAI):
    """Blackbox's API; :attr:`base_url` is like ``https://api.blackbox.ai``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        content: str = DEFAULT_CONTENT,
        image_models: tuple[str, ...] = (IMAGE_MODEL,),
    ) -> None:
        super().__init__(api_key=api_key, content=content, models=())
        self.image_models = image_models
        self.images_drawn = 0

    @property
    def base_url(self) -> str:
        return self.origin

    def routes(self) -> list[tuple[str, str]]:
        return [("POST", "/chat/completions"), ("GET", "/models")]

    def completion_body(self, body: dict[str, Any], content: str, reply: Reply) -> dict[str, Any]:
        model = str(body.get("model", ""))
        if model in self.image_models:
            self.images_drawn += 1
            url = f"https://replicate.delivery/fake/{self.images_drawn}/out.webp"
            return image_completion(model, url)
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
