"""Borrowed GPUs and preemption in the ledger, places in the GPU queue (issue 14).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from quotas.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("borrowed", sa.JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("stop_at", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("stop_note", sa.Text, nullable=True))
    with op.batch_alter_table("usage_rollups") as batch:
        batch.add_column(sa.Column("borrowed_gpu_ms", sa.BigInteger, nullable=False, server_default="0"))
    with op.batch_alter_table("gpu_queue") as batch:
        batch.add_column(sa.Column("position", sa.Integer, nullable=True))
        batch.add_column(sa.Column("length", sa.Integer, nullable=True))
        batch.add_column(sa.Column("reason", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gpu_queue") as batch:
        for name in ("reason", "length", "position"):
            batch.drop_column(name)
    with op.batch_alter_table("usage_rollups") as batch:
        batch.drop_column("borrowed_gpu_ms")
    with op.batch_alter_table("runs") as batch:
        for name in ("stop_note", "stop_at", "borrowed"):
            batch.drop_column(name)
