"""GPU-hours used (utilization-weighted) next to GPU-hours held, in the ledger (issue 18).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # runs written before this revision read as 0 used: nothing was measured then
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("gpu_used_ms", sa.BigInteger, nullable=False, server_default="0"))
    with op.batch_alter_table("usage_rollups") as batch:
        batch.add_column(sa.Column("gpu_used_ms", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_rollups") as batch:
        batch.drop_column("gpu_used_ms")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("gpu_used_ms")
