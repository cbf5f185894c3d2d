"""Provider adapters and their registry: a settings ``type`` names an adapter class.

Core code looks adapters up here and talks to them through
:class:`~relayq.providers.base.Provider` alone, so adding a vendor means
adding a module and a line to :data:`PROVIDER_TYPES`, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import httpx

from relayq.providers.base import Provider
from relayq.providers.mock import MockProvider
from relayq.providers.openai import OpenAIProvider
from relayq.settings import ProviderSettings

__all__ = ["PROVIDER_TYPES", "Provider", "build_providers", "provider_type"]

PROVIDER_TYPES: Final[Mapping[str, type[Provider]]] = MappingProxyType(
    {adapter.type_name: adapter for adapter in (MockProvider, OpenAIProvider)}
)
"""Adapter class by the ``type`` that selects it in :class:`ProviderSettings`."""


def provider_type(type_name: str) -> type[Provider]:
    """The adapter class for ``type_name``; a ValueError listing the known types if none."""
    try:
        return PROVIDER_TYPES[type_name]
    except KeyError:
        supported = ", ".join(sorted(PROVIDER_TYPES))
        raise ValueError(
            f"unknown provider type {type_name!r} (supported types: {supported})"
        ) from None


def build_providers(
    providers: Mapping[str, ProviderSettings], http: httpx.AsyncClient
) -> dict[str, Provider]:
    """One adapter per configured provider, by name, all sharing ``http``.

    Called once per worker process at start-up; every type is checked before
    any adapter is built, and the error names the provider whose type is wrong.
    """
    for name, settings in providers.items():
        try:
            provider_type(settings.type)
        except ValueError as exc:
            raise ValueError(f"provider {name!r}: {exc}") from None
    return {
        name: provider_type(settings.type)(name=name, settings=settings, http=http)
        for name, settings in providers.items()
    }
