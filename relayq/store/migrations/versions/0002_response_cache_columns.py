"""response cache columns

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:01:41.733825
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cached", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("cache_key", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("cache_ttl", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("cache_ttl")
        batch_op.drop_column("cache_key")
        batch_op.drop_column("cached")
