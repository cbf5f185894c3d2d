"""Fixtures: real Redis, real SQL (SQLite, and PostgreSQL when configured),
and a real relayq stack (API and worker subprocesses) per database."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from relayq.redis.keys import RedisKeys
from relayq.store import Database
from relayq.store.keys import create_key
from tests.fakes.openai_server import FakeOpenAI
from tests.in_process import ScenarioRunner, in_process_scenario
from tests.services import (
    clone_sqlite,
    local_redis_url,
    reset_database,
    run,
    running_valkey,
    scratch_postgres_database,
    worker_index,
    worker_postgres_database,
)
from tests.stack import Stack

_DATABASES = ["sqlite"] + (["postgresql"] if os.environ.get("RELAYQ_TEST_DATABASE_URL") else [])
# Each database gets its own Redis logical database, so their queues never mix.
_REDIS_DB = {"sqlite": 9, "postgresql": 10}


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many test processes ``-n auto`` starts: three per core, at most six.

    Most of a test's time is spent waiting on its stack's processes, so
    three per core keep the cores busy (the suite took 6 minutes with 4 on
    two cores, 5 with 6, and 13 alone). pyproject's addopts make it the
    default; ``-n 0`` runs one test at a time.
    """
    return min(6, 3 * (os.cpu_count() or 1))


_SLOW_SECONDS = 10.0
"""What a ``slow`` test is taken to last when its marker names no ``seconds``."""


_SHARED_STACK_MODULES = frozenset(
    {
        "tests/test_adapters_pipeline.py",
        "tests/test_admin_deployments.py",
        "tests/test_key_tpm.py",
        "tests/test_resilience.py",
    }
)
"""Modules whose tests share a stack of their own (a module fixture): each runs in
one test process per database, which starts that stack once."""


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """How pytest-xdist hands tests out: one at a time, in collection order (the longest
    first: :class:`_LongestFirst`), each :data:`_SHARED_STACK_MODULES` module whole per
    database (spread over every process, each would start its stack again).

    Each process keeps to one database while that database has tests left, as many
    processes to PostgreSQL as its share of the tests: the long runs of both
    databases start at once, and a process sets up each database's shared fixtures
    (its stack) once. (xdist's own ``loadgroup`` marks groups by changing test ids,
    which pytest 9.2 no longer lets a plugin do.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class SharedStackScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module, _, test = nodeid.partition("::")
            if module not in _SHARED_STACK_MODULES:
                return nodeid
            return f"{module}@{_database_of(test)}"

        def _assign_work_unit(self, node: Any) -> None:
            wanted = self._database_for(node)
            for scope in self.workqueue:
                if _database_of(scope) == wanted:
                    self.workqueue.move_to_end(scope, last=False)  # the next one handed out
                    break
            super()._assign_work_unit(node)

        def _database_for(self, node: Any) -> str:
            collection: list[str] = self.collection or []
            share = sum(_database_of(n) == "postgresql" for n in collection) / max(
                1, len(collection)
            )
            on_postgresql = round(len(self.nodes) * share)
            return "postgresql" if self.nodes.index(node) < on_postgresql else "sqlite"

    config.option.loadscopereorder = False  # the order is _LongestFirst's
    return SharedStackScheduling(config, log)


def _database_of(test: str) -> str:
    """The database a test id (or a scope) runs on; SQLite for tests of neither."""
    return "postgresql" if "[postgresql" in test or test.endswith("@postgresql") else "sqlite"


class _LongestFirst:
    """The longest tests first within each database's run of tests.

    pytest-xdist hands tests out in collection order (:func:`pytest_xdist_make_scheduler`),
    so the runs of a minute start early while the quick tests fill the gaps,
    instead of ending the suite alone. pytest has grouped the tests by database
    (a session fixture per database, set up again whenever the database changes):
    the order only changes within each group. Runs after pytest's grouping.
    """

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        runs: list[list[pytest.Item]] = []
        current: str | None = None
        for item in items:
            backend = _backend_of(item)
            if not runs or (backend is not None and backend != current):
                if runs and current is None:
                    current = backend  # the tests before the first database's join its run
                else:
                    runs.append([])
                    current = backend
            runs[-1].append(item)
        # Stable: tests of the same length keep pytest's order (and its fixtures' grouping).
        items[:] = [item for run in runs for item in sorted(run, key=_longest_first)]


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_LongestFirst(), "relayq-longest-first")


def _longest_first(item: pytest.Item) -> float:
    return -_expected_seconds(item)


def _backend_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("backend") if callspec is not None else None
    return backend if isinstance(backend, str) else None


def _expected_seconds(item: pytest.Item) -> float:
    slow = item.get_closest_marker("slow")
    if slow is None:
        return 0.0
    seconds: float = slow.kwargs.get("seconds", _SLOW_SECONDS)
    return seconds


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The base URL of a real Redis: RELAYQ_TEST_REDIS_URL's, the machine's, or an embedded Valkey.

    Two test runs on one machine need servers of their own (each flushes its
    databases), and so do pytest-xdist's workers: the first takes the
    configured or the machine's server, each other one an embedded Valkey.
    """
    url = os.environ.get("RELAYQ_TEST_REDIS_URL") or local_redis_url()
    if url is not None and worker_index() == 0:
        yield url
        return
    with running_valkey() as embedded:
        yield embedded


