"""Schema migrations, run from code: upgrade to the head, and compare current with head.

The Alembic scripts live in ``migrations/`` at the repository root (next to the ``service``
package), found relative to this file so any working directory works; no ``alembic.ini``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, pool

from service.db.session import create_engine_for

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for our scripts; ``url`` (if given) is the database to act on."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise RuntimeError(f"migration scripts not found in {MIGRATIONS_DIR}")
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR.as_posix())
    if url is not None:
        config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the head)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"``: drop everything)."""
    command.downgrade(alembic_config(url), revision)


@cache
def head_revision() -> str:
    """The revision id the newest migration script brings a database to."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - there is always a first migration
        raise RuntimeError("no migration scripts")
    return head


def current_revision(bind: str | Engine) -> str | None:
    """The revision the database is at (``None``: never migrated).

    ``bind`` is a URL (a short-lived connection is opened) or the caller's engine.
    """
    engine = create_engine_for(bind, poolclass=pool.NullPool) if isinstance(bind, str) else bind
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if isinstance(bind, str):
            engine.dispose()


def is_at_head(bind: str | Engine) -> bool:
    """Whether the database's schema is at the migration head (what ``/readyz`` reports)."""
    return current_revision(bind) == head_revision()


__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "is_at_head",
    "upgrade",
]
