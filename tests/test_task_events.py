"""Celery task events: off by default, and on once asked the way Flower asks."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from relayq.config.settings import Settings
from relayq.queueing.broker import create_celery
from tests.conftest import key_factory
from tests.jobs import body, submit, wait_for_status
from tests.services import running_valkey
from tests.stack import Stack, wait_until

# A stack of its own and a monitor; Celery's events do not depend on the database.
pytestmark = [pytest.mark.slow(seconds=12), pytest.mark.usefixtures("sqlite_only")]


class _Seen:
    """Task events received on the broker, by task id."""

    def __init__(self) -> None:
        self.types: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        if "uuid" in event:
            with self.lock:
                self.types.setdefault(event["uuid"], []).append(event["type"])

    def of(self, task_id: str) -> list[str]:
        with self.lock:
            return list(self.types.get(task_id, []))


def test_task_events_are_off_until_a_monitor_enables_them(
    private_database_url: str, logs: Path
) -> None:
    make_key = key_factory(private_database_url)
    env = {"RELAYQ_WORKER__SUPERVISE": "false"}
    with (
        running_valkey() as redis_url,
        Stack(database_url=private_database_url, redis_url=redis_url, logs=logs, env=env) as stack,
    ):
        stack.start_api()
        stack.start_worker()
        app = create_celery(Settings(redis_url=redis_url))
        seen = _Seen()
        stop = threading.Event()

        def receive() -> None:
            with app.connection_for_read() as connection:
                receiver = app.events.Receiver(connection, handlers={"*": seen.on_event})
                while not stop.is_set():
                    try:
                        receiver.capture(limit=None, timeout=0.5, wakeup=False)
                    except TimeoutError:
                        continue

        listener = threading.Thread(target=receive, daemon=True)
        listener.start()
        time.sleep(1)  # the receiver's queue is bound before any job runs
        try:
            with httpx.Client(
                base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
            ) as client:
                quiet = submit(client, body("unwatched"))["id"]
                assert wait_for_status(client, quiet, {"succeeded"})["status"] == "succeeded"
                # What Flower broadcasts every few seconds while it runs; the worker's
                # reply says it has switched them on (a loaded one may take seconds).
                replies = app.control.enable_events(reply=True, timeout=15)
                assert replies, "no worker answered enable_events"
                watched = submit(client, body("watched"))["id"]
                assert wait_for_status(client, watched, {"succeeded"})["status"] == "succeeded"
                wait_until(lambda: "task-succeeded" in seen.of(watched), timeout=15)
                assert seen.of(quiet) == []
        finally:
            stop.set()
            listener.join(timeout=5)
