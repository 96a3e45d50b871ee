"""Warm starts and kept checkpoints: on jobs, ``init_from`` (the job and epoch a job starts
from) and ``keep_checkpoints`` (the epochs whose checkpoints it keeps); ``job_kept_checkpoints``
(those checkpoints) and ``job_starts`` (the checkpoint a warm-started job starts from, copied
at submit).

The new columns are nullable without a foreign key, so both databases get plain ALTER TABLE
ADD COLUMN: no table is copied (see the tenants migration for why a copy is dangerous here).

Revision ID: 5a7c2e19d4b3
Revises: aea80f05d63e
Create Date: 2026-12-07 10:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5a7c2e19d4b3"
down_revision: str | Sequence[str] | None = "aea80f05d63e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("init_from", sa.JSON(none_as_null=True), nullable=True))
    op.add_column("jobs", sa.Column("keep_checkpoints", sa.JSON(none_as_null=True), nullable=True))
    op.create_table(
        "job_kept_checkpoints",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("samples_seen", sa.BigInteger(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_job_kept_checkpoints_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "epoch", name=op.f("pk_job_kept_checkpoints")),
    )
    op.create_table(
        "job_starts",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_starts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_starts")),
    )


def downgrade() -> None:
    op.drop_table("job_starts")
    op.drop_table("job_kept_checkpoints")
    # Plain ALTER TABLE … DROP COLUMN on both (SQLite ≥ 3.35): no table copy.
    op.drop_column("jobs", "keep_checkpoints")
    op.drop_column("jobs", "init_from")
