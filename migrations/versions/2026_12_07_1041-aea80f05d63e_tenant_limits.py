"""tenant_limits: a tenant's own limits, each NULL for the configured default.

Revision ID: aea80f05d63e
Revises: 786c068b3a7d
Create Date: 2026-12-07 10:41:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "aea80f05d63e"
down_revision: str | Sequence[str] | None = "786c068b3a7d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_limits",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("max_running_jobs", sa.Integer(), nullable=True),
        sa.Column("max_queued_jobs", sa.Integer(), nullable=True),
        sa.Column("max_stored_bytes", sa.BigInteger(), nullable=True),
        sa.Column("max_steps_per_job", sa.BigInteger(), nullable=True),
        sa.Column("max_job_runtime_s", sa.Float(), nullable=True),
        sa.Column("max_job_bytes", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", name=op.f("pk_tenant_limits")),
    )


def downgrade() -> None:
    op.drop_table("tenant_limits")
