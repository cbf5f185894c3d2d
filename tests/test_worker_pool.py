"""The worker's loop pool: jobs in flight on the event loop, not a thread each; warm shutdown."""

from __future__ import annotations

import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import key_factory
from tests.jobs import body, submit, wait_for_status
from tests.services import running_valkey
from tests.stack import Stack, wait_until

pytestmark = pytest.mark.slow(seconds=12)  # worker processes of their own, loaded

IN_FLIGHT = 40


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no thread count for {pid}")


def _exits(worker: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> int:
    """The worker's exit status; if it hangs, fail with where each thread is."""
    try:
        return worker.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGUSR1)  # Celery's worker logs every thread's stack
        time.sleep(2)
        tail = log.read_text()[-20_000:]
        raise AssertionError(f"the worker did not exit within {timeout} s:\n{tail}") from None


def _running(client: httpx.Client, ids: list[str]) -> int:
    """How many of ``ids`` are running, in one request (a request per job, on a loaded
    machine, can outlast the jobs it counts)."""
    page = client.get("/v1/jobs", params={"status": "running", "limit": 100}).json()
    return len({job["id"] for job in page["data"]} & set(ids))


def _submitted_together(client: httpx.Client, job: dict[str, object], count: int) -> list[str]:
    """``count`` jobs submitted at once, so they are all in flight before the first ends."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: submit(client, job)["id"], range(count)))


def test_jobs_in_flight_take_no_thread_each(private_database_url: str, logs: Path) -> None:
    make_key = key_factory(private_database_url)
    env = {"RELAYQ_WORKER__SUPERVISE": "false", "RELAYQ_WORKER__CONCURRENCY": "100"}
    with (
        running_valkey() as redis_url,
        Stack(database_url=private_database_url, redis_url=redis_url, logs=logs, env=env) as stack,
    ):
        stack.start_api()
        worker = stack.start_worker()
        idle_threads = _threads(worker.pid)
        with httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
        ) as client:
            slow = body("hold", mock={"latency_ms": 4000})
            ids = _submitted_together(client, slow, IN_FLIGHT)
            wait_until(lambda: _running(client, ids) == IN_FLIGHT, timeout=30)
            busy_threads = _threads(worker.pid)
            # The threads pool parks one thread per job in flight (40 here).
            assert busy_threads - idle_threads < 10, (idle_threads, busy_threads)
            for job_id in ids:
                done = wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=60)
                assert done["status"] == "succeeded"
                assert len(done["attempts"]) == 1


def test_a_warm_shutdown_finishes_the_jobs_in_flight(private_database_url: str, logs: Path) -> None:
    make_key = key_factory(private_database_url)
    env = {"RELAYQ_WORKER__SUPERVISE": "false"}
    with (
        running_valkey() as redis_url,
        Stack(database_url=private_database_url, redis_url=redis_url, logs=logs, env=env) as stack,
    ):
        stack.start_api()
        worker = stack.start_worker()
        with httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
        ) as client:
            slow = body("finish me", mock={"latency_ms": 2000})
            ids = _submitted_together(client, slow, 5)
            wait_until(lambda: _running(client, ids) == len(ids), timeout=30)
            worker.send_signal(signal.SIGTERM)
            assert _exits(worker, logs / "worker-0.log") == 0
            # Finished by the stopping worker, each once: not left for a redelivery.
            for job_id in ids:
                job = client.get(f"/v1/jobs/{job_id}").json()
                assert job["status"] == "succeeded", job
                assert len(job["attempts"]) == 1
            log = (logs / "worker-0.log").read_text()
            assert "running it in a thread" not in log
