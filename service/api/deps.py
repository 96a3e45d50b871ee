"""Request dependencies, as ``Annotated`` aliases so route signatures read like prose.

``SessionDep`` is the request's transaction boundary: it commits when the route returns and
rolls back when it raises. Its scope is ``"function"``, so the commit happens before the
response is sent: a client that got 201 can read what it created.

``ReadsDep`` runs the reads of ``async`` routes — the hot reads (a job, its history, a model to
predict with), the storage room — with what builds their body, so that the event loop never
waits on the database (:class:`service.api.reads.Reads`): ``await reads(fn, *args)`` for
``fn(session, *args)``. A sync route would take four hops to the thread pool and back, each
costing more under load than the one or two indexed lookups of such a read (docs/performance.md).

``SessionsDep`` is for an ``async`` route that writes and wants all its database work in one
hop to the thread pool (``POST /v1/jobs``): the factory of the request's sessions, for
``await run_in_threadpool(in_transaction, sessions, fn, ...)``; :func:`in_transaction` commits
and rolls back as ``SessionDep`` does.

``TenantDep`` is the tenant the request acts for (:mod:`service.api.auth`); every ``/v1``
router already requires it, and FastAPI runs the check once per request however many ask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Concatenate, ParamSpec, TypeVar

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session, sessionmaker

from service.api.auth import require_tenant
from service.api.reads import Reads
from service.config import Settings

P = ParamSpec("P")
T = TypeVar("T")


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


def in_transaction(
    sessions: sessionmaker[Session],
    fn: Callable[Concatenate[Session, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``fn(session, *args)`` in a session of its own: committed when it returns, rolled back
    when it raises."""
    with sessions() as session:
        try:
            result = fn(session, *args, **kwargs)
        except BaseException:
            session.rollback()
            raise
        session.commit()
        return result


async def get_sessions(request: Request) -> sessionmaker[Session]:
    """The factory of the request sessions (async: a sync dependency would take a hop)."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


async def get_reads(request: Request) -> Reads:
    """The app's :class:`Reads` (async: a sync dependency would take a hop to the pool)."""
    reads: Reads = request.app.state.reads
    return reads


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
ReadsDep = Annotated[Reads, Depends(get_reads)]
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
    "ReadsDep",
    "SessionDep",
    "SessionsDep",
    "SettingsDep",
    "TenantDep",
    "get_reads",
    "get_session",
    "get_sessions",
    "get_settings",
    "in_transaction",
]
