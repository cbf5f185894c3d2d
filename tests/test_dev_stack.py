"""`relayq dev`: the whole stack from one command, and a terminal's Ctrl-C stopping it.

A shell runs `relayq dev` as a job of its own in the terminal's foreground
process group, and Ctrl-C sends SIGINT to that whole group. The tests run it
the same way: in a session of its own, SIGINT to the group. Which processes
the stack ran, and whether they still run, is read from /proc by pid (and
start time, so that a reused pid does not count).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
import redis

from tests.jobs import TERMINAL, body, submit, wait_for_status
from tests.services import free_port
from tests.stack import ROOT, wait_until

pytestmark = [
    pytest.mark.slow(seconds=16),  # the whole dev stack, started and stopped
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc"),
]

KEY = "rq-dev-stack-test-key"


@dataclass(frozen=True)
class Process:
    pid: int
    started: int
    """Clock ticks from boot to the process's start: tells a reused pid apart."""

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[0] != "Z" and int(stat[19]) == self.started


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _descendants(root: int) -> set[Process]:
    children: dict[int, list[Process]] = {}
    for entry in Path("/proc").iterdir():
        stat = _stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None and stat[0] != "Z":
            process = Process(int(entry.name), int(stat[19]))
            children.setdefault(int(stat[1]), []).append(process)
    found: set[Process] = set()
    parents = [root]
    while parents:
        for child in children.get(parents.pop(), []):
            found.add(child)
            parents.append(child.pid)
    return found


class DevStack:
    """`relayq dev` on free ports and a scratch directory, in a session of its own."""

    def __init__(self, tmp_path: Path) -> None:
        self.api_port, self.flower_port = free_port(), free_port()
        self.database = tmp_path / "dev" / "relayq.db"
        self.data_dir = tmp_path / "data"
        self.log_path = tmp_path / "dev.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RELAYQ_")},
            "RELAYQ_DATABASE_URL": f"sqlite:///{self.database}",
            "RELAYQ_DATA_DIR": str(self.data_dir),
            "RELAYQ_FILES__STORAGE_DIR": str(tmp_path / "files"),
            "RELAYQ_DEV_API_KEY": KEY,
            # A publish that met a stale Redis connection is made again within seconds.
            "RELAYQ_WORKER__ENQUEUE_GRACE_SECONDS": "1",
            "RELAYQ_WORKER__RECONCILE_INTERVAL": "0.5",
        }
        self.seen: set[Process] = set()
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DevStack:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "relayq.cli", "dev"),
                    *("--api-port", str(self.api_port), "--flower-port", str(self.flower_port)),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_up(self) -> None:
        def up() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, self.output()
            return "relayq is up" in self.output()

        wait_until(up, timeout=90, interval=0.1)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.api_port}",
            headers={"Authorization": f"Bearer {KEY}"},
        )

    def valkey(self) -> redis.Redis:
        match = re.search(r"embedded Valkey on (redis://127\.0\.0\.1:\d+)", self.output())
        assert match is not None, self.output()
        return redis.Redis.from_url(match.group(1), decode_responses=True, socket_timeout=2)

    def valkey_process(self) -> Process:
        with self.valkey() as client:
            pid = int(client.info("server")["process_id"])
        (process,) = [p for p in self.processes() if p.pid == pid]
        return process

    def processes(self) -> set[Process]:
        """Every process the stack runs now (all descendants of `relayq dev`)."""
        found = _descendants(self.pid)
        self.seen |= found
        return found

    def ctrl_c(self) -> None:
        os.killpg(self.pid, signal.SIGINT)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.processes()
            self.ctrl_c()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for process in self.seen:  # whatever a failed test left behind
            if process.alive():
                os.kill(process.pid, signal.SIGKILL)


def _status(database: Path, job_id: str) -> str:
    with closing(sqlite3.connect(database)) as connection:
        (status,) = connection.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return str(status)


