"""api_keys, and a tenant on datasets, jobs and sweeps: existing rows go to the tenant `default`;
the tenant's lists page by (tenant, created_at, id), which replaces the (created_at, id) indexes.

No table is copied, on purpose: SQLite's batch mode copies a table and drops the old one, and
with foreign keys on (the service's engine turns them on, and a migration's transaction cannot
turn them off) that drop deletes through ON DELETE CASCADE — every dataset's chunks, every job's
epochs. So SQLite gets plain ALTER TABLE, and its column default is removed by editing the
stored schema text, the procedure SQLite documents for changing a default
(https://www.sqlite.org/lang_altertable.html#otheralter): one transaction, no data touched.

Revision ID: ebe499a38c96
Revises: de29c8f57210
Create Date: 2026-11-26 14:21:03.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "ebe499a38c96"
down_revision: str | Sequence[str] | None = "de29c8f57210"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The tenant of every row from before tenants (and of every request while auth is off).
BACKFILL_TENANT = "default"
OWNED_TABLES = ("datasets", "jobs", "sweeps")


def _sqlite_drop_default(table: str, column: str) -> None:
    """Remove ``column``'s DEFAULT from ``table``'s stored CREATE TABLE text (SQLite), in the
    migration's transaction, once every row holds its value."""
    bind = op.get_bind()
    # ADD COLUMN writes no row: old rows read the default from the schema, so without this
    # UPDATE they would read NULL once the default is gone.
    bind.exec_driver_sql(f'UPDATE "{table}" SET "{column}" = ?', (BACKFILL_TENANT,))
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    # ALTER TABLE ADD COLUMN appends the column's definition as written, so it is found verbatim.
    written = f"{column} VARCHAR(64) DEFAULT '{BACKFILL_TENANT}' NOT NULL"
    if sql.count(written) != 1:
        raise RuntimeError(f"cannot find {written!r} once in the schema of {table!r}: {sql}")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
            (sql.replace(written, f"{column} VARCHAR(64) NOT NULL"), table),
        )
        # A new schema version makes every connection (this one included) re-read the schema.
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    defaults = {
        row[1]: row[4] for row in bind.exec_driver_sql(f'PRAGMA table_info("{table}")').all()
    }
    if defaults.get(column) is not None:
        raise RuntimeError(f"{table}.{column} still has a default: {defaults[column]!r}")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in OWNED_TABLES:
        # The server default fills the existing rows; then it goes, so every insert must name
        # its tenant.
        op.add_column(
            table,
            sa.Column(
                "tenant", sa.String(length=64), server_default=BACKFILL_TENANT, nullable=False
            ),
        )
        if sqlite:
            _sqlite_drop_default(table, "tenant")
        else:
            op.alter_column(table, "tenant", server_default=None)
        op.drop_index(op.f(f"ix_{table}_created_at_id"), table_name=table)
        op.create_index(
            op.f(f"ix_{table}_tenant_created_at_id"), table, ["tenant", "created_at", "id"]
        )


def downgrade() -> None:
    for table in reversed(OWNED_TABLES):
        op.drop_index(op.f(f"ix_{table}_tenant_created_at_id"), table_name=table)
        op.create_index(op.f(f"ix_{table}_created_at_id"), table, ["created_at", "id"])
        # Plain ALTER TABLE … DROP COLUMN on both (SQLite ≥ 3.35): no table copy (see above).
        op.drop_column(table, "tenant")
    op.drop_table("api_keys")
