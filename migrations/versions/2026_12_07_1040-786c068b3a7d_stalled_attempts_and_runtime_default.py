"""jobs.stalled_attempts: the attempts in a row that checkpointed no new epoch, which the
attempt limit now counts; and the runtime limit for jobs queued before there was one.

Jobs not yet finished start with ``stalled_attempts = attempt``: what their attempts did is not
known, so none gets more retries than it had before.

``max_runtime_s``: a job submitted without one gets ``BATCHWISE_MAX_JOB_RUNTIME_S`` since the
limits arrived; unfinished jobs from before have NULL (no limit). They are given the limit in
force where the migration runs (``Settings``, as ``batchwise migrate`` and ``serve`` read it),
stored on the row, so the API shows and the worker enforces one value. The downgrade leaves it:
it cannot tell a stamped limit from one a client asked for, and either is a valid limit.

Revision ID: 786c068b3a7d
Revises: ebe499a38c96
Create Date: 2026-12-07 10:40:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.config import Settings

# revision identifiers, used by Alembic.
revision: str = "786c068b3a7d"
down_revision: str | Sequence[str] | None = "ebe499a38c96"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = ("queued", "running")


def upgrade() -> None:
    # Plain ALTER TABLE on both (no table copy: see the tenants migration).
    op.add_column(
        "jobs", sa.Column("stalled_attempts", sa.Integer(), server_default="0", nullable=False)
    )
    jobs = sa.table(
        "jobs",
        sa.column("status", sa.String()),
        sa.column("attempt", sa.Integer()),
        sa.column("stalled_attempts", sa.Integer()),
        sa.column("max_runtime_s", sa.Float()),
    )
    unfinished = jobs.c.status.in_(UNFINISHED)
    op.execute(jobs.update().where(unfinished).values(stalled_attempts=jobs.c.attempt))
    limit = Settings().max_job_runtime_s
    op.execute(
        jobs.update()
        .where(unfinished, jobs.c.max_runtime_s.is_(None))
        .values(max_runtime_s=sa.literal(limit, sa.Float()))
    )


def downgrade() -> None:
    op.drop_column("jobs", "stalled_attempts")
