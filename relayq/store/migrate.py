"""Alembic, driven from code: ``relayq db upgrade`` and the dev stack call this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from relayq.store.database import sync_url

__all__ = ["alembic_config", "upgrade"]

_MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for ``database_url``, no ini file needed."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    url = sync_url(database_url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database at ``database_url`` to ``revision``."""
    command.upgrade(alembic_config(database_url), revision)
