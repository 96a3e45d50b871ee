"""Declarative base: one ``MetaData`` with a naming convention, so every constraint and index
has a predictable name that Alembic migrations can refer to (and drop) on both databases."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every ORM class; ``Base.metadata`` is what migrations are compared against."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
