"""sweeps, and on jobs: sweep_id (ON DELETE CASCADE) and sweep_point. A sweep runs one job
config over several batch sizes; each of its points is an ordinary job row.

Revision ID: de29c8f57210
Revises: 671785aef51b
Create Date: 2026-11-26 11:13:44.589845+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "de29c8f57210"
down_revision: str | Sequence[str] | None = "671785aef51b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("lr_method", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lr_state", sa.JSON(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_sweeps_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
    )
    # Listing pages newest first by (created_at, id).
    op.create_index(op.f("ix_sweeps_created_at_id"), "sweeps", ["created_at", "id"])
    op.create_index(op.f("ix_sweeps_dataset_id"), "sweeps", ["dataset_id"])

    # Batch mode: SQLite cannot add a foreign key with ALTER TABLE (the table is copied there);
    # PostgreSQL gets plain ALTERs.
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("sweep_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("sweep_point", sa.JSON(none_as_null=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_sweep_id"), ["sweep_id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_sweep_id_sweeps"),
            "sweeps",
            ["sweep_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_sweep_id_sweeps"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_sweep_id"))
        batch_op.drop_column("sweep_point")
        batch_op.drop_column("sweep_id")
    op.drop_index(op.f("ix_sweeps_dataset_id"), table_name="sweeps")
    op.drop_index(op.f("ix_sweeps_created_at_id"), table_name="sweeps")
    op.drop_table("sweeps")
