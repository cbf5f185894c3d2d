"""OpenAI's legacy completions (``POST /v1/completions``): the request and the answer.

vLLM, llama.cpp's server, Ollama and other OpenAI-compatible servers still
serve it, and so do OpenAI (``gpt-3.5-turbo-instruct``, ``davinci-002``) and
Azure OpenAI. relayq passes it through to the adapters that speak OpenAI's
wire format: the request as it came (its model replaced by the deployment's,
relayq's own fields left out), the answer as the upstream sent it. So only
what relayq itself reads is declared here; every other field rides along
(``echo``, ``logprobs``, ``suffix``, ``best_of``, ``stop``, a server's own
sampling fields).
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from relayq.schemas.chat import Usage

__all__ = ["TextChoice", "TextCompletion", "TextCompletionRequest"]

PromptInput = str | list[str] | list[int] | list[list[int]]
"""What ``prompt`` may be, as OpenAI documents it."""


class TextCompletionRequest(BaseModel):
    """The body of ``POST /v1/completions``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    prompt: PromptInput
    max_tokens: int | None = Field(default=None, ge=0)
    """OpenAI's default is 16 when absent (the upstream decides)."""
    n: int | None = Field(default=None, ge=1, le=128)
    best_of: int | None = Field(default=None, ge=1, le=128)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    user: str | None = None

    def prompt_texts(self) -> list[str] | list[list[int]]:
        """``prompt`` as a list of prompts (strings or token arrays)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and isinstance(self.prompt[0], int):
            return [self.prompt]  # one token array
        return self.prompt  # type: ignore[return-value]

    def token_estimate(self, *, bytes_per_token: int) -> int:
        """Prompt tokens estimated (text bytes by ``bytes_per_token``, a token id each)
        plus ``max_tokens`` (16 when absent, OpenAI's default) times the choices."""
        size = tokens = 0
        for item in self.prompt_texts():
            if isinstance(item, str):
                size += len(item) if item.isascii() else len(item.encode())
            else:
                tokens += len(item)
        answer = (16 if self.max_tokens is None else self.max_tokens) * max(
            self.n or 1, self.best_of or 1
        )
        return tokens + -(-size // bytes_per_token) + answer

    def upstream_body(self, *, model: str, controls: Set[str] = frozenset()) -> dict[str, Any]:
        """The JSON body for an OpenAI-shaped upstream serving ``model``, not streamed;
        ``controls`` (relayq's adapter controls) are not sent."""
        body = self.model_dump(mode="json", exclude_none=True, exclude=set(controls))
        body["model"] = model
        body.pop("stream", None)
        body.pop("stream_options", None)
        return body


class TextChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: str = ""
    index: int = 0
    logprobs: Any = None
    finish_reason: str | None = None


class TextCompletion(BaseModel):
    """A ``text_completion`` object, as the upstream sent it (unknown fields kept)."""

    model_config = ConfigDict(extra="allow")

    id: str = ""
    object: Literal["text_completion"] = "text_completion"
    created: int = 0
    model: str = ""
    choices: list[TextChoice]
    usage: Usage | None = None
