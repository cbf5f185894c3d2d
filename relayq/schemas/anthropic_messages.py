"""Anthropic Messages shapes: what ``POST /v1/messages`` takes and answers.

relayq serves Anthropic's Messages API beside OpenAI's chat completions, so
Anthropic's own SDK works against it unchanged. These models are the edge
only: :mod:`relayq.schemas.anthropic_translation` turns a
:class:`MessagesRequest` into the canonical
:class:`~relayq.schemas.chat.ChatCompletionRequest` every route of the
pipeline speaks, and a ``chat.completion`` back into a
:class:`MessagesResponse`.

Content blocks are told apart by ``type``; a block relayq cannot carry is a
validation error naming its place (``messages[0].content[1]``). Fields this
page does not type (a job option such as ``priority``, an adapter's control
such as the mock's ``mock``) are kept in ``model_extra`` and passed along,
as on ``/v1/chat/completions``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "NOT_CARRIED",
    "Base64Source",
    "ContentBlock",
    "DocumentBlock",
    "ImageBlock",
    "MessageParam",
    "MessagesMetadata",
    "MessagesRequest",
    "MessagesResponse",
    "MessagesUsage",
    "OutputConfig",
    "RedactedThinkingBlock",
    "TextBlock",
    "ThinkingBlock",
    "ToolChoiceParam",
    "ToolDefinition",
    "ToolResultBlock",
    "ToolUseBlock",
    "URLSource",
]


class _OpenBlock(BaseModel):
    # Anthropic's blocks carry fields relayq does not map (cache_control, citations).
    model_config = ConfigDict(extra="allow")


class TextBlock(_OpenBlock):
    type: Literal["text"] = "text"
    text: str


class Base64Source(_OpenBlock):
    type: Literal["base64"] = "base64"
    media_type: str
    data: str


class URLSource(_OpenBlock):
    type: Literal["url"] = "url"
    url: str


class ImageBlock(_OpenBlock):
    type: Literal["image"] = "image"
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]


class DocumentBlock(_OpenBlock):
    """A document; relayq carries a base64 PDF (as an OpenAI ``file`` part) only."""

    type: Literal["document"] = "document"
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]
    title: str | None = None


class ToolUseBlock(_OpenBlock):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(_OpenBlock):
    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] | None = (
        None
    )
    is_error: bool | None = None


class ThinkingBlock(_OpenBlock):
    """A previous turn's thinking: accepted in the history, not carried."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_OpenBlock):
    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str


ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class MessageParam(BaseModel):
    """One turn of the conversation."""

    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolDefinition(BaseModel):
    """A client tool. Anthropic's server tools (``web_search``...) have no
    ``input_schema`` and are refused: no route of relayq runs them."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None


class ToolChoiceParam(BaseModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesMetadata(BaseModel):
    user_id: str | None = None


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: dict[str, Any] | None = None
    """``{"type": "json_schema", "schema": {...}}``: carried as OpenAI's ``response_format``."""
    effort: str | None = None
    """Accepted and not carried."""


NOT_CARRIED = frozenset(
    {
        "cache_control",
        "container",
        "context_management",
        "diagnostics",
        "inference_geo",
        "mcp_servers",
        "service_tier",
        "speed",
        "thinking",
        "user_profile_id",
        "workspace_id",
    }
)
"""Anthropic's fields that no route of relayq has a place for: accepted, then dropped."""


class MessagesRequest(BaseModel):
    """The body of ``POST /v1/messages``; ``model`` is any relayq route."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    metadata: MessagesMetadata | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoiceParam | None = None
    stream: bool | None = None
    output_config: OutputConfig | None = None


class MessagesUsage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class MessagesResponse(BaseModel):
    """A ``message`` object: the whole answer of a call."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[Annotated[TextBlock | ToolUseBlock, Field(discriminator="type")]]
    model: str
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"] | None
    stop_sequence: str | None = None
    usage: MessagesUsage
