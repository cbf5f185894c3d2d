"""What each ``relayq batch`` command does: talk to the API, report, choose the exit status.

relayq/cli/batch.py declares the commands (options, help, exit codes) and
imports this module only when one of them runs, so that ``relayq --help``
and every other command start without httpx, pydantic and the batch schemas.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from relayq.cli.api_client import (
    ApiClient,
    ApiError,
    create_batch_retrying,
    dev_api_key,
    follow_batch,
    save_file,
)
from relayq.cli.batch import ExitCode
from relayq.cli.batch_input import InputError, write_requests
from relayq.cli.progress import ProgressDisplay, duration
from relayq.schemas.batches import BatchObject, BatchStatus

__all__ = ["cancel", "list_batches", "results", "status", "submit"]

_SHOWN_ERRORS = 20

console = Console(stderr=True, soft_wrap=True)


@contextmanager
def _reporting_errors() -> Iterator[None]:
    """An API error ends the command with the API's message and exit status 5."""
    try:
        yield
    except ApiError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(ExitCode.ERROR) from None


def _client(api_url: str, api_key: str | None) -> ApiClient:
    key = api_key or dev_api_key(api_url)
    if not key:
        console.print(
            "[red]error:[/red] no API key: pass --api-key KEY or set RELAYQ_API_KEY "
            "(an admin makes one with `relayq keys create --name NAME`)."
        )
        raise typer.Exit(ExitCode.ERROR)
    return ApiClient(base_url=api_url, api_key=key)


