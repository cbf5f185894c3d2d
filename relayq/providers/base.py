"""The interface every provider adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from relayq.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from relayq.config import ProviderSettings

__all__ = ["NoOptions", "Provider"]


class NoOptions(BaseModel):
    """The options of an adapter that takes none: any option is an error."""

    model_config = ConfigDict(extra="forbid")


class Provider(ABC):
    """One upstream vendor's adapter.

    An adapter is built once per worker process with its settings and the
    process's shared HTTP client, and serves many calls concurrently. It
    translates the canonical OpenAI-shaped request to the vendor's wire format
    and the vendor's answer back, raising only :mod:`relayq.providers.errors`.
    """

    type_name: ClassVar[str]
    """The ``type`` that selects this adapter in :class:`ProviderSettings`."""
    options_model: ClassVar[type[BaseModel]] = NoOptions
    """Validates ``settings.options``; adapters with vendor-specific options override it."""

    def __init__(self, *, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        self.name = name
        self.settings = settings
        self.http = http
        self.options = self.validate_options(settings.options, provider=name)

    @classmethod
    def validate_options(cls, options: dict[str, object], *, provider: str) -> BaseModel:
        """``options`` parsed by :attr:`options_model`; a ValueError naming the bad field."""
        try:
            return cls.options_model.model_validate(options)
        except ValidationError as exc:
            problems = "; ".join(
                ".".join(["options", *map(str, e["loc"])]) + f": {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"provider {provider!r} ({cls.type_name}): {problems}") from None

    async def list_models(self) -> list[str] | None:
        """The upstream's model ids, for vendors that publish a list; None otherwise."""
        return None

    @abstractmethod
    async def complete(self, request: ChatCompletionRequest, *, model: str) -> ChatCompletion:
        """Run one completion of ``request`` on the upstream ``model``."""

    @abstractmethod
    def stream(
        self, request: ChatCompletionRequest, *, model: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Stream one completion as chunks; the last carries usage when known.

        A stream cut before the vendor's end marker raises, never ends quietly.
        """
