"""Turning a file of prompts or chat bodies into OpenAI batch lines, a line at a time."""

from __future__ import annotations

import json
from typing import IO

__all__ = ["InputError", "LineError", "request_line", "write_requests"]


class LineError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")


class InputError(Exception):
    """Lines the CLI cannot turn into batch requests: all of them, not just the first."""

    def __init__(self, errors: list[LineError]) -> None:
        super().__init__(f"{len(errors)} lines cannot be converted")
        self.errors = errors


def request_line(raw: bytes, *, number: int, model: str | None) -> bytes:
    """The OpenAI batch line for one input line.

    A chat body (``messages``) or ``{"prompt": ...}`` becomes a batch line;
    anything else goes as it is (with ``model`` filled in its body), so the
    API validates it and reports a bad one by line number, in its own words.
    """
    try:
        item = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(item, dict):
        return raw
    if "body" in item:
        body = item["body"]
        if model is None or not isinstance(body, dict) or "model" in body:
            return raw
        return _dumped({**item, "body": {**body, "model": model}})
    if "messages" not in item and "prompt" not in item:
        return raw
    custom_id = item.pop("custom_id") if "custom_id" in item else f"line-{number}"
    if "prompt" in item:
        if "messages" in item:
            raise LineError(number, 'has both "prompt" and "messages": give one of them')
        prompt = item.pop("prompt")
        if not isinstance(prompt, str):
            raise LineError(number, '"prompt" must be a string')
        item["messages"] = [{"role": "user", "content": prompt}]
    if "model" not in item:
        if model is None:
            raise LineError(number, 'no "model": give the line one, or pass --model')
        item["model"] = model
    return _dumped(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": item}
    )


def _dumped(item: object) -> bytes:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()


def write_requests(source: IO[bytes], sink: IO[bytes], *, model: str | None) -> int:
    """Convert ``source`` line by line into ``sink``; the number of requests.

    Streams: the file is never all in memory. Every line keeps its number,
    blank ones too, so the API's errors name the caller's lines; all lines
    are checked before failing, so one run shows every local error.
    """
    errors: list[LineError] = []
    requests = 0
    for number, raw in enumerate(source, start=1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            sink.write(b"\n")
            continue
        requests += 1
        try:
            sink.write(request_line(line, number=number, model=model) + b"\n")
        except LineError as exc:
            errors.append(exc)
    if requests == 0:
        errors.append(LineError(1, "the file has no requests"))
    if errors:
        raise InputError(errors)
    return requests