def _metadata(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    for pair in pairs:
        if "=" not in pair:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--metadata")
    return dict(pair.split("=", 1) for pair in pairs)


def _counts(batch: BatchObject) -> str:
    counts = batch.request_counts
    return f"{counts.total} requests, {counts.completed} succeeded, {counts.failed} failed"


def _took(batch: BatchObject) -> str:
    ended = batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at
    return "" if ended is None else f" in {duration(ended - batch.created_at)}"


def _when(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _save(client: ApiClient, file_id: str, path: Path) -> int:
    def on_retry(reason: str, delay: float) -> None:
        console.print(f"reconnecting… ({escape(reason)}); next try in {delay:.1f}s")

    return save_file(client, file_id, path, on_retry=on_retry)


def _finish(
    client: ApiClient, batch: BatchObject, *, output: Path | None, errors: Path | None
) -> ExitCode:
    """Save what the ended batch produced and print a summary; the exit status."""
    if batch.status is BatchStatus.FAILED:
        items = batch.errors.data if batch.errors else []
        console.print(f"batch {batch.id} failed{_took(batch)}: {len(items)} errors in its input")
        for item in items:
            where = "batch" if item.line is None else f"line {item.line}"
            console.print(f"  {where}: {item.code}: {escape(item.message)}")
        return ExitCode.FAILED
    if errors is None and output is not None:
        errors = output.with_name(f"{output.stem}.errors.jsonl")
    saved = [
        f"  {kind:<8} {path} ({_save(client, file_id, path)} lines)"
        for kind, file_id, path in (
            ("results", batch.output_file_id, output),
            ("errors", batch.error_file_id, errors),
        )
        if file_id is not None and path is not None
    ]
    console.print(f"batch {batch.id} {batch.status.value}{_took(batch)}: {_counts(batch)}")
    for line in saved:
        console.print(escape(line))
    if output is None and batch.output_file_id is not None:
        console.print(f"  results: relayq batch results {batch.id} --output results.jsonl")
    return ExitCode[batch.status.name]


def _wait_and_finish(
    client: ApiClient, batch_id: str, *, output: Path | None, errors: Path | None
) -> ExitCode:
    """Follow the batch to its end, then finish; Ctrl-C stops the waiting, not the batch."""
    try:
        with ProgressDisplay(console) as display:
            batch = follow_batch(client, batch_id, watcher=display)
    except KeyboardInterrupt:
        resume = f"relayq batch status {batch_id} --wait"
        if output is not None:
            resume += f" --output {output}"
        console.print(f"stopped waiting; batch {batch_id} keeps running. Resume with:\n  {resume}")
        return ExitCode.INTERRUPTED
    return _finish(client, batch, output=output, errors=errors)


def _uploaded_batch(
    client: ApiClient,
    path: Path,
    *,
    model: str | None,
    completion_window: str,
    metadata: dict[str, str] | None,
) -> BatchObject:
    """Convert ``path`` into a temporary file of batch lines, upload it, create the batch."""
    with path.open("rb") as source, tempfile.TemporaryFile() as converted:
        try:
            requests = write_requests(source, converted, model=model)
        except InputError as exc:
            for error in exc.errors[:_SHOWN_ERRORS]:
                console.print(f"[red]error:[/red] {escape(str(path))}: {escape(str(error))}")
            if len(exc.errors) > _SHOWN_ERRORS:
                console.print(f"… and {len(exc.errors) - _SHOWN_ERRORS} more lines with errors")
            raise typer.Exit(ExitCode.FAILED) from None
        converted.seek(0)
        uploaded = client.upload_batch_file(converted, filename=path.name)
    batch = create_batch_retrying(
        client,
        input_file_id=uploaded.id,
        completion_window=completion_window,
        metadata=metadata,
        on_retry=lambda reason, delay: console.print(
            f"reconnecting… ({escape(reason)}); creating the batch again in {delay:.1f}s"
        ),
    )
    console.print(f"created batch {batch.id}: {requests} requests from {escape(str(path))}")
    return batch


def submit(
    file: Path,
    *,
    wait: bool,
    output: Path | None,
    errors: Path | None,
    model: str | None,
    completion_window: str,
    metadata: list[str] | None,
    api_url: str,
    api_key: str | None,
) -> None:
    """``relayq batch submit``: upload FILE as a batch, print its id, maybe follow it."""
    meta = _metadata(metadata)
    with _client(api_url, api_key) as client, _reporting_errors():
        batch = _uploaded_batch(
            client, file, model=model, completion_window=completion_window, metadata=meta
        )
        print(batch.id, flush=True)
        if wait or output is not None or errors is not None:
            raise typer.Exit(_wait_and_finish(client, batch.id, output=output, errors=errors))


def status(
    batch_id: str,
    *,
    wait: bool,
    output: Path | None,
    errors: Path | None,
    api_url: str,
    api_key: str | None,
) -> None:
    """``relayq batch status``: show a batch, or follow it to its end."""
    with _client(api_url, api_key) as client, _reporting_errors():
        if wait or output is not None or errors is not None:
            raise typer.Exit(_wait_and_finish(client, batch_id, output=output, errors=errors))
        batch = client.get_batch(batch_id)
    out = Console(soft_wrap=True)
    out.print(f"{batch.id}  {batch.status.value}{_took(batch)}")
    out.print(f"  requests  {_counts(batch)}")
    out.print(f"  created   {_when(batch.created_at)}")
    for label, file_id in (("output", batch.output_file_id), ("errors", batch.error_file_id)):
        if file_id is not None:
            out.print(f"  {label:<9} {file_id}")
    for item in batch.errors.data if batch.errors else []:
        out.print(f"  line {item.line}: {item.code}: {escape(item.message)}")


def cancel(batch_id: str, *, api_url: str, api_key: str | None) -> None:
    """``relayq batch cancel``."""
    with _client(api_url, api_key) as client, _reporting_errors():
        batch = client.cancel_batch(batch_id)
    console.print(
        f"batch {batch.id} is {batch.status.value} ({_counts(batch)}); "
        f"`relayq batch status {batch.id} --wait` follows it to its end."
    )


def results(
    batch_id: str, *, output: Path | None, errors: bool, api_url: str, api_key: str | None
) -> None:
    """``relayq batch results``: the output (or error) file, to ``output`` or standard output."""
    with _client(api_url, api_key) as client, _reporting_errors():
        batch = client.get_batch(batch_id)
        file_id = batch.error_file_id if errors else batch.output_file_id
        if file_id is None:
            kind = "error" if errors else "output"
            console.print(f"batch {batch.id} ({batch.status.value}) has no {kind} file")
            raise typer.Exit(ExitCode.FAILED)
        if output is None:
            client.download_file(file_id, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            console.print(f"saved {_save(client, file_id, output)} lines to {output}")


def list_batches(*, limit: int, after: str | None, api_url: str, api_key: str | None) -> None:
    """``relayq batch list``: a table of the key's batches, newest first."""
    with _client(api_url, api_key) as client, _reporting_errors():
        page = client.list_batches(limit=limit, after=after)
    table = Table(box=None, pad_edge=False)
    # Whole ids, even on a narrow terminal or a pipe: they are what the other commands take.
    table.add_column("id", no_wrap=True, min_width=max((len(b.id) for b in page.data), default=2))
    for name in ("status", "done/total", "failed", "created"):
        table.add_column(name)
    for batch in page.data:
        counts = batch.request_counts
        done = f"{counts.completed + counts.failed}/{counts.total}"
        table.add_row(
            batch.id, batch.status.value, done, str(counts.failed), _when(batch.created_at)[5:16]
        )
    Console().print(table)
    if page.has_more:
        console.print(f"more: relayq batch list --after {page.last_id}")
