"""Editing the config file changes routing in a running API and worker, no restart."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import key_factory
from tests.jobs import body, submit, wait_for_status
from tests.stack import Stack, wait_until

V1 = {
    "providers": {"local": {"type": "mock"}},
    "routes": {"alpha": {"provider": "local", "model": "mock"}},
}
V2 = {
    "providers": {"local": {"type": "mock"}, "second": {"type": "mock"}},
    "routes": {
        "alpha": {"provider": "local", "model": "mock"},
        "gamma": {"provider": "second", "model": "mock-2", "aliases": ["g"]},
    },
}
BROKEN = {
    "providers": {"local": {"type": "mock"}},
    "routes": {"delta": {"provider": "nowhere", "model": "x"}},
}


def model_ids(client: httpx.Client) -> set[str]:
    return {m["id"] for m in client.get("/v1/models").json()["data"]}


@pytest.mark.usefixtures("sqlite_only")  # the file and the processes' routers, not the store
def test_routes_and_providers_follow_the_file(
    private_database_url: str, redis_server: str, tmp_path: Path, logs: Path
) -> None:
    config = tmp_path / "relayq.yaml"
    config.write_text(yaml.safe_dump(V1))
    env = {
        "RELAYQ_CONFIG_FILE": str(config),
        "RELAYQ_CONFIG_POLL_SECONDS": "0.2",
        "RELAYQ_KEY_PREFIX": "relayq-reload",
    }
    with Stack(
        database_url=private_database_url,
        redis_url=f"{redis_server}/11",
        logs=logs,
        env=env,
        supervise=False,
    ) as stack:
        stack.start_api()
        stack.start_worker()
        key = key_factory(private_database_url)()
        with httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}
        ) as client:
            assert model_ids(client) == {"alpha"}
            assert client.post("/v1/jobs", json=body(model="gamma")).status_code == 404

            config.write_text(yaml.safe_dump(V2))
            wait_until(lambda: "gamma" in model_ids(client), timeout=20)
            assert model_ids(client) == {"alpha", "gamma", "g"}
            job = submit(client, body("after reload", model="g"))
            done = wait_for_status(client, job["id"], {"succeeded", "failed"}, timeout=30)
            assert done["status"] == "succeeded", done
            assert (done["provider"], done["response"]["model"]) == ("second", "mock-2")

            config.write_text(yaml.safe_dump(BROKEN))
            wait_until(
                lambda: b"config file change rejected" in (logs / "api.log").read_bytes(),
                timeout=20,
            )
            assert model_ids(client) == {"alpha", "gamma", "g"}
            again = submit(client, body("still served", model="alpha"))
            assert wait_for_status(client, again["id"], {"succeeded"})["status"] == "succeeded"
    log = (logs / "worker-0.log").read_text()
    assert "routing reloaded" in log
    assert "config file change rejected" in log
