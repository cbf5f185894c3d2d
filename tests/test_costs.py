"""What jobs cost: prices found by model (defaults, the routing file's table, a
deployment's own), and each job's cost stored with its outcome, on the real stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from relayq.cli.config_check import check_routing
from relayq.config.prices import DEFAULT_PRICES, ModelPrice, job_cost, price_of_model
from relayq.config.routes import ConfigError, RoutingConfig, load_routing_file
from relayq.config.settings import Settings
from tests.batches import wait_for_batch
from tests.conftest import PRICE
from tests.jobs import body, submit, wait_for_status
from tests.stack import wait_until

A = ModelPrice(input=1.0, output=2.0)
B = ModelPrice(input=3.0, output=4.0, cached_input=0.5)


def test_a_model_is_found_by_its_name_without_a_dated_suffix_or_namespace() -> None:
    table = {"gpt-4o": A, "gpt-4o-mini": B, "claude-opus-4": A}
    assert price_of_model("gpt-4o", table) == A
    assert price_of_model("gpt-4o-mini", table) == B
    # The longest name the model starts with wins, followed by a date or snapshot.
    assert price_of_model("gpt-4o-mini-2024-07-18", table) == B
    assert price_of_model("gpt-4o-2024-08-06", table) == A
    assert price_of_model("claude-opus-4-20250514", table) == A
    assert price_of_model("gpt-4o-latest", table) == A
    assert price_of_model("openai/gpt-4o-mini", table) == B
    # Never another model that shares the name's start.
    assert price_of_model("gpt-4o-mini-tts", table) is None
    assert price_of_model("claude-opus-4-5", table) is None
    assert price_of_model("gpt-4", table) is None
    assert price_of_model("mock", table) is None


def test_the_default_table_prices_well_known_models_with_no_batch_discount() -> None:
    assert price_of_model("gpt-4o-mini-2024-07-18", DEFAULT_PRICES) == ModelPrice(
        input=0.15, output=0.60, cached_input=0.075
    )
    assert price_of_model("claude-3-5-haiku-20241022", DEFAULT_PRICES) == ModelPrice(
        input=0.80, output=4.00, cached_input=0.08
    )
    assert price_of_model("gemini-2.0-flash-001", DEFAULT_PRICES) is not None
    assert price_of_model("gpt-4.1-nano", DEFAULT_PRICES) != DEFAULT_PRICES["gpt-4.1"]
    # relayq's batches call the vendors' ordinary endpoints, at ordinary prices.
    assert all(price.batch_discount == 0 for price in DEFAULT_PRICES.values())


def _routing(**extra: Any) -> RoutingConfig:
    deployments = [
        {"provider": "p", "model": "gpt-4o-mini-2024-07-18"},
        {"provider": "p", "model": "gpt-4o-mini", "price": {"input": 9, "output": 9}},
        {"provider": "p", "model": "gpt-4o"},
        {"provider": "p", "model": "in-house-7b"},
    ]
    return RoutingConfig.model_validate(
        {
            "providers": {"p": {"type": "mock"}},
            "routes": {"m": {"deployments": deployments}},
            **extra,
        }
    )


def test_a_deployments_price_wins_over_the_files_table_which_wins_over_the_defaults() -> None:
    config = _routing(prices={"gpt-4o-mini": {"input": 1, "output": 2}})
    dated, own, default, unknown = config.routes["m"].deployments
    assert config.price_of(dated) == A
    assert config.price_of(own) == ModelPrice(input=9, output=9)
    assert config.price_of(default) == DEFAULT_PRICES["gpt-4o"]
    assert config.price_of(unknown) is None
    # Without the file's table, the defaults price the dated model.
    assert _routing().price_of(dated) == DEFAULT_PRICES["gpt-4o-mini"]


def test_the_routing_file_takes_a_prices_table_and_refuses_a_wrong_price(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "providers: {p: {type: mock}}\n"
        "routes: {m: {provider: p, model: in-house-7b}}\n"
        "prices: {in-house-7b: {input: 0.2, output: 0.4, cached_input: 0.1}}\n"
    )
    config = load_routing_file(path)
    deployment = config.routes["m"].deployments[0]
    assert config.price_of(deployment) == ModelPrice(input=0.2, output=0.4, cached_input=0.1)
    assert check_routing(config, source=str(path)).unpriced == []

    path.write_text(path.read_text().replace("input: 0.2", "input: -1"))
    with pytest.raises(ConfigError, match=r"prices\.in-house-7b\.input"):
        load_routing_file(path)


def test_without_a_file_the_prices_come_from_relayq_prices(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RELAYQ_ROUTES", '{"m": {"provider": "mock", "model": "in-house-7b"}}')
    monkeypatch.setenv("RELAYQ_PRICES", '{"in-house-7b": {"input": 1, "output": 2}}')
    routing = Settings().routing()
    assert routing.price_of(routing.routes["m"].deployments[0]) == A

    # A file holds the whole routing: prices in the environment beside it are refused.
    path = tmp_path / "routing.yaml"
    path.write_text("providers: {mock: {type: mock}}\nroutes: {}\n")
    monkeypatch.delenv("RELAYQ_ROUTES")
    monkeypatch.setenv("RELAYQ_CONFIG_FILE", str(path))
    with pytest.raises(ValidationError, match="set prices in the config file"):
        Settings()


def test_config_check_names_the_deployments_without_a_price() -> None:
    report = check_routing(_routing(), source="routing.yaml")
    assert report.unpriced == ["m: p/in-house-7b"]
    assert "1 deployments without a price" in report.summary


# On the shared stack: ``mock-priced`` is priced at PRICE, ``mock`` is not,
# ``gpt-4o-mini`` runs upstream model gpt-4o-mini-2024-07-18 (the default table's).


def _cost(usage: dict[str, Any], *, batch: bool = False) -> float:
    prompt: int = usage["prompt_tokens"]
    completion: int = usage["completion_tokens"]
    cost = (prompt * PRICE["input"] + completion * PRICE["output"]) / 1e6
    return cost * (1 - PRICE["batch_discount"]) if batch else cost


def _ended(client: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
    job = submit(client, payload)
    return wait_for_status(client, job["id"], {"succeeded", "failed"})


def test_each_job_stores_its_cost_at_the_price_of_its_deployment(client: httpx.Client) -> None:
    priced = _ended(client, body("what does this cost", model="mock-priced", mock={"tokens": 40}))
    assert priced["status"] == "succeeded"
    assert priced["cost_usd"] == pytest.approx(_cost(priced["usage"]))
    assert priced["cost_usd"] > 0
    listed = client.get("/v1/jobs", params={"model": "mock-priced"}).json()["data"]
    assert [job["cost_usd"] for job in listed] == [priced["cost_usd"]]

    # No price for the mock's own route: usage, but no cost.
    unpriced = _ended(client, body("free?"))
    assert unpriced["usage"] is not None
    assert unpriced["cost_usd"] is None

    # No usage (the call failed): no cost either.
    failed = _ended(client, body("no", model="mock-priced", mock={"fault": "invalid_request"}))
    assert failed["status"] == "failed"
    assert failed["cost_usd"] is None


def test_a_dated_upstream_model_is_priced_by_the_default_table(client: httpx.Client) -> None:
    job = _ended(client, body("hello", model="gpt-4o-mini"))
    assert job["status"] == "succeeded", job
    expected = job_cost(DEFAULT_PRICES["gpt-4o-mini"], job["usage"], batch=False)
    assert expected is not None
    assert expected > 0
    assert job["cost_usd"] == pytest.approx(expected)


def test_a_cached_answer_costs_nothing(client: httpx.Client) -> None:
    payload = body("cache this answer", model="mock-priced", cache=True)
    first = _ended(client, payload)
    assert first["cost_usd"] == pytest.approx(_cost(first["usage"]))
    answered: dict[str, Any] = {}

    def cached() -> bool:
        answered.update(submit(client, payload))
        return bool(answered["cached"])

    wait_until(cached, timeout=10, interval=0.1)
    assert answered["status"] == "succeeded"
    assert answered["usage"] == first["usage"]
    assert answered["cost_usd"] == 0.0
    assert client.get(f"/v1/jobs/{answered['id']}").json()["cost_usd"] == 0.0


def test_a_batch_shows_its_requests_usage_and_cost_summed(client: httpx.Client) -> None:
    lines = [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": "mock-priced",
                "messages": [{"role": "user", "content": f"request number {i} " * (i + 1)}],
                "mock": {"tokens": 5 + i},
            },
        }
        for i in range(3)
    ]
    lines.append(
        {
            "custom_id": "refused",
            "params": {
                "model": "mock-priced",
                "messages": [{"role": "user", "content": "no"}],
                "mock": {"fault": "invalid_request"},
            },
        }
    )
    created = client.post("/v1/batches", json={"requests": lines})
    assert created.status_code == 200, created.text
    assert created.json()["usage"]["total_tokens"] == 0
    assert created.json()["cost_usd"] is None
    batch = wait_for_batch(client, created.json()["id"])
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": 4, "completed": 3, "failed": 1}

    jobs = client.get("/v1/jobs", params={"batch_id": batch["id"], "limit": 100}).json()["data"]
    used = [job["usage"] for job in jobs if job["usage"]]
    assert len(used) == 3
    prompt = sum(u["prompt_tokens"] for u in used)
    completion = sum(u["completion_tokens"] for u in used)
    assert batch["usage"] == {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }
    # Each request at the batch discount; the batch's cost is theirs added up.
    for job in jobs:
        if job["usage"]:
            assert job["cost_usd"] == pytest.approx(_cost(job["usage"], batch=True))
    assert batch["cost_usd"] == pytest.approx(sum(job["cost_usd"] or 0 for job in jobs))
    assert batch["cost_usd"] == pytest.approx(sum(_cost(u, batch=True) for u in used))
