"""The ledger (runs), usage roll-ups, delegated limits, refusal counts and tenant locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from quotas.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("gpus", sa.JSON, nullable=False),
        sa.Column("gpu_count", sa.Integer, nullable=False),
        sa.Column("cpu_milli", sa.BigInteger, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("started", UTCDateTime, nullable=False),
        sa.Column("ended", UTCDateTime, nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
    )
    op.create_index(
        "ux_runs_open_server",
        "runs",
        ["user", "server"],
        unique=True,
        sqlite_where=sa.text("ended IS NULL"),
        postgresql_where=sa.text("ended IS NULL"),
    )
    op.create_index(
        "ix_runs_tenant_open",
        "runs",
        ["tenant", "started", "id"],
        sqlite_where=sa.text("ended IS NULL"),
        postgresql_where=sa.text("ended IS NULL"),
    )
    op.create_index("ix_runs_tenant_started", "runs", ["tenant", "started"])
    op.create_table(
        "usage_rollups",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("start", sa.Date, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("gpu_ms", sa.BigInteger, nullable=False),
        sa.Column("cpu_milli_ms", sa.BigInteger, nullable=False),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "period", "start", "kind", "subject", name="pk_usage_rollups"),
    )
    op.create_index("ix_rollups_subject", "usage_rollups", ["tenant", "kind", "subject"])
    op.create_table(
        "limits",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("resource", sa.String(80), nullable=False),
        sa.Column("value", sa.String(64), nullable=False),
        sa.Column("updated", UTCDateTime, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "kind", "subject", "resource", name="pk_limits"),
    )
    op.create_table(
        "refusals",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("last", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "code", name="pk_refusals"),
    )
    op.create_table("tenant_locks", sa.Column("tenant", sa.String(64), primary_key=True))


def downgrade() -> None:
    op.drop_table("tenant_locks")
    op.drop_table("refusals")
    op.drop_table("limits")
    op.drop_index("ix_rollups_subject", table_name="usage_rollups")
    op.drop_table("usage_rollups")
    op.drop_index("ix_runs_tenant_started", table_name="runs")
    op.drop_index("ix_runs_tenant_open", table_name="runs")
    op.drop_index("ux_runs_open_server", table_name="runs")
    op.drop_table("runs")
