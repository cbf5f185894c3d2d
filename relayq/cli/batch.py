"""``relayq batch``: submit a JSONL file as a batch, follow it, fetch its results.

It talks to the HTTP API only (``--api-url``, ``--api-key``; see
relayq/cli/api_client.py), so it works against a remote relayq as well as
``relayq dev``. While it follows a batch the API may go away: it says
"reconnecting…" and carries on when the API is back.

This module is the commands' surface: options, help and exit codes. What a
command does is in relayq/cli/batch_actions.py, imported when the command
runs: httpx, pydantic and the batch schemas cost more to import than all of
``relayq --help`` takes otherwise.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["DEFAULT_API_URL", "ExitCode", "batch_app"]


class ExitCode(IntEnum):
    """What a script waiting on a batch can branch on (2 is click's usage error).

    Named as the final batch statuses they stand for.
    """

    COMPLETED = 0
    FAILED = 1
    EXPIRED = 3
    CANCELLED = 4
    ERROR = 5
    INTERRUPTED = 130


EXIT_HELP = (
    "Exit status: 0 the batch completed (some requests may have failed: see the error "
    "file), 1 it failed (bad lines in the input), 3 it expired, 4 it was cancelled, "
    "5 the API refused a request or no key was given, 130 stopped waiting (Ctrl-C)."
)
DEFAULT_API_URL = "http://127.0.0.1:8000"

batch_app = typer.Typer(
    no_args_is_help=True,
    help="Batches over the HTTP API: submit a JSONL file, follow it, fetch its results.",
)

ApiUrl = Annotated[
    str, typer.Option("--api-url", envvar="RELAYQ_API_URL", help="The relayq API's base URL.")
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="RELAYQ_API_KEY",
        show_default=False,
        help="An API key. Default for a local API: the key `relayq dev` keeps.",
    ),
]
Wait = Annotated[bool, typer.Option(help="Follow the batch to its end.")]
Output = Annotated[
    Path | None, typer.Option(dir_okay=False, help="Save the results here (implies --wait).")
]
ErrorsPath = Annotated[
    Path | None,
    typer.Option(
        "--errors",
        dir_okay=False,
        help="Save failed requests here (default with --output: <name>.errors.jsonl).",
    ),
]


@batch_app.command(epilog=EXIT_HELP)
def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    wait: Wait = False,
    output: Output = None,
    errors: ErrorsPath = None,
    model: Annotated[str | None, typer.Option(help="The model of lines that name none.")] = None,
    completion_window: Annotated[
        str, typer.Option(help="How long the batch may take: 24h, 30m, 90s.")
    ] = "24h",
    metadata: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE stored on the batch; repeatable.")
    ] = None,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Submit FILE as a batch and print its id.

    FILE is JSONL: OpenAI batch lines (custom_id, method, url, body) as they
    are, or chat bodies ({"model", "messages", ...}) or {"prompt": "..."}
    lines, each with an optional custom_id (default: line-<n>).
    """
    from relayq.cli import batch_actions

    batch_actions.submit(
        file,
        wait=wait,
        output=output,
        errors=errors,
        model=model,
        completion_window=completion_window,
        metadata=metadata,
        api_url=api_url,
        api_key=api_key,
    )


@batch_app.command(epilog=EXIT_HELP)
def status(
    batch_id: str,
    wait: Wait = False,
    output: Output = None,
    errors: ErrorsPath = None,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Show a batch; with --wait follow it to its end (and with --output save its results)."""
    from relayq.cli import batch_actions

    batch_actions.status(
        batch_id, wait=wait, output=output, errors=errors, api_url=api_url, api_key=api_key
    )


@batch_app.command()
def cancel(batch_id: str, api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = None) -> None:
    """Cancel a batch: its queued requests end at once, running ones finish."""
    from relayq.cli import batch_actions

    batch_actions.cancel(batch_id, api_url=api_url, api_key=api_key)


@batch_app.command()
def results(
    batch_id: str,
    output: Annotated[
        Path | None, typer.Option(dir_okay=False, help="Default: standard output.")
    ] = None,
    errors: Annotated[
        bool, typer.Option("--errors", help="The error file instead: the failed requests.")
    ] = False,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Download a batch's results (or with --errors its failed requests) as JSONL."""
    from relayq.cli import batch_actions

    batch_actions.results(batch_id, output=output, errors=errors, api_url=api_url, api_key=api_key)


@batch_app.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many batches.")] = 20,
    after: Annotated[str | None, typer.Option(help="Page on after this batch id.")] = None,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """List your batches, newest first."""
    from relayq.cli import batch_actions

    batch_actions.list_batches(limit=limit, after=after, api_url=api_url, api_key=api_key)
