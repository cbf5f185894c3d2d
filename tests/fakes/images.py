"""OpenAI's image generation as the fakes serve it (``POST /v1/images/generations``).

Modelled on OpenAI's API reference, "Create image"
(https://platform.openai.com/docs/api-reference/images/create) and its
documented answers (tests/fixtures/openai/): a GPT image model
(``gpt-image-*``) answers every image as ``b64_json`` with ``usage`` in
input/output tokens and the ``background``, ``output_format``, ``quality`` and
``size`` it used, and refuses ``response_format`` with 400
``unknown_parameter`` (as OpenAI does); a DALL·E model answers a ``url``
(its default) or ``b64_json`` as ``response_format`` says, no usage, and
DALL·E 3 a ``revised_prompt`` and only ``n=1``. Errors are OpenAI's
``{"error": {message, type, param, code}}``.
"""

from __future__ import annotations

import base64
import time
from typing import Any

__all__ = ["ONE_PIXEL_PNG", "images_problem", "images_response"]

ONE_PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
"""The image every fake draws: one pixel, a valid PNG."""

_GPT_IMAGE_TOKENS = 272
"""Output tokens of a low-quality square GPT image (OpenAI's image-generation guide)."""


def _gpt_image(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


def images_problem(body: Any, *, model: str) -> tuple[str, str, str] | None:
    """Why OpenAI would refuse ``body`` drawn by ``model``: (message, param, code)."""
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
        return "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
    if _gpt_image(model) and "response_format" in body:
        return "Unknown parameter: 'response_format'.", "response_format", "unknown_parameter"
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= 10:
        return f"{n} is not a valid value for 'n': 1 to 10.", "n", "invalid_value"
    if model == "dall-e-3" and n != 1:
        return "You must provide n=1 for this model.", "n", "invalid_value"
    return None


def images_response(body: dict[str, Any], *, model: str, url_base: str) -> dict[str, Any]:
    """The ``ImagesResponse`` ``model`` answers to ``body`` (which :func:`images_problem`
    passed); a DALL·E URL is ``{url_base}/{index}.png``."""
    n = int(body.get("n", 1))
    encoded = base64.b64encode(ONE_PIXEL_PNG).decode("ascii")
    answer: dict[str, Any] = {"created": int(time.time())}
    if _gpt_image(model):
        answer["data"] = [{"b64_json": encoded} for _ in range(n)]
        words = len(body["prompt"].split())
        output = _GPT_IMAGE_TOKENS * n
        answer["background"] = body.get("background", "opaque")
        answer["output_format"] = body.get("output_format", "png")
        answer["quality"] = body.get("quality", "low")
        answer["size"] = body.get("size", "1024x1024")
        answer["usage"] = {
            "total_tokens": words + output,
            "input_tokens": words,
            "output_tokens": output,
            "input_tokens_details": {"text_tokens": words, "image_tokens": 0},
        }
        return answer
    as_url = body.get("response_format", "url") == "url"
    items = [
        {"url": f"{url_base}/{index}.png"} if as_url else {"b64_json": encoded}
        for index in range(n)
    ]
    if model == "dall-e-3":
        for item in items:
            item["revised_prompt"] = f"A detailed rendering of {body['prompt']}"
    answer["data"] = items
    return answer
