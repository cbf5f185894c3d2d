"""The ``azure_openai`` adapter: OpenAI models deployed on an Azure OpenAI resource.

``base_url`` is the resource endpoint (``https://{resource}.openai.azure.com``)
and a route's upstream model is the *deployment* name. Two URL styles:

- ``deployments`` (default): ``POST {base_url}/openai/deployments/{deployment}
  /chat/completions?api-version={api_version}``, the dated API Azure has
  served since the start; ``api_version`` defaults to the GA
  :data:`DEFAULT_API_VERSION`.
- ``v1``: ``POST {base_url}/openai/v1/chat/completions`` with the deployment
  as ``model`` in the body, Azure's newer OpenAI-style route (GA since August
  2025) that needs no ``api-version``; one is added only when configured.

Auth is the ``api-key`` header, not a bearer token. The body is OpenAI's, so
everything in the canonical request is carried (the ``model`` field names the
deployment on both routes, as Azure's own SDK sends it). Answers are OpenAI's
with Azure's additions passed through untouched: ``prompt_filter_results``
(on the completion, or on a first stream chunk with empty ``choices`` and
empty ``id``, ``model`` and ``object`` — the empty ``object`` is read as
``chat.completion.chunk``) and ``content_filter_results`` on each choice;
``finish_reason: "content_filter"`` passes through as OpenAI's own.

Errors: a prompt rejected by the content filter (``code: content_filter``,
``innererror.code: ResponsibleAIPolicyViolation``) is InvalidRequest with
Azure's message, whatever status it came with; everything else maps by
status as for OpenAI. A 429's wait comes from ``retry-after-ms``,
``Retry-After`` or ``x-ratelimit-reset-*``, all of which Azure sends.

Embeddings go the same two ways, to ``.../embeddings`` instead of
``.../chat/completions``, with OpenAI's body and answer (Azure's REST
reference, "Embeddings - Create":
https://learn.microsoft.com/azure/ai-services/openai/reference#embeddings;
up to 2,048 inputs per call for ``text-embedding-3-*`` and ``ada-002``
version 2 deployments).

Images go the same two ways, to ``.../images/generations`` (Azure's REST
reference, "Image generation",
https://learn.microsoft.com/azure/ai-services/openai/reference#image-generation;
DALL-E 3 on the GA ``api-version``, the GPT image models on
``2025-04-01-preview`` and later: set ``options.api_version``), with OpenAI's
body and ``ImagesResponse``, Azure's ``content_filter_results`` and
``prompt_filter_results`` kept on each image. A deployment named
like a GPT image model (``gpt-image-*``) gets no ``response_format``, as on OpenAI.

Responses (OpenAI's Responses API, passed through as on OpenAI) never go under a
deployment: ``POST {base_url}/openai/v1/responses`` on the v1 route,
``POST {base_url}/openai/responses?api-version=2025-04-01-preview`` (or the
configured ``api_version``, which must then be a preview one) on the
deployments route, the deployment as ``model`` in the body either way
(Azure's "Azure OpenAI Responses API" how-to,
https://learn.microsoft.com/azure/ai-foundry/openai/how-to/responses).

Not carried: Entra ID (bearer token) auth, since relayq holds static keys
(a token can still be sent through ``headers``); Azure's "on your data"
``data_sources`` extension is not translated, though as an extra field it
passes through. :meth:`list_models` answers None: the data plane lists base
models, not the deployments routes name.
"""

from __future__ import annotations

from typing import Any, Final, Literal
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict

from relayq.config.settings import ProviderSettings
from relayq.providers.errors import InvalidRequest, ProviderError
from relayq.providers.http import UpstreamClient
from relayq.providers.openai import OpenAIProvider

__all__ = [
    "DEFAULT_API_VERSION",
    "RESPONSES_API_VERSION",
    "AzureOpenAIOptions",
    "AzureOpenAIProvider",
    "is_content_filter_error",
]

DEFAULT_API_VERSION: Final = "2024-10-21"
"""The latest GA ``api-version`` of the deployments route."""

RESPONSES_API_VERSION: Final = "2025-04-01-preview"
"""The ``api-version`` of Responses calls on the deployments route: a preview one (the
dated GA versions have no Responses API)."""

