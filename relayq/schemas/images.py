"""OpenAI's image generation (``POST /v1/images/generations``): the request and the answer.

The request takes what OpenAI's Images API reference documents for
"Create image" (https://platform.openai.com/docs/api-reference/images/create,
as the official SDK 3.63 types it): ``prompt``; ``model``; ``n`` (1 to 10);
``size`` (``auto`` or ``{width}x{height}``), ``quality`` and ``style``;
``response_format`` (``url`` or ``b64_json``, for the retired DALL·E models:
the GPT image models always answer base64); ``output_format``,
``output_compression``, ``background``, ``moderation``, ``complexity``,
``frame_count`` and ``frame_duration_ms`` (GIF output) and ``svg`` (SVG
output) for the GPT image models; ``safety_identifier`` and ``user``. Values
are checked where OpenAI fixes them (the enumerations, the ranges); which
model takes which is left to the upstream, whose 400 passes through. Any
other field is kept in ``model_extra`` only so that an adapter's per-request
controls (the mock's ``mock``) can ride along: the API refuses every other
one, as OpenAI does an unknown parameter. Streaming (``stream``,
``partial_images``) is not carried: refused as unknown.

The answer is OpenAI's ``ImagesResponse``: ``created``, ``data`` (each image a
``url`` or ``b64_json``, with ``revised_prompt`` when the model rewrote the
prompt), and for the GPT image models ``usage`` in *input/output* tokens and
the ``background``, ``output_format``, ``quality`` and ``size`` used. A job's
stored answer keeps each image's bytes in the file storage instead
(:mod:`relayq.execution.image_files`): its ``data`` items then carry
``file_id`` and a relayq ``url`` in place of ``b64_json``.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from relayq.schemas.chat import Usage

__all__ = [
    "IMAGE_OUTPUT_TOKENS",
    "MAX_PROMPT_CHARS",
    "ImageData",
    "ImageGenerationRequest",
    "ImagesResponse",
    "ImagesUsage",
    "ResponseFormat",
    "is_gpt_image_model",
]

MAX_PROMPT_CHARS: Final = 32_000
"""The longest prompt OpenAI takes (its GPT image models'; DALL·E's are shorter and
their upstream says so)."""
IMAGE_OUTPUT_TOKENS: Final = 6240
"""Output tokens allowed per image in a worst case: ``gpt-image-1``'s largest, a
high-quality 1536x1024 image (6,240 tokens in OpenAI's image-generation guide). Later
models' larger sizes and ``xhigh``/``max`` qualities may use more; the job's reported
usage is booked all the same."""

ResponseFormat = Literal["url", "b64_json"]


def is_gpt_image_model(model: str) -> bool:
    """Whether ``model`` names one of OpenAI's GPT image models (``gpt-image-2``,
    ``gpt-image-1-mini``, ``chatgpt-image-latest``...), which answer base64 only and
    refuse ``response_format``."""
    return model.startswith(("gpt-image", "chatgpt-image"))


class ImageGenerationRequest(BaseModel):
    """The body of ``POST /v1/images/generations``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = Field(default=None, pattern=r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")
    """``auto`` or ``{width}x{height}``; which sizes a model draws is the upstream's say."""
    quality: Literal["auto", "low", "medium", "high", "xhigh", "max", "standard", "hd"] | None = (
        None
    )
    style: Literal["vivid", "natural"] | None = None
    response_format: ResponseFormat | None = None
    output_format: Literal["png", "jpeg", "webp", "gif", "svg"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    moderation: Literal["low", "auto"] | None = None
    complexity: Literal["low", "medium", "high"] | None = None
    frame_count: int | None = Field(default=None, ge=2, le=16)
    frame_duration_ms: int | None = Field(default=None, ge=1)
    svg: dict[str, Any] | None = None
    """SVG authoring options (OpenAI's ``svg`` object), passed on as they are."""
    safety_identifier: str | None = None
    user: str | None = None

    def images(self) -> int:
        """How many images are asked for (``n``, 1 when absent)."""
        return self.n or 1

    def token_estimate(self, *, bytes_per_token: int) -> int:
        """The prompt's bytes by ``bytes_per_token``, plus :data:`IMAGE_OUTPUT_TOKENS` an image
        (the GPT image models count their output in tokens; the DALL·E ones report none)."""
        size = len(self.prompt) if self.prompt.isascii() else len(self.prompt.encode())
        return -(-size // bytes_per_token) + IMAGE_OUTPUT_TOKENS * self.images()

    def upstream_body(
        self, *, model: str, controls: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """The JSON body for an OpenAI-shaped upstream drawing with ``model``;
        ``controls`` (relayq's adapter controls) are not sent."""
        body = self.model_dump(mode="json", exclude_none=True, exclude=set(controls))
        body["model"] = model
        return body


class ImageData(BaseModel):
    """One image: its URL or its bytes (base64), as the upstream sent it; in a job's stored
    answer, its ``file_id`` and relayq ``url`` instead of the bytes."""

    model_config = ConfigDict(extra="allow")

    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None
    file_id: str | None = None
    """relayq's: the file that holds this image's bytes (readable at ``url``)."""


class ImagesUsage(BaseModel):
    """The GPT image models' usage: input and output tokens (not prompt/completion)."""

    model_config = ConfigDict(extra="allow")

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def as_chat_usage(self) -> Usage:
        """The same counts as OpenAI's chat usage, which the ledger and prices read."""
        return Usage(
            prompt_tokens=self.input_tokens,
            completion_tokens=self.output_tokens,
            total_tokens=self.total_tokens or self.input_tokens + self.output_tokens,
        )


class ImagesResponse(BaseModel):
    """OpenAI's ``ImagesResponse`` (unknown fields kept: Azure's filter results)."""

    model_config = ConfigDict(extra="allow")

    created: int = 0
    data: list[ImageData]
    usage: ImagesUsage | None = None

    def job_usage(self) -> Usage:
        """The usage a job books: the upstream's tokens, or none counted (DALL·E reports
        none: 0)."""
        return self.usage.as_chat_usage() if self.usage is not None else Usage()
