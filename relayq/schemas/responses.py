"""OpenAI Responses shapes: what ``POST /v1/responses`` takes and answers.

relayq serves the stateless part of OpenAI's Responses API (``store: false``)
beside chat completions, so ``client.responses.create`` of OpenAI's SDK works
against it. These models are the edge only:
:mod:`relayq.schemas.responses_translation` turns a :class:`ResponsesRequest`
into the canonical :class:`~relayq.schemas.chat.ChatCompletionRequest` every
route of the pipeline speaks, and a ``chat.completion`` back into a
:class:`ResponseObject`.

``input`` is a string or a list of items, told apart by ``type`` (an item
without one is a message, as in OpenAI's ``EasyInputMessage``); an item or a
content part relayq has no model for is a validation error naming its place
(``input[2]``). Fields this page does not type (a job option such as
``priority``, an adapter's control such as the mock's ``mock``) are kept in
``model_extra`` and passed along, as on ``/v1/chat/completions``, except
OpenAI's own fields that relayq does not carry (:data:`NOT_CARRIED`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)

__all__ = [
    "NOT_CARRIED",
    "InputItem",
    "ResponseObject",
    "ResponsesContentPart",
    "ResponsesFunctionCall",
    "ResponsesFunctionCallOutput",
    "ResponsesInputFile",
    "ResponsesInputImage",
    "ResponsesInputText",
    "ResponsesMessage",
    "ResponsesOutputItem",
    "ResponsesOutputMessage",
    "ResponsesOutputText",
    "ResponsesReasoning",
    "ResponsesRefusal",
    "ResponsesRequest",
    "ResponsesTextConfig",
    "ResponsesTool",
    "ResponsesToolChoice",
    "ResponsesUsage",
    "job_usage",
]


class _OpenItem(BaseModel):
    # OpenAI's items carry fields relayq does not map (id, status, phase...).
    model_config = ConfigDict(extra="allow")


class ResponsesInputText(_OpenItem):
    type: Literal["input_text"] = "input_text"
    text: str


class ResponsesInputImage(_OpenItem):
    """An image by URL (a ``data:`` URL too); a ``file_id`` is OpenAI's store, not carried."""

    type: Literal["input_image"] = "input_image"
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = None


class ResponsesInputFile(_OpenItem):
    """A file given inline (``file_data``, a ``data:`` URL); ``file_id``/``file_url`` are not."""

    type: Literal["input_file"] = "input_file"
    file_data: str | None = None
    filename: str | None = None
    file_id: str | None = None
    file_url: str | None = None


class ResponsesOutputText(_OpenItem):
    """Text an earlier response wrote (in an assistant message of the history), or writes."""

    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)


class ResponsesRefusal(_OpenItem):
    type: Literal["refusal"] = "refusal"
    refusal: str


ResponsesContentPart = Annotated[
    ResponsesInputText
    | ResponsesInputImage
    | ResponsesInputFile
    | ResponsesOutputText
    | ResponsesRefusal,
    Field(discriminator="type"),
]


class ResponsesMessage(_OpenItem):
    """A message of the conversation: the caller's, the instructions', or an earlier answer."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ResponsesContentPart]


class ResponsesFunctionCall(_OpenItem):
    """A function call an earlier response made (``call_id`` ties its output to it)."""

    type: Literal["function_call"] = "function_call"
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class ResponsesFunctionCallOutput(_OpenItem):
    """The caller's result of a function call."""

    type: Literal["function_call_output"] = "function_call_output"
    call_id: str = Field(min_length=1)
    output: str | list[ResponsesContentPart]


class ResponsesReasoning(_OpenItem):
    """An earlier response's reasoning: accepted in the history, not carried."""

    type: Literal["reasoning"] = "reasoning"


def _item_type(value: Any) -> str:
    """An item's ``type``; a message may leave it out."""
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if isinstance(kind, str) else "message"


InputItem = Annotated[
    Annotated[ResponsesMessage, Tag("message")]
    | Annotated[ResponsesFunctionCall, Tag("function_call")]
    | Annotated[ResponsesFunctionCallOutput, Tag("function_call_output")]
    | Annotated[ResponsesReasoning, Tag("reasoning")],
    Discriminator(_item_type),
]


class ResponsesTool(_OpenItem):
    """A tool: relayq carries ``function`` tools (flat: ``name``, ``parameters`` at the top).

    OpenAI's hosted tools (``web_search``, ``file_search``, ``code_interpreter``...)
    are refused by the translation: no route of relayq runs them.
    """

    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponsesToolChoice(_OpenItem):
    """A forced tool: ``{"type": "function", "name": ...}`` is carried."""

    type: str
    name: str | None = None


class ResponsesTextConfig(_OpenItem):
    format: dict[str, Any] | None = None
    """``text``, ``json_object``, or ``json_schema`` (``name``, ``schema``, ``strict``):
    carried as chat's ``response_format``."""
    verbosity: str | None = None
    """Accepted and not carried."""


NOT_CARRIED = frozenset(
    {
        "access_programs",
        "background_options",
        "context_management",
        "image",
        "include",
        "max_tool_calls",
        "moderation",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "stream_options",
        "top_logprobs",
        "truncation",
    }
)
"""OpenAI's fields that no route of relayq has a place for: accepted, then dropped."""


