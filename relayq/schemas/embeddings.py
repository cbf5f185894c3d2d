"""OpenAI embeddings shapes: relayq's canonical embeddings request and response.

Every provider adapter that serves embeddings translates from
:class:`EmbeddingRequest` and back to :class:`EmbeddingResponse`, as the chat
adapters do with the chat shapes. The request takes what OpenAI's
``POST /v1/embeddings`` takes: ``input`` as a string, an array of strings, an
array of token ids or an array of token-id arrays (at most
:data:`MAX_INPUTS` items, none empty), ``dimensions``, ``encoding_format`` and
``user``. Any other field is kept in ``model_extra`` only so that an
adapter's per-request controls (the mock's ``mock``) can ride along; the
providers' registry refuses every other one
(:func:`relayq.providers.embedding_field_errors`), since no embeddings
upstream takes a field relayq does not know.

``base64`` embeddings are the vector's float32 values, little-endian, as
OpenAI sends them and its SDK decodes them (``array.array("f", ...)`` or
``numpy.frombuffer(..., dtype="float32")``): :func:`encode_vector` and
:func:`decode_vector`.
"""

from __future__ import annotations

import array
import base64
import sys
from collections.abc import Sequence
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

__all__ = [
    "MAX_INPUTS",
    "Embedding",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingUsage",
    "EncodingFormat",
    "decode_vector",
    "encode_vector",
    "join_embeddings",
]

MAX_INPUTS: Final = 2048
"""The most items one request's ``input`` array may hold (OpenAI's limit)."""

EncodingFormat = Literal["float", "base64"]

EmbeddingInput = str | list[str] | list[int] | list[list[int]]
"""What ``input`` may be, as OpenAI documents it."""

_BIG_ENDIAN = sys.byteorder == "big"


def encode_vector(vector: Sequence[float]) -> str:
    """``vector`` as OpenAI's base64: its float32 values, little-endian."""
    values = array.array("f", vector)
    if _BIG_ENDIAN:
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def decode_vector(text: str) -> list[float]:
    """The float32 values of an OpenAI base64 embedding."""
    values = array.array("f", base64.b64decode(text))
    if _BIG_ENDIAN:
        values.byteswap()
    return values.tolist()


def _problem(kind: str, message: str, loc: tuple[int | str, ...], value: object) -> ValidationError:
    error = InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)
    return ValidationError.from_exception_data("EmbeddingRequest", [error])


def _checked_item(item: object, index: int) -> str | list[int]:
    """One item of an ``input`` array: a non-empty string or a non-empty token-id array."""
    if isinstance(item, str):
        if not item:
            raise _problem("empty_input", "must not be an empty string", (index,), item)
        return item
    if isinstance(item, list):
        if not item:
            raise _problem("empty_input", "must not be an empty token array", (index,), item)
        for position, token in enumerate(item):
            if type(token) is not int or token < 0:
                message = "must be a token id (an integer of 0 or more)"
                raise _problem("token_id", message, (index, position), token)
        return item
    message = "must be a string or an array of token ids"
    raise _problem("input_item_type", message, (index,), item)