_CONTENT_FILTER_CODES = frozenset({"content_filter", "ResponsibleAIPolicyViolation"})


class AzureOpenAIOptions(BaseModel):
    """``options`` of an ``azure_openai`` provider."""

    model_config = ConfigDict(extra="forbid")

    api_style: Literal["deployments", "v1"] = "deployments"
    api_version: str | None = None
    """The ``api-version`` query value; :data:`DEFAULT_API_VERSION` on the
    deployments route when unset, none on the v1 route."""


def is_content_filter_error(payload: object) -> bool:
    """Whether an Azure error body is a content-filter rejection."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return False
    inner = error.get("innererror")
    codes = {error.get("code"), inner.get("code") if isinstance(inner, dict) else None}
    return bool(codes & _CONTENT_FILTER_CODES)


class AzureOpenAIProvider(OpenAIProvider):
    """Chat completions on an Azure OpenAI deployment with an ``api-key``."""

    type_name = "azure_openai"
    options_model = AzureOpenAIOptions
    default_base_url = ""
    lists_models = False

    def __init__(self, *, name: str, settings: ProviderSettings, http: UpstreamClient) -> None:
        super().__init__(name=name, settings=settings, http=http)
        if not settings.base_url:
            raise ValueError(
                f"provider {name!r} ({self.type_name}): base_url is required "
                "(the resource endpoint, https://<resource>.openai.azure.com)"
            )

    @property
    def azure_options(self) -> AzureOpenAIOptions:
        assert isinstance(self.options, AzureOpenAIOptions)
        return self.options

    def _operation_url(self, operation: str, *, model: str) -> str:
        """``operation`` on the deployment's URL with its ``api-version``, or on the v1 route."""
        options = self.azure_options
        if options.api_style == "v1":
            url = f"{self.base_url}/openai/v1/{operation}"
            api_version = options.api_version
        else:
            deployment = quote(model, safe="")
            url = f"{self.base_url}/openai/deployments/{deployment}/{operation}"
            api_version = options.api_version or DEFAULT_API_VERSION
        return f"{url}?{urlencode({'api-version': api_version})}" if api_version else url

    def chat_url(self, *, model: str) -> str:
        """The deployment's chat completions URL."""
        return self._operation_url("chat/completions", model=model)

    def embeddings_url(self, *, model: str) -> str:
        """The deployment's embeddings URL."""
        return self._operation_url("embeddings", model=model)

    def completions_url(self, *, model: str) -> str:
        """The deployment's legacy completions URL."""
        return self._operation_url("completions", model=model)

    def images_url(self, *, model: str) -> str:
        """The deployment's image generation URL."""
        return self._operation_url("images/generations", model=model)

    def responses_url(self, *, model: str) -> str:
        """Azure's Responses URL: never under a deployment (the deployment is the body's
        ``model``): ``/openai/v1/responses`` on the v1 route, ``/openai/responses`` with a
        preview ``api-version`` (:data:`RESPONSES_API_VERSION` unless one is set) on the
        deployments route."""
        options = self.azure_options
        if options.api_style == "v1":
            url = f"{self.base_url}/openai/v1/responses"
            api_version = options.api_version
        else:
            url = f"{self.base_url}/openai/responses"
            api_version = options.api_version or RESPONSES_API_VERSION
        return f"{url}?{urlencode({'api-version': api_version})}" if api_version else url

    def auth_headers(self) -> dict[str, str]:
        """Azure's ``api-key`` header."""
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else ""
        return {"api-key": key} if key else {}

    def adjust_error(self, error: ProviderError, payload: object) -> ProviderError:
        """A content-filter rejection is the request's fault, whatever its status."""
        if is_content_filter_error(payload) and not isinstance(error, InvalidRequest):
            return InvalidRequest(error.message, status_code=error.status_code)
        return error

    def chunk_payload(self, payload: Any) -> Any:
        """Azure's prompt-filter chunk says ``"object": ""``; it is a chunk all the same."""
        if isinstance(payload, dict) and payload.get("object") == "":
            payload["object"] = "chat.completion.chunk"
        return payload
