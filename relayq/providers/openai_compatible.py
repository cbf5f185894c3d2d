"""The ``openai_compatible`` adapter: any server that speaks OpenAI's chat completions.

vLLM, Ollama's ``/v1``, LM Studio and hosted vendors that copy OpenAI's API
are served by :class:`OpenAICompatibleProvider` at a configured ``base_url``.
``options.preset`` names a known vendor, which supplies the default base URL
and the few differences that vendor documents; everything else is OpenAI's
behaviour, inherited from :class:`~relayq.providers.openai.OpenAIProvider`.
A key is optional (local servers take none). ``options.responses: true`` says
the server serves OpenAI's Responses API (recent vLLM does): responses jobs
then pass through to ``POST {base_url}/responses`` natively, as on OpenAI
(off by default: over chat completions).

What each preset translates, and nothing more:

- ``groq``: streamed usage arrives in ``x_groq.usage`` on the last chunk; it
  is moved to the chunk's ``usage``.
- ``deepseek``: ``max_completion_tokens`` is sent as ``max_tokens`` (the only
  name DeepSeek documents); ``reasoning_content`` in messages and deltas
  passes through as is; finish reason ``insufficient_system_resource`` (an
  answer cut short by DeepSeek's capacity) raises ProviderUnavailable.
- ``mistral``: ``max_completion_tokens`` → ``max_tokens``, ``seed`` →
  ``random_seed``; ``user`` and ``stream_options`` are not sent (Mistral
  rejects unknown fields with 422, and puts usage on its last chunk unasked);
  finish reason ``model_length`` → ``length``, ``error`` raises
  ProviderUnavailable.
- ``together``: finish reason ``eos`` → ``stop``.
- ``fireworks``, ``ollama``, ``vllm``, ``lmstudio``: OpenAI's behaviour.

Not carried: fields a vendor documents as unsupported are sent anyway and the
vendor's 400/422 comes back as InvalidRequest with its message (Groq's
``logprobs``, ``logit_bias``, ``top_logprobs``, ``messages[].name`` and
``n`` > 1; Mistral's ``logit_bias`` and ``logprobs``; DeepSeek's
``json_schema`` response format), since dropping them silently would change
what the caller asked for.

Embeddings are OpenAI's (``POST {base_url}/embeddings``, see
:mod:`relayq.providers.openai`), the same for every preset: no preset
renames an embeddings field, so a server that takes ``dimensions`` or
``encoding_format`` under another name (or not at all) answers with its own
400. ``options.max_embedding_inputs`` caps the inputs per call for a server
that takes fewer than OpenAI's 2,048; longer inputs are split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relayq.config.settings import ProviderSettings
from relayq.providers.errors import ProviderUnavailable
from relayq.providers.http import UpstreamClient
from relayq.providers.openai import OpenAIProvider
from relayq.schemas.chat import ChatCompletionRequest

__all__ = ["PRESETS", "OpenAICompatibleOptions", "OpenAICompatibleProvider", "Preset"]


@dataclass(frozen=True)
class Preset:
    """A known vendor's default base URL and its documented differences from OpenAI."""

    base_url: str | None
    renamed: Mapping[str, str] = field(default_factory=dict)
    """Request fields the vendor names differently: OpenAI's name → the vendor's."""
    dropped: frozenset[str] = frozenset()
    """Request fields the vendor rejects and whose meaning it covers otherwise."""
    finish_reasons: Mapping[str, str] = field(default_factory=dict)
    """The vendor's finish reasons → OpenAI's."""
    failed_finish_reasons: frozenset[str] = frozenset()
    """Finish reasons that mean the vendor failed mid-answer."""
    usage_in_x_groq: bool = False


PRESETS: Final[Mapping[str, Preset]] = MappingProxyType(
    {
        "groq": Preset("https://api.groq.com/openai/v1", usage_in_x_groq=True),
        "deepseek": Preset(
            "https://api.deepseek.com/v1",
            renamed={"max_completion_tokens": "max_tokens"},
            failed_finish_reasons=frozenset({"insufficient_system_resource"}),
        ),
        "mistral": Preset(
            "https://api.mistral.ai/v1",
            renamed={"max_completion_tokens": "max_tokens", "seed": "random_seed"},
            dropped=frozenset({"user", "stream_options"}),
            finish_reasons={"model_length": "length"},
            failed_finish_reasons=frozenset({"error"}),
        ),
        "together": Preset("https://api.together.xyz/v1", finish_reasons={"eos": "stop"}),
        "fireworks": Preset("https://api.fireworks.ai/inference/v1"),
        "ollama": Preset("http://127.0.0.1:11434/v1"),
        "vllm": Preset(None),
        "lmstudio": Preset("http://127.0.0.1:1234/v1"),
    }
)
"""The known vendors, by the name ``options.preset`` takes."""

