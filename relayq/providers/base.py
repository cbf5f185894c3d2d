"""The interface every provider adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from relayq.config.routes import ProviderSettings
from relayq.providers.assembly import completion_chunks
from relayq.providers.http import UpstreamClient
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest

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

    def __init__(self, *, name: str, settings: ProviderSettings, http: UpstreamClient) -> None:
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

    def stream(
        self, request: ChatCompletionRequest, *, model: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Stream one completion as chunks; the last carries usage when known.

        Workers call this for every job whose text is streamed (one created
        with ``stream: true``), and :meth:`complete` for any other. It asks
        the upstream to stream (:meth:`stream_from_upstream`) unless the
        provider's settings say
        ``stream_upstream: false``; then it asks for the whole answer
        (:meth:`complete`) and sends it as the chunks a stream of it would
        have carried.
        """
        if self.settings.stream_upstream:
            return self.stream_from_upstream(request, model=model)
        return self._whole_as_chunks(request, model=model)

    @abstractmethod
    def stream_from_upstream(
        self, request: ChatCompletionRequest, *, model: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Ask the upstream to stream one completion and yield its chunks, usage last.

        A stream cut before the vendor's end marker raises, never ends quietly.
        An upstream may ignore the request to stream and answer with the whole
        JSON answer: the adapter reads it with its non-streamed parser (an
        error object in it raises its error) and yields it as chunks.
        """

    async def _whole_as_chunks(
        self, request: ChatCompletionRequest, *, model: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        for chunk in completion_chunks(await self.complete(request, model=model)):
            yield chunk
