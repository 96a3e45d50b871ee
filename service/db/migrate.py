"""Schema migrations, run from code: upgrade to the head, and compare current with head.

The Alembic scripts live in ``migrations/`` at the repository root and ship inside the package
as ``service._migrations`` (setup.py maps the folder), found through ``importlib.resources`` so
a wheel, an editable install and any working directory all work; no ``alembic.ini``.
"""

from __future__ import annotations

import atexit
from contextlib import ExitStack
from functools import cache
from importlib.resources import as_file, files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, pool

from service.db.session import create_engine_for

#: The package the scripts ship as.
MIGRATIONS_PACKAGE = "service._migrations"

# Alembic reads the scripts from a folder: ``as_file`` gives one (a copy, kept to the process's
# end, only if the package were ever imported from a zip).
_kept_files = ExitStack()
atexit.register(_kept_files.close)


@cache
def migrations_dir() -> Path:
    """The folder holding ``env.py``, ``script.py.mako`` and ``versions/``."""
    try:
        scripts = files(MIGRATIONS_PACKAGE)
    except ModuleNotFoundError:
        raise RuntimeError(
            f"migration scripts not found: this install lacks the {MIGRATIONS_PACKAGE} package"
        ) from None
    folder = _kept_files.enter_context(as_file(scripts))
    if not (folder / "env.py").is_file():
        raise RuntimeError(f"migration scripts not found in {folder}")
    return folder


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for our scripts; ``url`` (if given) is the database to act on."""
    config = Config()
    config.set_main_option("script_location", migrations_dir().as_posix())
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
    "MIGRATIONS_PACKAGE",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "is_at_head",
    "migrations_dir",
    "upgrade",
]
