"""Provider adapters and their registry: a settings ``type`` names an adapter class.

Core code looks adapters up here and talks to them through
:class:`~relayq.providers.base.Provider` alone, so adding a vendor means
adding a module and a line to :data:`PROVIDER_TYPES`, nothing else.

Per-request controls (:attr:`Provider.controls_model`) are looked up here too:
a request's extra body field named after an adapter type that declares
controls carries that adapter's controls (``"mock": {...}``), which the API
checks with :func:`check_controls` and no adapter sends upstream
(:func:`control_fields`). An embeddings request takes no other extra field:
:func:`embedding_field_errors` names the ones it carries.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from types import MappingProxyType
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from relayq.config.settings import ProviderSettings
from relayq.providers.base import Provider
from relayq.providers.http import UpstreamClient

__all__ = [
    "PROVIDER_TYPES",
    "Provider",
    "build_providers",
    "check_controls",
    "control_fields",
    "controls_models",
    "embedding_field_errors",
    "provider_type",
]

PROVIDER_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "mock": "relayq.providers.mock:MockProvider",
        "openai": "relayq.providers.openai:OpenAIProvider",
        "openai_compatible": "relayq.providers.openai_compatible:OpenAICompatibleProvider",
        "azure_openai": "relayq.providers.azure_openai:AzureOpenAIProvider",
        "perplexity": "relayq.providers.perplexity:PerplexityProvider",
        "grok": "relayq.providers.grok:GrokProvider",
        "blackbox": "relayq.providers.blackbox:BlackboxProvider",
        "openrouter": "relayq.providers.openrouter:OpenRouterProvider",
        "anthropic": "relayq.providers.anthropic:AnthropicProvider",
        "cohere": "relayq.providers.cohere:CohereProvider",
        "gemini": "relayq.providers.gemini:GeminiProvider",
    }
)
"""Where each adapter class lives, by the ``type`` that selects it in
:class:`ProviderSettings`. Imported on first use, so a process loads only the
adapters its configuration names."""


def provider_type(type_name: str) -> type[Provider]:
    """The adapter class for ``type_name``; a ValueError listing the known types if none."""
    try:
        location = PROVIDER_TYPES[type_name]
    except KeyError:
        supported = ", ".join(sorted(PROVIDER_TYPES))
        raise ValueError(
            f"unknown provider type {type_name!r} (supported types: {supported})"
        ) from None
    module_name, _, class_name = location.partition(":")
    adapter: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return adapter


def build_providers(
    providers: Mapping[str, ProviderSettings], http: UpstreamClient
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


def control_fields(request: BaseModel) -> frozenset[str]:
    """The extra fields of ``request`` that carry some adapter's controls, never sent upstream.

    A set intersection per call; an adapter is imported only when a request
    names its type in a field.
    """
    extra = request.model_extra
    if not extra:
        return frozenset()
    return frozenset(
        name
        for name in extra.keys() & PROVIDER_TYPES.keys()
        if provider_type(name).controls_model is not None
    )


def check_controls(body: MutableMapping[str, Any]) -> list[ErrorDetails]:
    """Validate the adapter controls in a request body; the errors, each located in the body.

    Each valid field is replaced by its parsed value as JSON (the fields
    given, coerced), so a job stores what its adapter will read. A null field
    is no controls.
    """
    errors: list[ErrorDetails] = []
    for name in body.keys() & PROVIDER_TYPES.keys():
        model = provider_type(name).controls_model
        if model is None or body[name] is None:
            continue
        try:
            parsed = model.model_validate(body[name])
        except ValidationError as exc:
            errors += [{**error, "loc": (name, *error["loc"])} for error in exc.errors()]
            continue
        body[name] = parsed.model_dump(mode="json", exclude_unset=True)
    return errors


def controls_models() -> dict[str, type[BaseModel]]:
    """Every adapter type that takes controls, with their model (imports every adapter)."""
    models = {name: provider_type(name).controls_model for name in PROVIDER_TYPES}
    return {name: model for name, model in models.items() if model is not None}


def embedding_field_errors(body: Mapping[str, Any]) -> list[ErrorDetails]:
    """The extra fields of an embeddings (or images) request body that are no adapter's
    controls.

    ``body`` is the request's ``model_extra``. Each error is pydantic's
    ``extra_forbidden``, located at the field, so the API answers it as it
    answers any other unknown field. The controls themselves are checked by
    :func:`check_controls`.
    """
    return [
        {
            "type": "extra_forbidden",
            "loc": (name,),
            "msg": "Extra inputs are not permitted",
            "input": body[name],
        }
        for name in body
        if name not in PROVIDER_TYPES or provider_type(name).controls_model is None
    ]
