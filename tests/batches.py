"""Helpers for tests of files and batches."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx

from tests.stack import wait_until

__all__ = ["FINAL", "jsonl", "request_line", "upload", "wait_for_batch"]

FINAL = {"completed", "failed", "expired", "cancelled"}


def request_line(
    custom_id: str, text: str = "Hello", *, model: str = "mock", **body: Any
) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )


def upload(client: httpx.Client, content: bytes, *, purpose: str = "batch") -> dict[str, Any]:
    response = client.post(
        "/v1/files",
        files={"file": ("requests.jsonl", io.BytesIO(content), "application/jsonl")},
        data={"purpose": purpose},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def wait_for_batch(
    client: httpx.Client, batch_id: str, statuses: set[str] = FINAL, *, timeout: float = 60
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> bool:
        response = client.get(f"/v1/batches/{batch_id}")
        assert response.status_code == 200, response.text
        seen.update(response.json())
        return seen["status"] in statuses

    wait_until(reached, timeout=timeout, interval=0.2)
    return seen
