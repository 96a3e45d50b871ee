"""Alembic environment: where the database URL comes from, and how migrations run.

The URL, first found wins: a connection in ``config.attributes["connection"]``, a URL in
``config.attributes["url"]`` (both set by :mod:`service.db.migrate`), ``alembic -x url=...``,
``sqlalchemy.url`` in the config, then :class:`service.config.Settings` (``BATCHWISE_*``).
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, pool, text

from service.config import Settings
from service.db.base import Base
from service.db.session import create_engine_for, normalize_url
from service.db.tables import UTCDateTime

# One constant lock id: two `batchwise migrate` runs against one PostgreSQL take turns.
_PG_MIGRATION_LOCK_ID = 0x62617463  # "batc"

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    return str(url or Settings().resolved_database_url)


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Migrations spell the portable column type, not our decorator (so they never import it).
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
        compare_server_default=True,
        render_item=_render_item,
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode copies a table and drops the original; with foreign keys on, that drop
        # deletes every child row through ON DELETE CASCADE. SQLite's procedure for schema
        # changes: keys off (outside a transaction: the pragma is a no-op inside one), change,
        # check, keys on.
        connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
    try:
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_MIGRATION_LOCK_ID}
                )
            context.run_migrations()
            if sqlite:
                _check_foreign_keys(connection)
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")


def _check_foreign_keys(connection: Connection) -> None:
    """Fail the migration (it rolls back) if it left a row pointing at nothing."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration broke foreign keys: {broken[:10]}")


def run_migrations_offline() -> None:
    """Emit SQL for the URL's dialect instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=normalize_url(_database_url()),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a live connection (the caller's, or a new one)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine_for(_database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