_GENERIC = Preset(None)


class OpenAICompatibleOptions(BaseModel):
    """``options`` of an ``openai_compatible`` provider."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = None
    """A known vendor (see :data:`PRESETS`); none means plain OpenAI behaviour."""
    max_embedding_inputs: int = Field(default=2048, ge=1, le=2048)
    """The most inputs the server embeds in one call; longer inputs are split."""
    responses: bool = False
    """The server serves OpenAI's Responses API (``POST {base_url}/responses``: recent
    vLLM does): responses jobs pass through to it natively instead of over chat."""

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            known = ", ".join(sorted(PRESETS))
            raise ValueError(f"unknown preset {value!r} (known presets: {known})")
        return value


class OpenAICompatibleProvider(OpenAIProvider):
    """Chat completions on an OpenAI-compatible server, with a preset's quirks."""

    speaks_responses = False  # unless options.responses says the server serves it

    type_name = "openai_compatible"
    options_model = OpenAICompatibleOptions
    serves_images = (
        False  # image generation is served by the openai, azure_openai and blackbox adapters
    )

    def __init__(self, *, name: str, settings: ProviderSettings, http: UpstreamClient) -> None:
        super().__init__(name=name, settings=settings, http=http)
        assert isinstance(self.options, OpenAICompatibleOptions)
        self.preset_name = self.options.preset
        self.preset = PRESETS[self.preset_name] if self.preset_name else _GENERIC
        if not (settings.base_url or self.preset.base_url):
            which = f"preset {self.preset_name!r} has" if self.preset_name else "there is"
            raise ValueError(
                f"provider {name!r} ({self.type_name}): base_url is required "
                f"({which} no default URL)"
            )

    @classmethod
    def speaks_responses_with(cls, options: Mapping[str, object]) -> bool:
        """As ``options.responses`` says (off by default)."""
        return options.get("responses") is True

    def embedding_slice_size(self) -> int:
        """The configured ``max_embedding_inputs``."""
        assert isinstance(self.options, OpenAICompatibleOptions)
        return self.options.max_embedding_inputs

    @property
    def base_url(self) -> str:
        """The configured base URL, else the preset's."""
        return (self.settings.base_url or self.preset.base_url or "").rstrip("/")

    def request_body(
        self, request: ChatCompletionRequest, *, model: str, stream: bool
    ) -> dict[str, Any]:
        body = super().request_body(request, model=model, stream=stream)
        for field_name in self.preset.dropped:
            body.pop(field_name, None)
        for openai_name, vendor_name in self.preset.renamed.items():
            if openai_name in body:
                body.setdefault(vendor_name, body.pop(openai_name))
        return body

    def _map_finish_reasons(self, payload: Any) -> None:
        choices = payload.get("choices") if isinstance(payload, dict) else None
        for choice in choices if isinstance(choices, list) else []:
            reason = choice.get("finish_reason") if isinstance(choice, dict) else None
            if not isinstance(reason, str):
                continue
            if reason in self.preset.failed_finish_reasons:
                raise ProviderUnavailable(f"{self.name}: generation failed ({reason})")
            choice["finish_reason"] = self.preset.finish_reasons.get(reason, reason)

    def completion_payload(self, payload: Any) -> Any:
        self._map_finish_reasons(payload)
        return payload

    @property
    def passes_chunks_through(self) -> bool:
        """Unless the preset renames finish reasons or moves usage, chunks pass as they are."""
        return not self.preset.finish_reasons and not self.preset.usage_in_x_groq

    def chunk_payload(self, payload: Any) -> Any:
        self._map_finish_reasons(payload)
        if self.preset.usage_in_x_groq and isinstance(payload, dict) and not payload.get("usage"):
            x_groq = payload.get("x_groq")
            if isinstance(x_groq, dict) and isinstance(x_groq.get("usage"), dict):
                payload["usage"] = x_groq["usage"]
        return payload
