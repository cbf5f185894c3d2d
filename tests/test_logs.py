"""Logs are JSON lines that keep a record's extra fields."""

from __future__ import annotations

import json
import logging

from relayq.logs import JsonFormatter


def test_a_record_is_one_json_object_with_its_extras() -> None:
    record = logging.makeLogRecord(
        {
            "name": "relayq.test",
            "levelname": "WARNING",
            "msg": "job %s late",
            "args": ("job_1",),
            "job_id": "job_1",
        }
    )

    line = JsonFormatter().format(record)

    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "job job_1 late"
    assert entry["level"] == "warning"
    assert entry["logger"] == "relayq.test"
    assert entry["job_id"] == "job_1"
    assert entry["ts"].endswith("Z")
