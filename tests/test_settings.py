"""Settings come from the environment and are validated with clear messages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from relayq.config.settings import Settings
from relayq.ids import new_id
from relayq.providers import control_fields
from relayq.schemas.chat import ChatCompletionRequest


def test_defaults_serve_the_mock_model_from_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RELAYQ_DATABASE_URL", "RELAYQ_ROUTES", "RELAYQ_PROVIDERS"):
        monkeypatch.delenv(name, raising=False)

    settings = Settings()

    assert settings.database_url.startswith("sqlite:///")
    assert settings.routes["mock"].deployments[0].provider == "mock"
    assert settings.queues == ["llm.mock", "webhooks", "batches"]


def test_environment_overrides_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYQ_WORKER__CONCURRENCY", "42")
    monkeypatch.setenv("RELAYQ_PROVIDERS", '{"mock": {"type": "mock"}, "oa": {"type": "openai"}}')
    monkeypatch.setenv("RELAYQ_WORKER__PROVIDERS", '["oa"]')

    settings = Settings()

    assert settings.worker.concurrency == 42
    assert settings.queues == ["llm.oa", "webhooks", "batches"]


def test_a_route_to_an_unknown_provider_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYQ_ROUTES", '{"gpt-4o": {"provider": "openai", "model": "gpt-4o"}}')

    with pytest.raises(ValidationError) as raised:
        Settings()

    message = str(raised.value)
    assert "route 'gpt-4o' names provider 'openai'" in message
    assert "defined providers: mock" in message


def test_ids_sort_by_creation_time() -> None:
    early, late = new_id("job", now=1_000.0), new_id("job", now=1_000.001)

    assert early.startswith("job_")
    assert len(early) == len("job_") + 26
    assert early < late
    assert new_id("job", now=5.0) != new_id("job", now=5.0)


def test_relayq_controls_never_go_upstream() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "mock",
            "messages": [{"role": "user", "content": "x"}],
            "mock": {"tokens": 3},
            "vendor_flag": True,
        }
    )

    upstream = request.upstream_body(model="gpt-4o", controls=control_fields(request))

    assert control_fields(request) == {"mock"}
    assert "mock" not in upstream
    assert upstream["vendor_flag"] is True
    assert upstream["model"] == "gpt-4o"
