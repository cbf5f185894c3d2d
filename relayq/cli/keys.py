"""``relayq keys``: create, list, rotate and revoke API keys in the database directly.

For the operator with the database at hand (the first admin key, say); the
admin API (``/v1/admin/keys``) does the same over HTTP. Each change is
written with its audit entry, whose actor is ``cli``. A running API process
sees a change within its key cache's seconds (``RELAYQ_API__KEY_CACHE_SECONDS``).

Each command imports the store when it runs: ``relayq --help`` needs none of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from rich.table import Table
    from sqlalchemy.ext.asyncio import AsyncSession

    from relayq.store.models import ApiKey

__all__ = ["keys_app"]

keys_app = typer.Typer(no_args_is_help=True, help="API keys.")

console = Console(stderr=True, soft_wrap=True)

CLI_ACTOR = "cli"
"""The audit log's actor for changes made with this command."""

T = TypeVar("T")


def _in_database(act: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``act`` in a session of RELAYQ_DATABASE_URL's database."""
    import asyncio

    from relayq.config.settings import Settings
    from relayq.store import Database

    async def run() -> T:
        database = Database(Settings().database_url)
        try:
            async with database.session() as session:
                return await act(session)
        finally:
            await database.aclose()

    return asyncio.run(run())


def _names(value: str | None) -> list[str] | None:
    return None if value is None else value.replace(",", " ").split()


def _fail(message: str) -> typer.Exit:
    console.print(message)
    return typer.Exit(1)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    admin: Annotated[bool, typer.Option(help="May use the admin API (adds 'admin').")] = False,
    scopes: Annotated[
        str | None,
        typer.Option(
            help="What it may call: jobs chat batches files read admin (default: all "
            "but admin), comma- or space-separated."
        ),
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="The only models it may use, comma-separated (default: all).")
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option(help="How long it works: 30d, 12h, 90m (default: forever).")
    ] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute (default: API's).")] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(help="Unfinished jobs at once (default: the API's).")
    ] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute (default: API's).")] = None,
    budget_usd: Annotated[
        float | None, typer.Option(min=0, help="US dollars the key may spend per period.")
    ] = None,
    budget_tokens: Annotated[
        int | None, typer.Option(min=0, help="Tokens the key may use per period.")
    ] = None,
    budget_period: Annotated[
        str, typer.Option(help="The budget's period, UTC: day or month.")
    ] = "day",
) -> None:
    """Create an API key and print its secret. The secret is shown only this once."""
    import time

    from pydantic import ValidationError

    from relayq.schemas.keys import KeyCreate
    from relayq.schemas.scopes import ALL_SCOPES, DEFAULT_SCOPES
    from relayq.store import key_admin

    if budget_period not in ("day", "month"):
        raise _fail(f"invalid --budget-period {budget_period!r}: use day or month")
    chosen = _names(scopes)
    if admin:
        chosen = [*(DEFAULT_SCOPES if chosen is None else chosen), "admin"]
    try:
        body = KeyCreate(
            name=name,
            scopes=chosen,
            models=_names(models),
            expires_in=expires_in,
            requests_per_minute=rpm,
            max_concurrent_jobs=max_concurrent,
            tokens_per_minute=tpm,
            budget_period=budget_period
            if budget_usd is not None or budget_tokens is not None
            else None,
            budget_usd=budget_usd,
            budget_tokens=budget_tokens,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        hint = f" (known scopes: {' '.join(ALL_SCOPES)})" if field.startswith("scopes") else ""
        raise _fail(f"invalid {field}: {first['msg']}{hint}") from exc
    actor = key_admin.Actor(key_id=CLI_ACTOR)
    created = _in_database(
        lambda session: key_admin.create(session, actor=actor, body=body, now=time.time())
    )
    console.print(
        f"created key {created.id} ({created.name}; scopes: {' '.join(created.scopes)}); "
        "store it now, it is not shown again:"
    )
    print(created.secret)


def _table(rows: list[ApiKey]) -> Table:
    from rich.table import Table

    table = Table()
    # Whole, however narrow the terminal: ids are what the other commands take.
    table.add_column("id", no_wrap=True, min_width=max((len(row.id) for row in rows), default=2))
    table.add_column("name", min_width=8)
    table.add_column("ends with", no_wrap=True)
    table.add_column("scopes")
    table.add_column("expires", no_wrap=True)
    table.add_column("revoked", no_wrap=True)
    for row in rows:
        expires = "" if row.expires_at is None else _when(row.expires_at)[:10]
        table.add_row(
            row.id,
            row.name,
            f"...{row.hint}",
            " ".join(row.scopes),
            expires,
            "yes" if row.revoked_at else "",
        )
    return table


def _when(moment: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never their secrets)."""
    from relayq.store.keys import list_keys

    Console().print(_table(_in_database(list_keys)))


@keys_app.command("rotate")
def keys_rotate(
    key_id: str,
    overlap: Annotated[
        str,
        typer.Option(help="How long the old secret keeps working: 24h, 30m, 7d (0: it stops now)."),
    ] = "0",
) -> None:
    """Give a key a new secret and print it (shown only this once)."""
    import time

    from pydantic import TypeAdapter, ValidationError

    from relayq.schemas.spans import Lifetime, span_seconds
    from relayq.store import key_admin

    try:
        seconds = (
            0.0 if overlap == "0" else span_seconds(TypeAdapter(Lifetime).validate_python(overlap))
        )
    except ValidationError as exc:
        raise _fail(f"invalid --overlap {overlap!r}: give a span such as 24h, 30m or 7d") from exc
    actor = key_admin.Actor(key_id=CLI_ACTOR)
    try:
        rotated = _in_database(
            lambda session: key_admin.rotate(
                session, actor=actor, key_id=key_id, overlap_seconds=seconds, now=time.time()
            )
        )
    except key_admin.KeyNotFound as exc:
        raise _fail(f"no key with id {key_id}") from exc
    except key_admin.KeyChangeRefused as exc:
        raise _fail(exc.message) from exc
    until = rotated.previous_secret_expires_at
    old = (
        "the old secret stopped working"
        if until is None
        else f"the old secret works until {_when(until)}"
    )
    console.print(f"rotated {key_id}; {old}. The new secret, not shown again:")
    print(rotated.secret)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id; requests with it answer 401 from then on."""
    import time

    from relayq.store import key_admin

    now = time.time()
    actor = key_admin.Actor(key_id=CLI_ACTOR)
    try:
        revoked = _in_database(
            lambda session: key_admin.revoke(session, actor=actor, key_id=key_id, now=now)
        )
    except key_admin.KeyNotFound as exc:
        raise _fail(f"no active key with id {key_id}") from exc
    if revoked.revoked_at != now:
        raise _fail(f"no active key with id {key_id} (it was revoked before)")
    console.print(f"revoked {key_id}")
