"""Engines and sessions, for SQLite (WAL) and PostgreSQL alike."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = ["Database", "async_url", "sync_url"]

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def _with_driver(url: str, drivers: dict[str, str]) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in drivers:
        supported = ", ".join(sorted(drivers))
        raise ValueError(f"unsupported database {backend!r} in {url!r}; use one of: {supported}")
    return parsed.set(drivername=drivers[backend])


def async_url(url: str) -> URL:
    """``url`` with the asyncio driver relayq uses for its backend."""
    return _with_driver(url, _ASYNC_DRIVERS)


def sync_url(url: str) -> URL:
    """``url`` with the blocking driver used by migrations."""
    return _with_driver(url, _SYNC_DRIVERS)


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the API read while a worker writes; waits instead of 'locked'."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


class Database:
    """An async engine and its session factory, opened once per process."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        target = async_url(url)
        options: dict[str, Any] = {
            # Every job row carries its request and response as JSON: orjson
            # encodes and decodes them several times faster than json.
            "json_serializer": _json_text,
            "json_deserializer": orjson.loads,
        }
        if target.get_backend_name() == "postgresql":
            # A server can restart under us: check a connection before handing it out.
            options.update(pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=True)
        else:
            # SQLite has one writer at a time. Connections of one process that
            # contend for it wait in SQLite's busy handler, which sleeps in steps
            # of up to 100 ms; with one connection per process they queue here,
            # in order, without sleeping (and a file needs no pre-ping).
            options.update(pool_size=1, max_overflow=0, pool_timeout=60)
        self.engine: AsyncEngine = create_async_engine(target, **options)
        if target.get_backend_name() == "sqlite":
            event.listen(self.engine.sync_engine, "connect", sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> AsyncSession:
        return self.sessions()

    async def aclose(self) -> None:
        await self.engine.dispose()
