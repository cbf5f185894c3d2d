"""The two ways a chaos run kills a worker: the machine lost whole, or its Celery process alone.

``python -m worker`` is a supervisor with the Celery worker as its child
(worker/supervisor.py). Which of the two dies decides how soon the jobs come
back: a supervisor that survives hands its dead child's jobs back at once
(relayq/recovery/handback.py); with the supervisor gone too, the new worker started in
its place does, once the dead one has missed three heartbeats and its own have
held for three (about 20 s on the shipped 5 s beat).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from tests.stack import Stack, wait_until

__all__ = ["KillMode", "kill_and_replace"]

_READY_TIMEOUT_SECONDS = 90.0
"""The supervisor's restart backoff doubles with each quick death (up to 30 s), and
Celery's start-up takes seconds on a busy machine."""


class KillMode(str, Enum):
    MACHINE = "machine"
    """SIGKILL to the worker's process group, supervisor included, as when a machine
    dies; a new worker is started in its place."""
    PROCESS = "process"
    """SIGKILL to the supervised Celery process alone; its supervisor hands back its
    jobs and starts it again."""


def kill_and_replace(
    stack: Stack,
    workers: list[subprocess.Popen[bytes]],
    *,
    victim: int,
    mode: KillMode,
    note: Callable[[str], None],
) -> None:
    """Kill ``workers[victim]`` as ``mode`` says and wait until a worker consumes again in
    its place (``workers`` is updated); ``note`` hears of the kill and of the return."""
    worker = workers[victim]
    if mode is KillMode.MACHINE:
        stack.kill_worker(worker)
        note(f"SIGKILL worker pid {worker.pid} with its supervisor")
        workers[victim] = stack.start_worker()
        note(f"new worker pid {workers[victim].pid} ready")
        return
    log = _log_of(stack, worker)
    offset = log.stat().st_size
    celery = _celery_of(worker)
    os.kill(celery, signal.SIGKILL)
    note(f"SIGKILL Celery pid {celery} (its supervisor, pid {worker.pid}, lives)")

    def ready_again() -> bool:
        if worker.poll() is not None:
            raise AssertionError(f"the supervisor exited; see {log}")
        return b" ready." in log.read_bytes()[offset:]

    wait_until(ready_again, timeout=_READY_TIMEOUT_SECONDS, interval=0.1)
    note(f"Celery pid {_celery_of(worker)} ready, started again by its supervisor")


def _log_of(stack: Stack, worker: subprocess.Popen[bytes]) -> Path:
    # tests/stack.py names a worker's log after its place in the stack's list.
    return stack.logs / f"worker-{stack.workers.index(worker)}.log"


def _celery_of(supervisor: subprocess.Popen[bytes]) -> int:
    """The supervisor's Celery child (waiting for it while the supervisor restarts one)."""
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    while True:
        children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text()
        if children.split():
            [child] = children.split()
            return int(child)
        if time.monotonic() > deadline:
            raise AssertionError(f"supervisor pid {supervisor.pid} has no worker process")
        time.sleep(0.1)