@pytest.fixture(scope="session", params=_DATABASES)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def sqlite_only(backend: str) -> None:
    """For tests whose subject does not depend on the database: SQLite covers them."""
    if backend == "postgresql":
        pytest.skip("its subject does not depend on the database; SQLite covers it")


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A freshly migrated database of the current backend."""
    if backend == "postgresql":
        url = worker_postgres_database(os.environ["RELAYQ_TEST_DATABASE_URL"])
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


FAKE_OPENAI_KEY = "sk-relayq-test"
CACHE_TTL = 2.0
"""Seconds the shared stack's ``mock-cached`` route keeps answers."""
PRICE = {"input": 2.0, "output": 8.0, "batch_discount": 0.5}
"""The shared stack's ``mock-priced`` route's price, in US dollars per million tokens."""


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    """A wire-level fake of OpenAI's API on 127.0.0.1, shared by the session."""
    with FakeOpenAI(api_key=FAKE_OPENAI_KEY) as server:
        yield server


@pytest.fixture(scope="session")
def stack(
    database_url: str,
    redis_url: str,
    fake_openai: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The shared stack: one API and one (unsupervised) worker on the session's services.

    Models: ``mock`` (the mock provider), ``mock-idle`` (a provider no worker
    consumes, so its jobs stay queued), ``mock-priced`` (priced at :data:`PRICE`),
    ``mock-budgeted`` and ``mock-budgeted-idle`` (dearly priced, capped at 64 output
    tokens, the second consumed by no worker: for budgets), ``chat-only`` (an anthropic
    deployment no worker consumes: a model that serves no embeddings), and
    ``gpt-4o-mini`` (the openai adapter against the fake OpenAI server, upstream model
    ``gpt-4o-mini-2024-07-18``, priced by relayq's default table), and ``gpt-image-1`` and
    ``dall-e-3`` (image models on the same fake); ``gpt-4o-mini-chat`` (the same fake
    through ``openai_compatible``, which does not speak Responses) and
    ``gpt-4o-mini-fallback`` (a deployment on the fake with a wrong key, then
    ``gpt-4o-mini-chat``'s).
    """
    providers = {
        "mock": {"type": "mock", "read_timeout": 5},
        "idle": {"type": "mock"},
        # Tests that inject faults use these, so their breakers, cooldowns and
        # retries never touch the providers other tests run on.
        "faulty": {"type": "mock", "read_timeout": 5},
        # The webhook tests' failures, on a breaker other tests' failures cannot open.
        "hooks-faulty": {"type": "mock", "read_timeout": 5},
        "backup": {"type": "mock", "read_timeout": 5},
        # Streams half its answer, then fails: the stream rule's tests.
        "cut": {"type": "mock", "read_timeout": 5, "options": {"fault": "malformed"}},
        # The same for embeddings' fallback test, on breakers the stream tests never see.
        "embed-cut": {"type": "mock", "read_timeout": 5, "options": {"fault": "malformed"}},
        "embed-backup": {"type": "mock", "read_timeout": 5},
        # And for images' fallback test.
        "image-cut": {"type": "mock", "read_timeout": 5, "options": {"fault": "malformed"}},
        "image-backup": {"type": "mock", "read_timeout": 5},
        # An adapter that serves no embeddings, consumed by no worker: refused at intake.
        "chat-only": {"type": "anthropic", "base_url": "http://127.0.0.1:9", "api_key": "x"},
        "openai": {
            "type": "openai",
            "base_url": fake_openai.base_url,
            "api_key": FAKE_OPENAI_KEY,
            "read_timeout": 5,
        },
        # The same fake through an adapter that does not speak Responses (chat only).
        "openai-chat": {
            "type": "openai_compatible",
            "base_url": fake_openai.base_url,
            "api_key": FAKE_OPENAI_KEY,
            "read_timeout": 5,
        },
        # The fake with a wrong key: every call 401s, and its jobs fall back.
        "openai-badkey": {
            "type": "openai",
            "base_url": fake_openai.base_url,
            "api_key": "sk-wrong",
            "read_timeout": 5,
        },
    }
    routes = {
        "mock": {"provider": "mock", "model": "mock"},
        "mock-idle": {"provider": "idle", "model": "mock"},
        "mock-faulty": {"provider": "faulty", "model": "mock"},
        "mock-faulty-hooks": {"provider": "hooks-faulty", "model": "mock"},
        "gpt-4o-mini": {"provider": "openai", "model": "gpt-4o-mini-2024-07-18"},
        "gpt-4o-mini-chat": {"provider": "openai-chat", "model": "gpt-4o-mini-2024-07-18"},
        # Responses: a native deployment that fails, then one over chat.
        "gpt-4o-mini-fallback": {
            "strategy": "ordered",
            "deployments": [
                {"provider": "openai-badkey", "model": "gpt-4o-mini-2024-07-18"},
                {"provider": "openai-chat", "model": "gpt-4o-mini-2024-07-18"},
            ],
        },
        "gpt-image-1": {"provider": "openai", "model": "gpt-image-1"},
        "dall-e-3": {"provider": "openai", "model": "dall-e-3"},
        "chat-only": {"provider": "chat-only", "model": "claude-3-5-haiku"},
        "mock-embed-cut": {
            "strategy": "ordered",
            "deployments": [
                {"provider": "embed-cut", "model": "mock"},
                {"provider": "embed-backup", "model": "mock"},
            ],
        },
        "mock-image-cut": {
            "strategy": "ordered",
            "deployments": [
                {"provider": "image-cut", "model": "mock"},
                {"provider": "image-backup", "model": "mock"},
            ],
        },
        "mock-cut": {
            "strategy": "ordered",
            "deployments": [
                {"provider": "cut", "model": "mock"},
                {"provider": "backup", "model": "mock"},
            ],
        },
        # Priced (US dollars per million tokens): the budget tests' route.
        "mock-budgeted": {
            "deployments": [
                {
                    "provider": "mock",
                    "model": "mock",
                    "price": {"input": 1000.0, "output": 2000.0, "batch_discount": 0.5},
                }
            ],
            "max_output_tokens": 64,
        },
        "mock-budgeted-idle": {
            "deployments": [
                {
                    "provider": "idle",
                    "model": "mock",
                    "price": {"input": 1000.0, "output": 2000.0, "batch_discount": 0.5},
                }
            ],
            "max_output_tokens": 64,
        },
        "mock-cached": {
            "provider": "mock",
            "model": "mock",
            "aliases": ["mock-cached-alias"],
            "cache": {"enabled": True, "ttl_seconds": CACHE_TTL},
        },
        # Priced: $2 a million prompt tokens, $8 a million completion tokens.
        "mock-priced": {"deployments": [{"provider": "mock", "model": "mock", "price": PRICE}]},
    }
    env = {
        "RELAYQ_PROVIDERS": json.dumps(providers),
        "RELAYQ_ROUTES": json.dumps(routes),
        "RELAYQ_WORKER__PROVIDERS": json.dumps(
            [
                "mock",
                "openai",
                "faulty",
                "hooks-faulty",
                "backup",
                "cut",
                "embed-cut",
                "embed-backup",
                "image-cut",
                "image-backup",
                "openai-chat",
                "openai-badkey",
            ]
        ),
    }
    with Stack(
        database_url=database_url,
        redis_url=redis_url,
        logs=tmp_path_factory.mktemp("logs"),
        env=env,
        supervise=False,
    ) as running:
        running.start_api()
        running.start_worker()
        yield running


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file: fresh SQLite databases are copies of it (clone_sqlite)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "relayq.db"
    reset_database(f"sqlite:///{path}")
    return path


@pytest.fixture
def private_database_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A database of the current backend that no other stack uses.

    For tests that stop parts of their own stack: the shared stack's workers
    would otherwise reconcile and run their jobs.
    """
    if backend == "postgresql":
        with scratch_postgres_database(os.environ["RELAYQ_TEST_DATABASE_URL"]) as url:
            yield url
    else:
        yield clone_sqlite(request.getfixturevalue("sqlite_template"), tmp_path / "private.db")


@pytest.fixture
def cut_breaker_closed(stack: Stack, redis_url: str) -> None:
    """The shared stack's ``cut|mock`` breaker closed, as an operator's reset closes it.

    Each test of an attempt cut mid-stream (``mock-cut``) fails the ``cut``
    deployment a few times before its fallback answers; a few such tests in a
    row would open its breaker, and the next one's job would go to the backup
    at once, never cut. Each starts from a closed breaker instead.
    """
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(RedisKeys("relayq").breaker("cut|mock"))
    finally:
        client.close()


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
def scenario(tmp_path: Path, redis_server: str, sqlite_template: Path) -> ScenarioRunner:
    """Runs an in-process scenario of the core classes (tests/in_process.py) on a fresh
    SQLite file, a flushed Redis database, a new key and a clock the test moves."""
    return in_process_scenario(tmp_path, redis_server, sqlite_template)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path
