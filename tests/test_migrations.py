"""The migrations build the tables the models declare, and carry existing keys across."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from relayq.store.database import sync_url
from relayq.store.migrate import alembic_config, upgrade
from relayq.store.models import Base
from tests.services import scratch_postgres_database


@pytest.fixture
def scratch_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the current backend, migrated to head."""
    if backend == "postgresql":
        with scratch_postgres_database(os.environ["RELAYQ_TEST_DATABASE_URL"]) as url:
            yield url
    else:
        url = f"sqlite:///{tmp_path / 'migrated.db'}"
        upgrade(url)
        yield url


def test_the_migrated_schema_is_the_models_schema(scratch_url: str) -> None:
    engine = create_engine(sync_url(scratch_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": False})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_keys_keep_what_they_could_do_across_the_scopes_migration(scratch_url: str) -> None:
    config = alembic_config(scratch_url)
    command.downgrade(config, "0008")
    engine = create_engine(sync_url(scratch_url))
    try:
        with engine.begin() as connection:
            for key_id, admin in (("key_admin", True), ("key_plain", False)):
                connection.execute(
                    text(
                        "INSERT INTO api_keys (id, name, key_hash, hint, created_at, admin) "
                        "VALUES (:id, :id, :hash, 'abcd', 0, :admin)"
                    ),
                    {"id": key_id, "hash": key_id.ljust(64, "0"), "admin": admin},
                )
        command.upgrade(config, "head")
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, scopes, source FROM api_keys ORDER BY id"))
            found = {row.id: (row.scopes, row.source) for row in rows}
        command.downgrade(config, "0008")
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, admin FROM api_keys ORDER BY id"))
            back = {row.id: bool(row.admin) for row in rows}
    finally:
        engine.dispose()

    def scopes(value: object) -> object:
        return value if isinstance(value, list) else json.loads(str(value))

    assert {k: (scopes(s), src) for k, (s, src) in found.items()} == {
        "key_admin": (["jobs", "chat", "batches", "files", "read", "admin"], "key"),
        "key_plain": (["jobs", "chat", "batches", "files", "read"], "key"),
    }
    assert back == {"key_admin": True, "key_plain": False}
