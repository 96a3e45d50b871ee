"""Request dependencies, as ``Annotated`` aliases so route signatures read like prose.

``SessionDep`` is the request's transaction boundary: it commits when the route returns and
rolls back when it raises. Its scope is ``"function"``, so the commit happens before the
response is sent: a client that got 201 can read what it created.

``ReadSessionsDep`` is for the hot reads (a job, its history, a model to predict with), from
``async`` routes: the factory of read-only sessions (autocommit: see ``read_session_factory``
in :func:`service.api.app.create_app`), each opened and closed on the event loop in a ``with``
around the read. A sync route would take four hops to the thread pool and back, each costing
more under load than the one or two indexed lookups of such a read (docs/performance.md); a
factory rather than a yielded session, because a ``yield`` dependency costs about a tenth of
such a request. The price: while a read waits on the database, this process serves nothing
else.

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


async def get_read_sessions(request: Request) -> sessionmaker[Session]:
    """The factory of read-only sessions, for ``with read_sessions() as session:`` on the loop."""
    factory: sessionmaker[Session] = request.app.state.read_session_factory
    return factory


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionsDep = Annotated[sessionmaker[Session], Depends(get_read_sessions)]
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
    "ReadSessionsDep",
    "SessionDep",
    "SettingsDep",
    "TenantDep",
    "get_read_sessions",
    "get_session",
    "get_settings",
]