class ResponsesRequest(BaseModel):
    """The body of ``POST /v1/responses``; ``model`` is any relayq route."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | ResponsesToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: ResponsesTextConfig | None = None
    metadata: dict[str, str] | None = None
    """Kept as the job's metadata (up to 16 pairs), and returned on the response."""
    user: str | None = None
    store: bool | None = None
    """relayq is stateless: false or absent; ``true`` is refused."""
    previous_response_id: str | None = None
    """Refused: relayq keeps no responses to continue from; send the history in ``input``."""
    conversation: str | dict[str, Any] | None = None
    """Refused, as ``previous_response_id``."""
    background: bool | None = None
    """Refused when true: a background response is one stored to be fetched later."""
    prompt: dict[str, Any] | None = None
    """Refused: a prompt template is stored on OpenAI's side."""
    stream: bool | None = None

    def token_estimate(self, *, bytes_per_token: int) -> int:
        """The JSON of its instructions, input and tools by ``bytes_per_token``, plus
        ``max_output_tokens`` (nothing when absent: the reported usage counts it)."""
        shown = self.model_dump(mode="json", include={"instructions", "input", "tools"})
        size = len(json.dumps(shown).encode())
        return -(-size // bytes_per_token) + (self.max_output_tokens or 0)

    def upstream_body(
        self, *, model: str, controls: frozenset[str] = frozenset(), stream: bool
    ) -> dict[str, Any]:
        """The body for a vendor that speaks Responses natively: as it came, but for
        ``model`` (the deployment's), ``store: false`` (relayq keeps nothing, so asks no
        vendor to) and ``stream``; ``controls`` (relayq's adapter controls) are not sent."""
        body = self.model_dump(mode="json", exclude_none=True, exclude=set(controls))
        body.update(model=model, store=False, stream=stream)
        return body

    @model_validator(mode="wrap")
    @classmethod
    def _plain_locations(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Errors located as OpenAI names them (``input[0].content``), not by union branch."""
        try:
            return handler(data)
        except ValidationError as exc:
            errors = _plain_errors(exc)
            if not errors:
                raise
            raise ValidationError.from_exception_data(exc.title, errors) from None


_TAGS = frozenset(
    {
        "message",
        "function_call",
        "function_call_output",
        "reasoning",
        "input_text",
        "input_image",
        "input_file",
        "output_text",
        "refusal",
    }
)


def _plain_errors(exc: ValidationError) -> list[Any]:
    """``exc``'s errors without union branch names in their locations, and without the
    string branch's complaint where the value was a list (its items' errors say more)."""
    found = exc.errors()
    plain: list[Any] = []
    for error in found:
        loc = tuple(error["loc"])
        if loc[-1:] == ("str",) and _other_branch_failed(loc[:-1], found):
            continue
        kept: list[int | str] = []
        for part in loc:
            if isinstance(part, str) and "[" in part:
                continue  # a union's label: list[tagged-union[...]]
            if isinstance(part, str) and part in _TAGS and kept and isinstance(kept[-1], int):
                continue  # an item's tag, after its index
            kept.append(part)
        details = {"type": error["type"], "loc": tuple(kept), "input": error["input"]}
        if error.get("ctx"):
            details["ctx"] = error["ctx"]
        plain.append(details)
    return plain


def _other_branch_failed(where: tuple[Any, ...], found: list[Any]) -> bool:
    """Whether a branch of the union at ``where`` other than the string one failed too."""
    size = len(where)
    return any(
        len(error["loc"]) > size
        and tuple(error["loc"][:size]) == where
        and error["loc"][size] != "str"
        for error in found
    )


class ResponsesOutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[Annotated[ResponsesOutputText | ResponsesRefusal, Field(discriminator="type")]]


ResponsesOutputItem = Annotated[
    ResponsesOutputMessage | ResponsesFunctionCall, Field(discriminator="type")
]


class ResponsesUsage(BaseModel):
    input_tokens: int = 0
    input_tokens_details: dict[str, int] = Field(default_factory=dict)
    """``cached_tokens`` (and ``cache_write_tokens``)."""
    output_tokens: int = 0
    output_tokens_details: dict[str, int] = Field(default_factory=dict)
    """``reasoning_tokens``."""
    total_tokens: int = 0


class ResponseObject(BaseModel):
    """A ``response`` object: the whole answer of a call."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["response"] = "response"
    created_at: float
    status: Literal["completed", "incomplete", "failed", "in_progress"]
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    model: str
    output: list[ResponsesOutputItem]
    usage: ResponsesUsage | None = None


def job_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Responses ``usage`` as relayq's usage (chat completions' names), which cost,
    budgets, the usage ledger and rate limits read: ``input_tokens`` as
    ``prompt_tokens``, ``output_tokens`` as ``completion_tokens``, cached and reasoning
    tokens in their details."""
    if not usage:
        return None
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    counted: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens")
    if cached:
        counted["prompt_tokens_details"] = {"cached_tokens": int(cached)}
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens")
    if reasoning:
        counted["completion_tokens_details"] = {"reasoning_tokens": int(reasoning)}
    return counted
