"""Probes: ``probes`` (a probe of a source job's critical batch size) and ``probe_branches``
(its branch jobs: checkpoint epoch, batch multiplier, learning rate, seed, round).

Two new tables, nothing altered: no table is copied on SQLite.

Revision ID: 7c41d2e8b9a6
Revises: 5a7c2e19d4b3
Create Date: 2026-12-07 10:45:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "7c41d2e8b9a6"
down_revision: str | Sequence[str] | None = "5a7c2e19d4b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "probes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("round", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_probes_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_probes_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probes")),
    )
    op.create_index(op.f("ix_probes_dataset_id"), "probes", ["dataset_id"], unique=False)
    op.create_index(op.f("ix_probes_job_id"), "probes", ["job_id"], unique=False)
    # A tenant's list pages newest first by (tenant, created_at, id).
    op.create_index(
        op.f("ix_probes_tenant_created_at_id"), "probes", ["tenant", "created_at", "id"]
    )
    op.create_table(
        "probe_branches",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("probe_id", sa.String(length=36), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("multiplier", sa.Integer(), nullable=False),
        sa.Column("learning_rate", sa.Float(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_probe_branches_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["probe_id"],
            ["probes.id"],
            name=op.f("fk_probe_branches_probe_id_probes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_probe_branches")),
    )
    op.create_index(
        op.f("ix_probe_branches_probe_id"), "probe_branches", ["probe_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_probe_branches_probe_id"), table_name="probe_branches")
    op.drop_table("probe_branches")
    op.drop_index(op.f("ix_probes_tenant_created_at_id"), table_name="probes")
    op.drop_index(op.f("ix_probes_job_id"), table_name="probes")
    op.drop_index(op.f("ix_probes_dataset_id"), table_name="probes")
    op.drop_table("probes")
