"""GET /metrics: this API's counters and the shared state, in Prometheus' text format."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.jobs import body, submit
from tests.stack import Stack


def samples(stack: Stack) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = httpx.get(f"{stack.base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_metrics_show_requests_queued_jobs_and_breakers(client: httpx.Client, stack: Stack) -> None:
    submit(client, body("waits", model="mock-idle"))
    submit(client, body("waits too", model="mock-idle"))

    found = samples(stack)

    requests = {
        (labels["route"], labels["status"]): value
        for labels, value in found["relayq_http_requests_total"]
    }
    assert requests[("/v1/jobs", "202")] >= 2
    queued = {
        labels["provider"]: value
        for labels, value in found["relayq_jobs"]
        if labels["status"] == "queued"
    }
    assert queued["idle"] >= 2
    depths = {labels["queue"]: value for labels, value in found["relayq_queue_messages"]}
    assert depths["llm.idle"] >= 2
    breakers = {labels["deployment"]: value for labels, value in found["relayq_breaker_state"]}
    assert breakers["mock|mock"] == 0
