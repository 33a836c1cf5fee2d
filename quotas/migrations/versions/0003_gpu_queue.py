"""GPU requests waiting in their tenant's queue (issue 14): a hub restart keeps everyone's place.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from quotas.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gpu_queue",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("gpu_type", sa.String(64), nullable=False),
        sa.Column("gpu_count", sa.Integer, nullable=False),
        sa.Column("may_borrow", sa.Boolean, nullable=False),
        sa.Column("enqueued", UTCDateTime, nullable=False),
        sa.UniqueConstraint("user", "server", name="uq_gpu_queue_server"),
    )
    op.create_index("ix_gpu_queue_tenant", "gpu_queue", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_gpu_queue_tenant", table_name="gpu_queue")
    op.drop_table("gpu_queue")
