"""``relayq``: run the stack, migrate the database, manage keys, submit and follow batches."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from relayq.cli.batch import batch_app

if TYPE_CHECKING:
    from rich.table import Table

    from relayq.budgets.reservations import BudgetLimits
    from relayq.config.settings import Settings
    from relayq.store import keys as key_store

# Each command imports what it needs when it runs (the settings, SQLAlchemy,
# Alembic, the store): together they took seconds to import on a loaded
# machine, and `relayq --help` needs none of them. rich's console stays here:
# every command prints with it, and typer's help is drawn with rich anyway.
# tests/test_cli_startup.py checks what importing this module loads.

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, help="relayq: queue-backed LLM completion jobs.")
db_app = typer.Typer(no_args_is_help=True, help="The SQL database.")
config_app = typer.Typer(no_args_is_help=True, help="Provider and route configuration.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys.")
health_app = typer.Typer(no_args_is_help=True, help="Health probes for containers.")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(config_app, name="config")
app.add_typer(batch_app, name="batch")
app.add_typer(health_app, name="health")

console = Console(stderr=True, soft_wrap=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Migrate the database at RELAYQ_DATABASE_URL to the latest schema."""
    from relayq.config.settings import Settings
    from relayq.store.migrate import upgrade

    settings = Settings()
    upgrade(settings.database_url, revision)
    console.print(f"database migrated to {revision}")


async def _create_key(
    settings: Settings,
    name: str,
    *,
    admin: bool,
    rpm: int | None,
    concurrent: int | None,
    budget: BudgetLimits | None = None,
) -> key_store.CreatedKey:
    from relayq.store import Database
    from relayq.store import keys as key_store

    database = Database(settings.database_url)
    try:
        async with database.session() as session:
            return await key_store.create_key(
                session,
                name=name,
                admin=admin,
                requests_per_minute=rpm,
                max_concurrent_jobs=concurrent,
                budget=budget,
            )
    finally:
        await database.aclose()


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    admin: Annotated[bool, typer.Option(help="May use the admin API.")] = False,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute (default: API's).")] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(help="Unfinished jobs at once (default: the API's).")
    ] = None,
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
    import asyncio

    from relayq.budgets.reservations import BudgetLimits
    from relayq.config.settings import Settings

    if budget_period not in ("day", "month"):
        raise typer.BadParameter("use day or month", param_hint="--budget-period")
    budget = BudgetLimits.of(budget_period, budget_usd, budget_tokens)
    created = asyncio.run(
        _create_key(
            Settings(), name, admin=admin, rpm=rpm, concurrent=max_concurrent, budget=budget
        )
    )
    console.print(
        f"created key {created.id} ({created.name}); store it now, it is not shown again:"
    )
    print(created.secret)


async def _list_keys(settings: Settings) -> Table:
    from rich.table import Table

    from relayq.store import Database
    from relayq.store import keys as key_store

    database = Database(settings.database_url)
    try:
        async with database.session() as session:
            rows = await key_store.list_keys(session)
    finally:
        await database.aclose()
    table = Table("id", "name", "ends with", "revoked")
    for row in rows:
        table.add_row(row.id, row.name, f"...{row.hint}", "yes" if row.revoked_at else "")
    return table


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never their secrets)."""
    import asyncio

    from relayq.config.settings import Settings

    Console().print(asyncio.run(_list_keys(Settings())))


async def _revoke(settings: Settings, key_id: str) -> bool:
    from relayq.store import Database
    from relayq.store import keys as key_store

    database = Database(settings.database_url)
    try:
        async with database.session() as session:
            return await key_store.revoke_key(session, key_id=key_id)
    finally:
        await database.aclose()


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id; requests with it answer 401 from then on."""
    import asyncio

    from relayq.config.settings import Settings

    if not asyncio.run(_revoke(Settings(), key_id)):
        console.print(f"no active key with id {key_id}")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Run a Celery worker on every provider queue; extra options go to Celery."""
    os.execv(sys.executable, [sys.executable, "-m", "worker", *ctx.args])


@config_app.command("check")
def config_check(path: Path) -> None:
    """Validate a routing file (providers, routes, adapter options) without starting anything."""
    from relayq.cli.config_check import check_routing_file

    report = check_routing_file(path)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if report.error:
        console.print(f"[red]error:[/red] {report.error}")
        raise typer.Exit(1)
    console.print(f"[green]ok[/green]: {report.summary}")


_PROBE_SECONDS = 3.0
"""How long the worker probe waits for Redis: a probe that hangs is one that fails."""


def _worker_here(settings: Settings, host: str) -> str | None:
    """Why no worker process on ``host`` counts as alive; None when one does."""
    import asyncio
    import time

    import redis.asyncio as aioredis

    from relayq.observability.consumers import Consumer, consumers

    async def read() -> list[Consumer]:
        redis = aioredis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=_PROBE_SECONDS,
            socket_timeout=_PROBE_SECONDS,
        )
        try:
            return await consumers(redis, key_prefix=settings.key_prefix)
        finally:
            await redis.aclose()

    here = [consumer for consumer in asyncio.run(read()) if consumer.host == host]
    latest = max((consumer.beat_at for consumer in here), default=None)
    if latest is None:
        return f"no relayq worker on {host} has beat"
    age, window = time.time() - latest, settings.worker_window
    if age > window:
        return f"no relayq worker on {host} beat in the last {window:g} s (last {age:.0f} s ago)"
    return None


@health_app.command("worker")
def health_worker() -> None:
    """Exit 0 if a worker process on this host beat within the window, else 1.

    For a worker container's health check: the probe runs in the container, so it
    sees the worker's hostname. The window is RELAYQ_HEALTH__WORKER_WINDOW_SECONDS
    (three worker heartbeats by default).
    """
    import socket

    from redis.exceptions import RedisError

    from relayq.config.settings import Settings

    host = socket.gethostname()
    try:
        problem = _worker_here(Settings(), host)
    except RedisError as exc:
        typer.echo(f"unhealthy: Redis did not answer ({exc.__class__.__name__}: {exc})", err=True)
        raise typer.Exit(1) from exc
    if problem is not None:
        typer.echo(f"unhealthy: {problem}", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: a relayq worker on {host} beat within the window")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flower(ctx: typer.Context) -> None:
    """Run Flower on relayq's Celery app; extra options go to Flower (e.g. --port)."""
    celery = [sys.executable, "-m", "celery", "-A", "relayq.celery_app", "flower"]
    os.execv(sys.executable, [*celery, *ctx.args])


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Default: RELAYQ_API__HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: RELAYQ_API__PORT.")] = None,
) -> None:
    """Run the HTTP API with uvicorn."""
    from relayq.config.settings import Settings

    settings = Settings()
    os.execv(
        sys.executable,
        [
            sys.executable,
            "-m",
            "uvicorn",
            "api.app:create_app",
            "--factory",
            "--host",
            host or settings.api.host,
            "--port",
            str(port or settings.api.port),
            "--no-access-log",
        ],
    )


@app.command()
def dev(
    api_port: Annotated[int, typer.Option(help="Port of the API.")] = 8000,
    flower_port: Annotated[int, typer.Option(help="Port of Flower.")] = 5555,
) -> None:
    """Start the whole stack on embedded defaults; Ctrl-C stops it all."""
    from relayq.cli.dev import run_dev_stack
    from relayq.config.settings import Settings

    raise typer.Exit(run_dev_stack(Settings(), api_port=api_port, flower_port=flower_port))


def main() -> None:
    app()
