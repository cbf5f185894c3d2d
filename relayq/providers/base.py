"""The interface every provider adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import ClassVar

import httpx

from relayq.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from relayq.settings import ProviderSettings

__all__ = ["Provider"]


class Provider(ABC):
    """One upstream vendor's adapter.

    An adapter is built once per worker process with its settings and the
    process's shared HTTP client, and serves many calls concurrently. It
    translates the canonical OpenAI-shaped request to the vendor's wire format
    and the vendor's answer back, raising only :mod:`relayq.providers.errors`.
    """

    type_name: ClassVar[str]
    """The ``type`` that selects this adapter in :class:`ProviderSettings`."""

    def __init__(self, *, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        self.name = name
        self.settings = settings
        self.http = http

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
