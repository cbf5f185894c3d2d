"""Routing files: YAML and TOML, and a clear message for each mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from relayq.cli.config_check import check_routing_file
from relayq.config.routes import ConfigError, Strategy, load_routing_file
from relayq.config.settings import Settings
from tests.stack import ROOT

YAML = """
providers:
  openai:
    type: openai
    api_key_env: RELAYQ_TEST_OPENAI_KEY
    read_timeout: 30
  local:
    type: mock
routes:
  gpt-4o:
    strategy: least_in_flight
    aliases: [gpt4o]
    cache: {enabled: true, ttl_seconds: 60}
    deployments:
      - {provider: openai, model: gpt-4o-2024-08-06, weight: 3, rpm: 500, tpm: 30000}
      - {provider: local, model: mock}
  mock: {provider: local, model: mock}
"""

TOML = """
[providers.local]
type = "mock"

[routes.mock]
provider = "local"
model = "mock"
aliases = ["m"]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_yaml_file_declares_providers_and_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAYQ_TEST_OPENAI_KEY", "sk-from-env")

    config = load_routing_file(write(tmp_path, "relayq.yaml", YAML))

    route = config.routes["gpt-4o"]
    assert route.strategy is Strategy.LEAST_IN_FLIGHT
    assert route.aliases == ["gpt4o"]
    assert route.cache.enabled
    assert [(d.provider, d.weight, d.rpm) for d in route.deployments] == [
        ("openai", 3, 500),
        ("local", 1, None),
    ]
    assert config.routes["mock"].deployments[0].model == "mock"
    api_key = config.providers["openai"].api_key
    assert api_key is not None
    assert api_key.get_secret_value() == "sk-from-env"


def test_a_toml_file_works_the_same(tmp_path: Path) -> None:
    config = load_routing_file(write(tmp_path, "relayq.toml", TOML))

    assert config.routes["mock"].aliases == ["m"]
    assert config.providers["local"].type == "mock"


def test_settings_take_routing_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAYQ_CONFIG_FILE", str(write(tmp_path, "r.toml", TOML)))
    monkeypatch.delenv("RELAYQ_ROUTES", raising=False)
    monkeypatch.delenv("RELAYQ_PROVIDERS", raising=False)

    settings = Settings()

    assert set(settings.routes) == {"mock"}
    assert settings.queues == ["llm.local", "webhooks", "batches"]


def test_the_file_and_the_environment_do_not_both_set_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAYQ_CONFIG_FILE", str(write(tmp_path, "r.toml", TOML)))
    monkeypatch.setenv("RELAYQ_ROUTES", '{"x": {"provider": "mock", "model": "x"}}')

    with pytest.raises(ValueError, match=r"in the config file .* or in the environment, not both"):
        Settings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "providers: {a: {type: mock}}\nroutes: {r: {provider: b, model: x}}\n",
            "route 'r' names provider 'b', which is not defined (defined providers: a)",
        ),
        (
            "providers: {a: {type: mock, api_key: sk-123}}\nroutes: {}\n",
            "providers.a.api_key: keys are never stored in the config file",
        ),
        (
            "providers: {a: {type: mock}}\n"
            "routes: {r: {provider: a, model: x, aliases: [s]}, s: {provider: a, model: y}}\n",
            "model name 's' is claimed by routes 'r' and 's'",
        ),
        (
            "providers: {a: {type: mock}}\nroutes: {r: {deployments: []}}\n",
            "routes.r.deployments: List should have at least 1 item",
        ),
        (
            "providers: {a: {type: mock}}\n"
            "routes: {r: {provider: a, model: x, strategy: fastest}}\n",
            "routes.r.strategy: Input should be 'ordered', 'weighted', 'least_in_flight' or "
            "'lowest_latency'",
        ),
        ("providers: [\n", "not valid YAML"),
        ("- just a list\n", "expected a mapping with 'providers' and 'routes'"),
    ],
)
def test_each_mistake_is_named(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "bad.yaml", text)

    with pytest.raises(ConfigError) as raised:
        load_routing_file(path)

    assert expected in str(raised.value)
    assert str(path) in str(raised.value)


def test_check_names_an_unknown_provider_type_and_lists_the_supported(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "providers: {x: {type: fancy}}\nroutes: {}\n")

    report = check_routing_file(path)

    assert report.error is not None
    assert "providers.x" in report.error
    assert "unknown provider type 'fancy'" in report.error
    assert "anthropic" in report.error
    assert "openai" in report.error


def test_check_validates_adapter_options(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "providers: {m: {type: mock, options: {x: 1}}}\nroutes: {}\n")

    report = check_routing_file(path)

    assert report.error is not None
    assert "options.x" in report.error


def config_check(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RELAYQ_TEST_OPENAI_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "relayq.cli", "config", "check", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_check_command(tmp_path: Path) -> None:
    good = config_check(write(tmp_path, "good.yaml", YAML))
    bad = config_check(write(tmp_path, "bad.yaml", "providers: {x: {type: fancy}}\nroutes: {}\n"))

    assert good.returncode == 0, good.stderr
    assert "ok: 2 providers, 2 routes, 1 aliases" in good.stderr
    assert "RELAYQ_TEST_OPENAI_KEY is not set" in good.stderr
    assert bad.returncode == 1
    assert "unknown provider type 'fancy'" in bad.stderr
