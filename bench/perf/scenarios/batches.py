"""Batch intake: a 50,000-line, ~50 MB file uploaded, validated, stored and released.

Measured through the API as a caller sees it: the upload (``POST
/v1/files``, streamed from disk), then ``POST /v1/batches`` until the batch
is ``in_progress`` (every line checked and stored as a job, the first
window of requests released to the queue), and the API process's peak
memory over its memory before (``VmHWM`` - ``VmRSS`` from /proc). That
batch is then cancelled, and its 50 MB input file downloaded through ``GET
/v1/files/{id}/content``, the route (and storage read) every results file
takes. A smaller batch (5,000 requests) then runs to ``completed``: its
rate, and the download of its output file. The targets are the batches
issue's: accepted in under 10 s, API memory growth under 150 MB, results
out at over 20 MB/s. The intake has no direct call to compare with: its
figures are absolute.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.perf.scenarios.base import Context, Figure, RunOptions, ScenarioResult, poll_until
from bench.perf.stack import BENCH_MODEL, StackConfig

__all__ = ["run", "stack"]

LINES = 50_000
QUICK_LINES = 5_000
RUN_LINES = 5_000
"""The batch run to its end (at relayq's present job rate, 50,000 would take half an hour)."""
LINE_BYTES = 1_000
ACCEPT_SECONDS = 10.0
MEMORY_MB = 150.0
DOWNLOAD_MB_S = 20.0
_RUN_LIMIT_SECONDS = 1800.0
_FINAL = {"completed", "failed", "expired", "cancelled"}


def stack(options: RunOptions) -> StackConfig:
    files = tempfile.mkdtemp(prefix="relayq-bench-files-")
    return StackConfig(
        workers=options.workers,
        concurrency=500,
        database=options.database,
        redis=options.redis,
        log_level=options.log_level,
        env={"RELAYQ_FILES__STORAGE_DIR": files},
    )


def write_input(path: Path, lines: int) -> int:
    """A batch input file of ``lines`` chat requests of about LINE_BYTES each; its size."""
    with path.open("w") as out:
        for i in range(lines):
            line: dict[str, Any] = {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": _body(""),
            }
            pad = max(0, LINE_BYTES - len(json.dumps(line)) - 14)
            line["body"] = _body(f"Question {i}: " + "x" * pad)
            out.write(json.dumps(line) + "\n")
    return path.stat().st_size


def _body(text: str) -> dict[str, Any]:
    return {
        "model": BENCH_MODEL,
        "messages": [{"role": "user", "content": text}],
        "bench": {"latency_ms": 0, "tokens": 8, "interval_ms": 0},
    }


def _memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"{field} not in /proc/{pid}/status")


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    if response.status >= 400:
        raise RuntimeError(
            f"{response.method} {response.url}: {response.status} {await response.text()}"
        )
    answer: dict[str, Any] = await response.json()
    return answer


async def run(ctx: Context) -> ScenarioResult:
    """The 50,000-line intake (then cancelled), and a smaller batch run to its end."""
    lines = QUICK_LINES if ctx.options.quick else LINES
    headers = {"Authorization": f"Bearer {ctx.stack.api_key}"}
    intake = await _intake(ctx, lines, headers)
    figures = [
        Figure(
            "batch accepted (upload, validate, store, release)",
            "s",
            intake["accepted_s"],
            None,
            None,
            f"< {ACCEPT_SECONDS:.0f} s",
            intake["accepted_s"] < ACCEPT_SECONDS,
            note=f"{lines} lines, {intake['bytes'] / 1e6:.1f} MB; upload "
            f"{intake['upload_s']:.2f} s, validated and stored in "
            f"{intake['accepted_s'] - intake['upload_s']:.2f} s",
        ),
        Figure(
            "API memory growth over the intake",
            "MB",
            intake["api_growth_mb"],
            None,
            None,
            f"< {MEMORY_MB:.0f} MB",
            intake["api_growth_mb"] < MEMORY_MB,
            note=f"RSS before {intake['api_rss_before_mb']:.0f} MB",
        ),
    ]
    rate, size = await _download(ctx, intake["input_file_id"], headers)
    figures.append(
        _download_figure("file download (the input file, same route as results)", rate, size)
    )
    completed = await _run_to_end(
        ctx, RUN_LINES if not ctx.options.quick else QUICK_LINES // 5, headers
    )
    notes: list[str] = [
        f"the {lines}-line batch was cancelled once accepted (its run is not timed)"
    ]
    if completed is None:
        notes.append(f"the smaller batch did not complete within {_RUN_LIMIT_SECONDS:.0f} s")
    else:
        figures.extend(completed)
    return ScenarioResult(figures=figures, data=intake, notes=notes)