class EmbeddingRequest(BaseModel):
    """The body of ``POST /v1/embeddings``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: EmbeddingInput
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: EncodingFormat = "float"
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _valid_input(cls, value: Any) -> EmbeddingInput:
        """Refuse empty input, empty items, mixed arrays and more than :data:`MAX_INPUTS` items.

        Done by hand rather than by the union's own errors, which would name
        each union member instead of the item at fault (``input[3]``).
        """
        if isinstance(value, str):
            if not value:
                raise _problem("empty_input", "must not be an empty string", (), value)
            return value
        if not isinstance(value, list):
            message = "must be a string, an array of strings or an array of token ids"
            raise _problem("input_type", message, (), value)
        if not value:
            raise _problem("empty_input", "must not be an empty array", (), value)
        if all(type(item) is int for item in value):  # one token array
            for position, token in enumerate(value):
                if token < 0:
                    message = "must be a token id (an integer of 0 or more)"
                    raise _problem("token_id", message, (position,), token)
            return value
        if len(value) > MAX_INPUTS:
            message = f"must hold at most {MAX_INPUTS} items, not {len(value)}"
            raise _problem("too_many_inputs", message, (), len(value))
        items = [_checked_item(item, index) for index, item in enumerate(value)]
        kinds = {isinstance(item, str) for item in items}
        if len(kinds) > 1:
            message = "must not mix strings and token arrays"
            raise _problem("mixed_input", message, (), "(mixed)")
        return items  # type: ignore[return-value]  # all strings or all token arrays

    @property
    def has_tokens(self) -> bool:
        """Whether ``input`` is token ids rather than text."""
        return not (isinstance(self.input, str) or isinstance(self.input[0], str))

    def token_estimate(self, *, bytes_per_token: int) -> int:
        """``input``'s tokens, estimated: token ids counted, text as its UTF-8 bytes divided
        by ``bytes_per_token`` (rounded up); with 1, an upper bound for every tokenizer
        whose tokens are each at least a byte (see :mod:`relayq.budgets.estimate`)."""
        size = tokens = 0
        for item in self.inputs():
            if isinstance(item, str):
                size += len(item) if item.isascii() else len(item.encode())
            else:
                tokens += len(item)
        return tokens + -(-size // bytes_per_token)

    def inputs(self) -> list[str] | list[list[int]]:
        """``input`` as a list of items, one per embedding asked for, in order."""
        if isinstance(self.input, str):
            return [self.input]
        if isinstance(self.input[0], int):
            return [self.input]  # one token array
        return self.input


class Embedding(BaseModel):
    """One ``embedding`` object: a vector as floats, or as base64 float32 bytes."""

    model_config = ConfigDict(extra="allow")

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str

    def floats(self) -> list[float]:
        """The vector as floats, whichever way it is held."""
        if isinstance(self.embedding, str):
            return decode_vector(self.embedding)
        return self.embedding

    def encoded(self, encoding_format: EncodingFormat) -> Embedding:
        """This embedding held as ``encoding_format`` asks (itself if it already is)."""
        if encoding_format == "base64" and not isinstance(self.embedding, str):
            return self.model_copy(update={"embedding": encode_vector(self.embedding)})
        if encoding_format == "float" and isinstance(self.embedding, str):
            return self.model_copy(update={"embedding": decode_vector(self.embedding)})
        return self


class EmbeddingUsage(BaseModel):
    """Tokens read; 0 when the upstream reports none (see docs/providers.md)."""

    model_config = ConfigDict(extra="allow")

    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingResponse(BaseModel):
    """The answer to ``POST /v1/embeddings``: ``{"object": "list", "data": [...], ...}``."""

    model_config = ConfigDict(extra="allow")

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage = Field(default_factory=EmbeddingUsage)


def _as_asked(part: EmbeddingResponse, encoding_format: EncodingFormat) -> bool:
    """Whether ``part``'s vectors are numbered 0 to n-1 in order and held as asked."""
    as_text = encoding_format == "base64"
    return all(
        item.index == index and isinstance(item.embedding, str) is as_text
        for index, item in enumerate(part.data)
    )


def join_embeddings(
    parts: Sequence[EmbeddingResponse], *, encoding_format: EncodingFormat
) -> EmbeddingResponse:
    """The answers to consecutive slices of one request's inputs, as one answer.

    Each part's embeddings are taken in their ``index`` order and numbered on
    from the parts before it; usage is summed; the model is the first part's
    (what the upstream named). Every vector ends up as ``encoding_format`` asks.
    One part already so (one call, in order, in the format asked) is returned
    as it is: a large answer's vectors are not copied.
    """
    if len(parts) == 1 and _as_asked(parts[0], encoding_format):
        return parts[0]
    data: list[Embedding] = []
    prompt_tokens = total_tokens = 0
    for part in parts:
        for item in sorted(part.data, key=lambda embedding: embedding.index):
            encoded = item.encoded(encoding_format)
            data.append(encoded.model_copy(update={"index": len(data)}))
        prompt_tokens += part.usage.prompt_tokens
        total_tokens += part.usage.total_tokens
    usage = EmbeddingUsage(prompt_tokens=prompt_tokens, total_tokens=total_tokens)
    return EmbeddingResponse(data=data, model=parts[0].model if parts else "", usage=usage)
