"""A job's cost: its usage at its deployment's price, in US dollars per million tokens."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from relayq.config.prices import ModelPrice, job_cost
from relayq.config.routes import RoutingConfig

PRICE = ModelPrice(input=2.5, output=10.0, cached_input=1.25, batch_discount=0.5)


def test_prompt_and_completion_tokens_at_their_prices() -> None:
    usage = {"prompt_tokens": 1_000, "completion_tokens": 500}
    assert job_cost(PRICE, usage, batch=False) == pytest.approx((1_000 * 2.5 + 500 * 10.0) / 1e6)


def test_cached_prompt_tokens_at_the_cached_price_and_a_batch_at_its_discount() -> None:
    usage = {
        "prompt_tokens": 1_000,
        "completion_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 400},
    }
    plain = (600 * 2.5 + 400 * 1.25 + 100 * 10.0) / 1e6
    assert job_cost(PRICE, usage, batch=False) == pytest.approx(plain)
    assert job_cost(PRICE, usage, batch=True) == pytest.approx(plain / 2)


def test_cached_tokens_cost_the_input_price_when_no_cached_price_is_given() -> None:
    price = ModelPrice(input=3.0, output=15.0)
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    assert job_cost(price, usage, batch=False) == pytest.approx(30 / 1e6)


def test_no_usage_is_no_cost_and_odd_counts_count_nothing() -> None:
    assert job_cost(PRICE, None, batch=False) is None
    assert job_cost(PRICE, {}, batch=False) is None
    odd = {"prompt_tokens": True, "completion_tokens": -5, "prompt_tokens_details": "x"}
    assert job_cost(PRICE, odd, batch=False) == 0


def _routing(price: object) -> RoutingConfig:
    deployment = {"provider": "mock", "model": "m", "price": price}
    return RoutingConfig.model_validate(
        {"providers": {"mock": {"type": "mock"}}, "routes": {"m": {"deployments": [deployment]}}}
    )


def test_a_deployment_takes_a_price_in_the_routing_file_and_refuses_a_wrong_one() -> None:
    config = _routing({"input": 1, "output": 2})
    assert config.routes["m"].deployments[0].price == ModelPrice(input=1, output=2)
    for wrong in ({"input": -1, "output": 2}, {"input": 1}, {"input": 1, "output": 2, "tax": 3}):
        with pytest.raises(ValidationError):
            _routing(wrong)
