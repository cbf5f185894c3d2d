"""api_keys: scopes, model allow-list, expiry, rotation, TPM, budgets, JWT tenants;
jobs: cost and budget reservation; audit_log, usage_days, budget_spend

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 06:00:00.000000
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_USER = ["jobs", "chat", "batches", "files", "read"]
_ADMIN = [*_USER, "admin"]


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scopes", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("models", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("tokens_per_minute", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("previous_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("previous_expires_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("budget_period", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("budget_usd", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("budget_tokens", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("source", sa.String(length=16), server_default="key", nullable=False)
        )
        batch_op.add_column(sa.Column("subject", sa.String(length=400), nullable=True))
        batch_op.create_index("ix_api_keys_previous_hash", ["previous_hash"])
        batch_op.create_unique_constraint("uq_api_keys_subject", ["subject"])

    # Existing keys keep what they could do: admin keys gain every scope, the rest
    # every scope but admin.
    keys = sa.table("api_keys", sa.column("admin", sa.Boolean()), sa.column("scopes", sa.JSON()))
    op.execute(keys.update().where(keys.c.admin.is_(True)).values(scopes=_ADMIN))
    op.execute(keys.update().where(keys.c.admin.is_not(True)).values(scopes=_USER))

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("scopes", existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column("admin")

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("reserved_usd", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("reserved_tokens", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("budget_window", sa.String(length=16), nullable=True))
        batch_op.create_index("ix_jobs_finished_at", ["finished_at"])
        batch_op.create_index("ix_jobs_budget_window", ["budget_window"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor_key_id", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])

    op.create_table(
        "usage_days",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "day", "model", "batch_id"),
    )

    op.create_table(
        "budget_spend",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("window", sa.String(length=16), nullable=False),
        sa.Column("reserved_usd", sa.Float(), nullable=False),
        sa.Column("reserved_tokens", sa.Integer(), nullable=False),
        sa.Column("spent_usd", sa.Float(), nullable=False),
        sa.Column("spent_tokens", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "window"),
    )


def downgrade() -> None:
    op.drop_table("budget_spend")
    op.drop_table("usage_days")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_budget_window")
        batch_op.drop_index("ix_jobs_finished_at")
        batch_op.drop_column("budget_window")
        batch_op.drop_column("reserved_tokens")
        batch_op.drop_column("reserved_usd")
        batch_op.drop_column("cost_usd")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    connection = op.get_bind()
    for row in connection.execute(sa.text("SELECT id, scopes FROM api_keys")):
        scopes = row.scopes if isinstance(row.scopes, list) else json.loads(row.scopes or "[]")
        if "admin" in scopes:
            connection.execute(
                sa.text("UPDATE api_keys SET admin = :admin WHERE id = :id"),
                {"admin": True, "id": row.id},
            )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint("uq_api_keys_subject", type_="unique")
        batch_op.drop_index("ix_api_keys_previous_hash")
        for column in (
            "subject",
            "source",
            "budget_tokens",
            "budget_usd",
            "budget_period",
            "previous_expires_at",
            "previous_hash",
            "last_used_at",
            "expires_at",
            "tokens_per_minute",
            "models",
            "scopes",
        ):
            batch_op.drop_column(column)
