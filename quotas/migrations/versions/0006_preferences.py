"""People's own choices: the language they read the platform in (issue 19).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from quotas.schema import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "preferences",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("locale", sa.String(16), nullable=False),
        sa.Column("updated", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("preferences")
