"""retries, fallback, deadlines and key limits

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 10:31:54.052855
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("requests_per_minute", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_concurrent_jobs", sa.Integer(), nullable=True))

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("deployment_index", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("deployment_attempts", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("first_deployment", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("not_before", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
        batch_op.drop_column("not_before")
        batch_op.drop_column("first_deployment")
        batch_op.drop_column("deployment_attempts")
        batch_op.drop_column("deployment_index")
        batch_op.drop_column("attempts")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("max_concurrent_jobs")
        batch_op.drop_column("requests_per_minute")
        batch_op.drop_column("admin")
