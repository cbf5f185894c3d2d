"""Keeping a worker process alive: restart it when it dies, and hand its jobs back.

Celery 5.7's consumer can exit with "Unrecoverable error" when the broker
connection drops mid-flight (a Redis restart), instead of reconnecting; a
process can also be killed. So ``python -m worker`` runs the Celery worker as
a child and starts it again, with backoff, whenever it exits without being
asked to. Each child gets an instance id of its own; when one dies, the
supervisor hands back at once every job it held or had taken
(:func:`relayq.recovery.handback.hand_back`), rather than leave them to their leases.
SIGTERM and SIGINT are passed on and end the supervisor once the child has
stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from types import FrameType

from relayq.config.settings import Settings

__all__ = ["supervise"]

log = logging.getLogger(__name__)

_STABLE_SECONDS = 60.0
"""A child that ran this long resets the restart backoff."""


def supervise(argv: Sequence[str], *, settings: Settings, max_backoff: float = 30.0) -> int:
    """Run ``python -m worker argv`` unsupervised, again whenever it exits unasked.

    Returns the child's exit status once SIGTERM or SIGINT stopped it.
    """
    stopping: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    failures = 0
    while True:
        started = time.monotonic()
        born = time.time()
        instance = uuid.uuid4().hex
        env = {
            **os.environ,
            "RELAYQ_WORKER__SUPERVISE": "false",
            "RELAYQ_WORKER__INSTANCE": instance,
        }
        child = subprocess.Popen([sys.executable, "-m", "worker", *argv], env=env)
        status = child.wait()
        if stopping:
            return status
        _hand_back(settings, instance, born)
        # Exited without being asked: with any status (Celery's "unrecoverable
        # error" path can exit 0), the worker is gone and must come back.
        failures = 0 if time.monotonic() - started > _STABLE_SECONDS else failures + 1
        delay = min(max_backoff, 0.5 * 2 ** max(0, failures - 1))
        log.error("worker exited with status %s; starting it again in %.1f s", status, delay)
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return status


def _hand_back(settings: Settings, instance: str, since: float) -> None:
    """The dead child's jobs go back to the queue now; leases are the net if this fails."""
    # Imported here: the store and the broker are needed only once a child has died,
    # and a supervisor that loaded them at start took most of a second of CPU per start.
    from relayq.recovery.handback import hand_back

    try:
        hand_back(settings, instance, since=since)
    except Exception:
        log.exception("jobs of worker %s not handed back; their leases will", instance)
