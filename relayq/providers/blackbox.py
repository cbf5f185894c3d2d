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

Images: Blackbox serves image generation through the same
``POST /chat/completions`` with an image model
(``blackboxai/black-forest-labs/flux-pro``...): the prompt as one user
message, and the answer a ``chat.completion`` whose message content is the
generated image's URL. Source: Blackbox's API reference, "Create Image",
https://docs.blackbox.ai/api-reference/image (its example answers
``"content": "https://replicate.delivery/.../tmpo0625f2a.webp"`` with zero
usage). So :meth:`BlackboxProvider.generate_images` makes one such call per
image asked (``n``), at once, and answers OpenAI's ``ImagesResponse`` of their
URLs. Only URLs come back: ``response_format: b64_json`` is refused with 400
(relayq does not fetch the vendor's URL), and the other image fields
(``size``, ``quality``, ``style``...) are not sent, since Blackbox documents
none of them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from relayq.providers.errors import InvalidRequest, MalformedResponse
from relayq.providers.openai import OpenAIProvider
from relayq.schemas.chat import ChatCompletionRequest, ChatMessage, Role
from relayq.schemas.images import ImageData, ImageGenerationRequest, ImagesResponse

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

    speaks_responses = False  # served over chat completions

    type_name = "blackbox"
    max_embedding_inputs = 0  # no embeddings served through this adapter
    serves_text_completions = False  # no legacy completions through this adapter
    serves_images = True  # through its chat completions, with an image model
    default_base_url = DEFAULT_BASE_URL
    lists_models = False

    async def generate_images(
        self, request: ImageGenerationRequest, *, model: str
    ) -> ImagesResponse:
        """One chat completion per image asked, at once; their URLs as OpenAI's answer."""
        if request.response_format == "b64_json":
            raise InvalidRequest(
                f"provider {self.name!r} (blackbox) answers image URLs only: "
                "'response_format' must be 'url' (or left out)",
                status_code=400,
            )
        calls = [
            asyncio.ensure_future(self._draw(request, model=model)) for _ in range(request.images())
        ]
        try:
            urls = await asyncio.gather(*calls)
        except BaseException:
            for call in calls:
                call.cancel()
            raise
        return ImagesResponse(created=int(time.time()), data=[ImageData(url=url) for url in urls])

    async def _draw(self, request: ImageGenerationRequest, *, model: str) -> str:
        """One image's URL: a chat completion of the prompt by the image model."""
        chat = ChatCompletionRequest(
            model=model, messages=[ChatMessage(role=Role.USER, content=request.prompt)]
        )
        completion = await self.complete(chat, model=model)
        content = completion.choices[0].message.content if completion.choices else None
        url = (content or "").strip()
        if not url.startswith(("https://", "http://")):
            raise MalformedResponse(f"{self.name}: the image model answered no image URL")
        return url

    def completion_payload(self, payload: Any) -> Any:
        return none_strings_to_null(payload)

    def chunk_payload(self, payload: Any) -> Any:
        return none_strings_to_null(payload)
