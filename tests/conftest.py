"""Fixtures: real Redis, real SQL (SQLite, and PostgreSQL when configured),
and a real relayq stack (API and worker subprocesses) per database."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from relayq.store import Database
from relayq.store.keys import create_key
from tests.services import (
    local_redis_url,
    reset_database,
    run,
    running_valkey,
    scratch_postgres_database,
)
from tests.stack import Stack

_DATABASES = ["sqlite"] + (["postgresql"] if os.environ.get("RELAYQ_TEST_DATABASE_URL") else [])
# Each database gets its own Redis logical database, so their queues never mix.
_REDIS_DB = {"sqlite": 9, "postgresql": 10}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The base URL of a real Redis: the machine's, or an embedded Valkey."""
    url = local_redis_url()
    if url is not None:
        yield url
        return
    with running_valkey() as embedded:
        yield embedded


@pytest.fixture(scope="session", params=_DATABASES)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A freshly migrated database of the current backend."""
    if backend == "postgresql":
        url = os.environ["RELAYQ_TEST_DATABASE_URL"]
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'relayq.db'}"
    reset_database(url)
    return url


@pytest.fixture(scope="session")
def redis_url(redis_server: str, backend: str) -> str:
    url = f"{redis_server}/{_REDIS_DB[backend]}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(scope="session")
def stack(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The shared stack: one API and one worker on the session's services."""
    with Stack(
        database_url=database_url, redis_url=redis_url, logs=tmp_path_factory.mktemp("logs")
    ) as running:
        running.start_api()
        running.start_worker()
        yield running


@pytest.fixture
def private_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of the current backend that no other stack uses.

    For tests that stop parts of their own stack: the shared stack's workers
    would otherwise reconcile and run their jobs.
    """
    if backend == "postgresql":
        with scratch_postgres_database(os.environ["RELAYQ_TEST_DATABASE_URL"]) as url:
            yield url
    else:
        url = f"sqlite:///{tmp_path / 'private.db'}"
        reset_database(url)
        yield url


KeyFactory = Callable[[], str]


def key_factory(database_url: str) -> KeyFactory:
    """Creates a new API key (a new tenant) in ``database_url``; returns its secret."""

    async def create() -> str:
        database = Database(database_url)
        try:
            async with database.session() as session:
                return (await create_key(session, name="test")).secret
        finally:
            await database.aclose()

    return lambda: run(create())


@pytest.fixture
def make_key(database_url: str) -> KeyFactory:
    """Creates a new API key in the shared database and returns its secret."""
    return key_factory(database_url)


@pytest.fixture
def client(stack: Stack, make_key: KeyFactory) -> Iterator[httpx.Client]:
    """An HTTP client of the shared stack, authenticated as a fresh tenant."""
    headers = {"Authorization": f"Bearer {make_key()}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as http:
        yield http


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path