def test_dev_stack_runs_jobs_survives_valkey_dying_and_ctrl_c_stops_valkey_last(
    tmp_path: Path,
) -> None:
    """One stack for the three (starting it is most of the cost)."""
    with DevStack(tmp_path) as dev:
        dev.wait_up()
        _up_means_the_worker_consumes(dev)
        with dev.client() as client:
            job = submit(client, body("from the dev stack", mock={"latency_ms": 1000}))
            assert wait_for_status(client, job["id"], TERMINAL)["status"] == "succeeded"
            failed = submit(client, body("refused", mock={"fault": "invalid_request"}))
            assert wait_for_status(client, failed["id"], TERMINAL)["status"] == "failed"
            cancelled = submit(client, body("cancelled", mock={"latency_ms": 30_000}))
            wait_for_status(client, cancelled["id"], {"running"})
            assert client.post(f"/v1/jobs/{cancelled['id']}/cancel").status_code == 200
            assert wait_for_status(client, cancelled["id"], TERMINAL)["status"] == "cancelled"
            # Before Valkey is killed: Flower's event receiver reconnects a second after
            # it, and task events sent meanwhile (pub/sub) never reach it.
            shown = _flower_shows(dev, job["id"], "SUCCESS")
            assert shown["result"] == "'succeeded'"
            # The job's own time (its call took 1 s), not the tracer's few microseconds.
            assert shown["runtime"] >= 1.0
            # Its id, model and key; never its prompt.
            assert shown["args"].startswith(f"{job['id']} model=mock key=key_")
            assert "from the dev stack" not in json.dumps(shown)
            # A job that did not succeed is never shown as a success.
            shown = _flower_shows(dev, failed["id"], "FAILURE")
            assert f"job {failed['id']} failed" in shown["exception"]
            shown = _flower_shows(dev, cancelled["id"], "FAILURE")
            assert f"job {cancelled['id']} was cancelled" in shown["exception"]
        _valkey_keeps_an_append_only_file_and_comes_back_when_it_dies(dev)
        with dev.client() as client:
            after = submit(client, body("after Valkey came back"))
            assert wait_for_status(client, after["id"], TERMINAL)["status"] == "succeeded"
            in_flight = submit(client, body("at Ctrl-C", mock={"latency_ms": 1000}))
            wait_for_status(client, in_flight["id"], {"running"})
        everything = _ctrl_c_stops_valkey_last(dev)
    assert not [p for p in everything if p.alive()], "a process of relayq dev outlived it"
    valkey_log = (dev.data_dir / "valkey" / "valkey.log").read_text()
    assert "Received SIGTERM" in valkey_log
    assert "Received SIGINT" not in valkey_log, "the terminal's Ctrl-C reached Valkey"
    # The worker finished the job in flight and acknowledged it: Valkey was there.
    assert _status(dev.database, in_flight["id"]) == "succeeded"
    output = dev.output()
    assert "Couldn't ack" not in output
    assert not re.search(r'"level": ?"critical"', output)


def _up_means_the_worker_consumes(dev: DevStack) -> None:
    """Celery logs "ready." before its worker answers a ping: up comes after."""
    output = dev.output()
    assert " ready." in output.split("relayq is up")[0]
    assert KEY in output
    assert f"export RELAYQ_API_URL=http://127.0.0.1:{dev.api_port}" in output


def _valkey_keeps_an_append_only_file_and_comes_back_when_it_dies(dev: DevStack) -> None:
    with dev.valkey() as valkey:
        assert valkey.config_get("appendonly") == {"appendonly": "yes"}
        valkey.set("relayq-dev-test", "kept")
        assert valkey.execute_command("WAITAOF", 1, 0, 5000)[0] == 1  # on disk now
        first = dev.valkey_process()
        os.kill(first.pid, signal.SIGKILL)

        def restarted() -> bool:
            try:
                return int(valkey.info("server")["process_id"]) != first.pid
            except redis.ConnectionError:
                return False

        wait_until(restarted, timeout=15, interval=0.1)
        assert valkey.get("relayq-dev-test") == "kept"
    assert "Valkey exited" in dev.output()


def _flower_shows(dev: DevStack, task_id: str, state: str) -> dict[str, Any]:
    """Flower's task ``task_id`` (a job's id) once its API shows it in ``state``."""
    found: dict[str, Any] = {}

    def shown() -> bool:
        try:
            tasks = httpx.get(f"http://127.0.0.1:{dev.flower_port}/api/tasks", timeout=2)
        except httpx.HTTPError:
            return False
        task = tasks.json().get(task_id) if tasks.status_code == 200 else None
        if task is None or task.get("state") != state:
            return False
        found.update(task)
        return True

    wait_until(shown, timeout=60, interval=0.2)
    return found


def _ctrl_c_stops_valkey_last(dev: DevStack) -> set[Process]:
    """Ctrl-C; Valkey serves until every other process has exited. Returns them all."""
    valkey = dev.valkey_process()
    everything = dev.processes()
    others = everything - {valkey}
    assert len(others) >= 4, "the API, the worker's supervisor and Celery, Flower"
    dev.ctrl_c()

    def valkey_stopped_after_the_rest() -> bool:
        if valkey.alive():
            return False
        assert not [p for p in others if p.alive()], "Valkey stopped before the rest"
        return True

    wait_until(valkey_stopped_after_the_rest, timeout=30, interval=0.01)
    assert dev.process is not None
    assert dev.process.wait(timeout=30) == 0
    return everything | dev.seen
