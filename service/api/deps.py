"""Request dependencies, as ``Annotated`` aliases so route signatures read like prose.

``SessionDep`` is the request's transaction boundary: it commits when the route returns and
rolls back when it raises. Its scope is ``"function"``, so the commit happens before the
response is sent: a client that got 201 can read what it created.

``TenantDep`` is the tenant the request acts for (:mod:`service.api.auth`); every ``/v1``
router already requires it, and FastAPI runs the check once per request however many ask.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session, sessionmaker

from service.api.auth import require_tenant
from service.config import Settings


def get_settings(request: Request) -> Settings:
    """The app's :class:`Settings`, built once by the entry point."""
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """A session for one request: commit on success, roll back on any error."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        session.commit()


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
TenantDep = Annotated[str, Depends(require_tenant)]

#: Cursor pagination's query parameters, shared by every list route.
PageLimit = Annotated[int, Query(ge=1, le=100, description="Page size, 1 to 100.")]
PageCursor = Annotated[
    str | None,
    Query(max_length=512, description="Opaque: the `next_cursor` of the previous page."),
]

__all__ = [
    "PageCursor",
    "PageLimit",
    "SessionDep",
    "SettingsDep",
    "TenantDep",
    "get_session",
    "get_settings",
]