async def _intake(ctx: Context, lines: int, headers: dict[str, str]) -> dict[str, Any]:
    """Upload and create a batch of ``lines``; time it until ``in_progress``, then cancel it."""
    api = ctx.stack.api
    assert api is not None
    base = ctx.stack.api_url
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "input.jsonl"
        size = await asyncio.to_thread(write_input, source, lines)
        before = _memory_mb(api.pid, "VmRSS")
        started = time.perf_counter()
        uploaded = await _upload(ctx, source, headers)
        upload_s = time.perf_counter() - started
        batch = await _create(ctx, uploaded["id"], headers)
        seen = await _until(ctx, batch["id"], _FINAL | {"in_progress"}, headers, every=0.05)
        accepted_s = time.perf_counter() - started
        growth = _memory_mb(api.pid, "VmHWM") - before
    async with ctx.session.post(f"{base}/v1/batches/{batch['id']}/cancel", headers=headers) as r:
        await _json(r)
    return {
        "lines": lines,
        "bytes": size,
        "upload_s": upload_s,
        "accepted_s": accepted_s,
        "status_after_intake": seen["status"] if seen else "unknown",
        "api_rss_before_mb": before,
        "api_growth_mb": growth,
        "input_file_id": uploaded["id"],
    }


async def _run_to_end(ctx: Context, lines: int, headers: dict[str, str]) -> list[Figure] | None:
    """A batch of ``lines`` run to its end: its rate, its results' writing and download."""
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "run.jsonl"
        await asyncio.to_thread(write_input, source, lines)
        started = time.perf_counter()
        uploaded = await _upload(ctx, source, headers)
        batch = await _create(ctx, uploaded["id"], headers)
    seen = await _until(ctx, batch["id"], _FINAL, headers, every=0.5, limit=_RUN_LIMIT_SECONDS)
    if seen is None or seen["status"] != "completed" or not seen.get("output_file_id"):
        return None
    run_s = time.perf_counter() - started
    rate, size = await _download(ctx, seen["output_file_id"], headers)
    return [
        Figure(
            "batch run to completed (mock latency 0)",
            "requests/s",
            lines / run_s,
            None,
            None,
            "context",
            None,
            note=f"{lines} requests in {run_s:.0f} s; results written between finalizing_at "
            f"and completed_at ({seen['completed_at'] - seen['finalizing_at']} s, whole seconds)",
        ),
        _download_figure("results file download", rate, size),
    ]


async def _upload(ctx: Context, source: Path, headers: dict[str, str]) -> dict[str, Any]:
    with source.open("rb") as stream:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", stream, filename=source.name)
        url = f"{ctx.stack.api_url}/v1/files"
        async with ctx.session.post(url, data=form, headers=headers) as response:
            return await _json(response)


async def _create(ctx: Context, file_id: str, headers: dict[str, str]) -> dict[str, Any]:
    url = f"{ctx.stack.api_url}/v1/batches"
    async with ctx.session.post(url, json={"input_file_id": file_id}, headers=headers) as r:
        return await _json(r)


async def _until(
    ctx: Context,
    batch_id: str,
    statuses: set[str],
    headers: dict[str, str],
    *,
    every: float,
    limit: float | None = None,
) -> dict[str, Any] | None:
    """The batch once its status is one of ``statuses`` (None if ``limit`` passed first)."""
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        url = f"{ctx.stack.api_url}/v1/batches/{batch_id}"
        async with ctx.session.get(url, headers=headers) as answer:
            seen.update(await _json(answer))
        return seen["status"] in statuses

    return seen if await poll_until(reached, every=every, limit=limit) else None


def _download_figure(name: str, rate: float, size: int) -> Figure:
    """A download's rate against the target, with the file's size."""
    return Figure(
        name,
        "MB/s",
        rate,
        None,
        None,
        f"> {DOWNLOAD_MB_S:.0f} MB/s",
        rate > DOWNLOAD_MB_S,
        note=f"{size / 1e6:.1f} MB",
    )


async def _download(ctx: Context, file_id: str, headers: dict[str, str]) -> tuple[float, int]:
    """MB/s of one download of the file, read to the end (its bytes)."""
    received = 0
    started = time.perf_counter()
    url = f"{ctx.stack.api_url}/v1/files/{file_id}/content"
    async with ctx.session.get(url, headers=headers) as response:
        async for chunk in response.content.iter_chunked(1 << 20):
            received += len(chunk)
    return received / 1e6 / (time.perf_counter() - started), received
