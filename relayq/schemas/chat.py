"""OpenAI chat-completions shapes: relayq's canonical request and response.

Every provider adapter translates from :class:`ChatCompletionRequest` and back
to :class:`ChatCompletion`, so the whole pipeline speaks one format. Fields
that OpenAI documents are typed; anything else a caller sends (a vendor's
extra parameter, an adapter's per-request controls such as the mock's
``mock``) is kept in ``model_extra`` and passed along.
"""

from __future__ import annotations

from collections.abc import Set
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChunkChoice",
    "ChunkDelta",
    "FunctionCall",
    "ResponseMessage",
    "Role",
    "ToolCall",
    "Usage",
]


class Role(str, Enum):
    SYSTEM = "system"
    DEVELOPER = "developer"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """One message of the conversation, as OpenAI's API takes it."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text: a string content, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(str(part.get("text", "")) for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    seed: int | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None

    def upstream_body(
        self, *, model: str, stream: bool = False, controls: Set[str] = frozenset()
    ) -> dict[str, Any]:
        """The JSON body for an OpenAI-shaped upstream serving ``model``.

        ``controls`` names the extra fields that steer relayq's adapters
        (their registry says which): they are not sent.
        """
        body = self.model_dump(mode="json", exclude_none=True, exclude=set(controls))
        body["model"] = model
        body.pop("stream_options", None)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        else:
            body.pop("stream", None)
        return body


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ResponseMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class Choice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int = 0
    message: ResponseMessage
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(BaseModel):
    """A ``chat.completion`` object."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ChunkDelta(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """A ``chat.completion.chunk`` object, one event of a streamed completion."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None

    _wire: str | None = PrivateAttr(default=None)

    @property
    def wire(self) -> str | None:
        """The JSON the upstream sent for this chunk, when a client may get it as it is."""
        # Read from pydantic's private store directly: ``self._wire`` goes through
        # BaseModel.__getattr__, ten times slower, and this is read per chunk.
        private = self.__pydantic_private__
        return private.get("_wire") if private else None

    def keep_wire(self, text: str) -> ChatCompletionChunk:
        """Keep ``text``, the upstream's own JSON of this chunk, to pass on undecoded.

        Only for an upstream that speaks OpenAI's format unchanged; an SSE event
        whose data spans lines is not kept (a client's data line must not break).
        """
        if "\n" not in text:
            self._wire = text
        return self
