"""Waiting for an answer to reach the response cache (the worker stores it just after the
job's row says it succeeded), for tests of cached answers."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.jobs import submit

__all__ = ["until_cached"]


def until_cached(client: httpx.Client, payload: dict[str, Any], within: float = 10.0) -> None:
    """Submit ``payload`` to ``/v1/jobs`` until it is answered from the cache (each early
    one is an ordinary job of its own); fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not submit(client, payload)["cached"]:
        assert time.monotonic() < deadline, f"not cached within {within} s"
        time.sleep(0.1)
