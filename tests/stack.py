"""relayq's processes, started for real as subprocesses: the API and workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.services import free_port

__all__ = ["Stack", "wait_until"]

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: object, *, timeout: float, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until it is true; fail the test after ``timeout`` seconds."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {predicate}")


class Stack:
    """An API process and worker processes sharing one database and one Redis."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        logs: Path,
        env: dict[str, str] | None = None,
        supervise: bool = True,
    ) -> None:
        """``supervise=False``: each worker is its Celery process alone, without the
        supervisor that restarts it (``RELAYQ_WORKER__SUPERVISE``): one Python process
        fewer per worker (about 0.8 s of CPU to start). For stacks whose tests neither
        kill a worker's Celery process nor restart Redis: the shared ones."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.logs = logs
        self.env = {
            **os.environ,
            "RELAYQ_DATABASE_URL": database_url,
            "RELAYQ_REDIS_URL": redis_url,
            "RELAYQ_LOG_LEVEL": "INFO",
            "RELAYQ_WORKER__LEASE_SECONDS": "3",
            "RELAYQ_WORKER__RECONCILE_INTERVAL": "0.5",
            "RELAYQ_WORKER__ENQUEUE_GRACE_SECONDS": "1",
            "RELAYQ_WORKER__CONCURRENCY": "50",
            # Webhooks to the loopback receiver, retried quickly.
            "RELAYQ_WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS": "true",
            "RELAYQ_WEBHOOKS__RETRY_SCHEDULE": "[0.3, 0.3, 0.3]",
            "RELAYQ_WEBHOOKS__TIMEOUT_SECONDS": "3",
            "RELAYQ_WEBHOOKS__MAX_COUNTDOWN_SECONDS": "1",
            "RELAYQ_EVENTS__HEARTBEAT_SECONDS": "0.5",
            "RELAYQ_RETRY__BACKOFF_BASE_SECONDS": "0.05",
            "RELAYQ_RETRY__BACKOFF_MAX_SECONDS": "0.2",
            "RELAYQ_FILES__STORAGE_DIR": str(logs / "files"),
            "RELAYQ_BATCHES__TICK_SECONDS": "0.2",
            "RELAYQ_BATCHES__PROGRESS_SECONDS": "0.1",
            "RELAYQ_PROVIDERS": json.dumps(
                {"mock": {"type": "mock", "read_timeout": 5}, "idle": {"type": "mock"}}
            ),
            "RELAYQ_ROUTES": json.dumps(
                {
                    "mock": {"provider": "mock", "model": "mock"},
                    "mock-idle": {"provider": "idle", "model": "mock"},
                }
            ),
            # No worker of the test stack consumes llm.idle: its jobs stay queued.
            "RELAYQ_WORKER__PROVIDERS": json.dumps(["mock"]),
            **({} if supervise else {"RELAYQ_WORKER__SUPERVISE": "false"}),
            **(env or {}),
        }
        if "RELAYQ_CONFIG_FILE" in self.env:  # routing comes from the file alone
            for name in ("RELAYQ_PROVIDERS", "RELAYQ_ROUTES", "RELAYQ_WORKER__PROVIDERS"):
                if name not in (env or {}):
                    self.env.pop(name, None)
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        try:
            # A session of its own: a kill reaches the whole process group.
            return subprocess.Popen(
                [sys.executable, *argv],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()

    def start_api(self) -> None:
        self.api = self.spawn(
            "api",
            [
                "-m",
                "uvicorn",
                "api.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
            ],
        )
        wait_until(self._api_up, timeout=30)

    def _api_up(self) -> bool:
        assert self.api is not None
        if self.api.poll() is not None:
            raise AssertionError(f"the API exited; see {self.logs / 'api.log'}")
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self) -> subprocess.Popen[bytes]:
        """Start a worker and wait until it consumes (Celery says 'ready')."""
        index = len(self.workers)
        log_path = self.logs / f"worker-{index}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        worker = self.spawn(f"worker-{index}", ["-m", "worker", "--hostname", f"w{index}@test"])
        self.workers.append(worker)

        def ready() -> bool:
            if worker.poll() is not None:
                raise AssertionError(f"worker exited; see {log_path}")
            return b" ready." in log_path.read_bytes()[offset:]

        wait_until(ready, timeout=30)
        return worker

    def kill_worker(self, worker: subprocess.Popen[bytes]) -> None:
        """SIGKILL to the worker and its supervisor: no shutdown code runs, as when a
        machine dies."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)

    def stop(self) -> None:
        processes = [p for p in [self.api, *self.workers] if p is not None]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # The whole group: a supervised worker's Celery child would outlive
                # a SIGKILL to its supervisor alone.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
