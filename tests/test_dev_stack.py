"""`relayq dev` brings the whole stack up, runs a job, shows it in Flower, and stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.jobs import body, submit, wait_for_status
from tests.services import free_port
from tests.stack import ROOT, wait_until


def test_dev_stack_runs_a_job_end_to_end_and_stops_on_sigint(tmp_path: Path) -> None:
    api_port, flower_port = free_port(), free_port()
    key = "rq-dev-stack-test-key"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RELAYQ_")},
        "RELAYQ_DATABASE_URL": f"sqlite:///{tmp_path / 'dev' / 'relayq.db'}",
        "RELAYQ_DATA_DIR": str(tmp_path / "data"),
        "RELAYQ_DEV_API_KEY": key,
    }
    log = (tmp_path / "dev.log").open("wb")
    dev = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relayq.cli",
            "dev",
            "--api-port",
            str(api_port),
            "--flower-port",
            str(flower_port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: b"relayq is up" in (tmp_path / "dev.log").read_bytes(), timeout=90)
        output = (tmp_path / "dev.log").read_text()
        assert key in output
        assert "(embedded Valkey on redis://127.0.0.1:" in f"({output}"
        with httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            job = submit(client, body("from the dev stack"))
            done = wait_for_status(client, job["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded"
        assert done["usage"]["completion_tokens"] > 0

        def flower_shows_the_task() -> bool:
            try:
                tasks = httpx.get(f"http://127.0.0.1:{flower_port}/api/tasks", timeout=2)
            except httpx.HTTPError:
                return False
            task = tasks.json().get(job["id"]) if tasks.status_code == 200 else None
            return task is not None and task.get("state") == "SUCCESS"

        wait_until(flower_shows_the_task, timeout=60, interval=0.5)
    finally:
        dev.send_signal(signal.SIGINT)
        status = dev.wait(timeout=60)
        log.close()
    assert status == 0
    children = subprocess.run(
        ["pgrep", "-f", f"--port {api_port}|--port={flower_port}"], capture_output=True
    )
    assert children.stdout == b"", "a child of relayq dev outlived it"
