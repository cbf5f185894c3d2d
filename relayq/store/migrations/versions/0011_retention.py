"""Retention: batches keep their output files' expiry; indexes the purge reads by

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 07:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("output_expires_after", sa.Integer(), nullable=True))
    op.create_index("ix_files_expires_at", "files", ["expires_at"])
    op.create_index("ix_webhook_deliveries_batch_id", "webhook_deliveries", ["batch_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_batch_id", table_name="webhook_deliveries")
    op.drop_index("ix_files_expires_at", table_name="files")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("output_expires_after")
