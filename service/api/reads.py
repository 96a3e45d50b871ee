"""The reads ``async`` code makes — the key check, the hot reads (a job, its history, the model
to predict with), the storage room — run so that the event loop never waits on the database.

A read is a plain function of a :class:`~sqlalchemy.orm.Session` (the services' own
functions); :class:`Reads` runs it, with what builds the body, in one hop to a thread, in a
read-only session of its own (autocommit: see :func:`service.api.app.create_app`). A stalled
database then holds that thread, never the loop: ``/healthz`` and every other request go on.

At most :data:`READ_THREADS` reads run at once, as many as the read engine pools connections:
the work is GIL-bound, so more threads would not read faster, and a thread that waited for a
connection, or made one that the pool then closes again, would cost more than the read.

Chosen over SQLAlchemy's asyncio extension (psycopg's async mode), which cost more CPU per read
and more time per request under load; figures in docs/performance.md.

The read engine does not ping a connection before each use (a round trip as long as the read
itself): a read that finds its pooled connection lost — the database restarted since — is run
once more, on a new connection, which is what the ping would have bought. Reads write nothing,
so running one twice is safe; SQLAlchemy has by then dropped every connection older than the
loss. A second loss is the caller's error (the API's 503), and so at once is a database that
did not answer within the timeout (:class:`~service.db.session.AnswerTimeout`): run again, it
would only cost a second timeout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from service.db.session import AnswerTimeout

P = ParamSpec("P")
T = TypeVar("T")

#: Reads run at once (threads), and connections the read engine keeps.
READ_THREADS = 8


class Reads:
    """``await reads(fn, *args)``: ``fn(session, *args)`` in a read-only session, in a thread
    (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.limiter = CapacityLimiter(READ_THREADS)

    async def __call__(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        read = functools.partial(self.run, fn, *args, **kwargs)
        return await anyio.to_thread.run_sync(read, limiter=self.limiter)

    def run(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(session, *args)`` in a read-only session, in this thread (a sync caller's);
        once more if its connection was found lost (see the module docstring)."""
        try:
            with self.sessions() as session:
                return fn(session, *args, **kwargs)
        except DBAPIError as exc:
            if not exc.connection_invalidated or isinstance(exc.orig, AnswerTimeout):
                raise
        with self.sessions() as session:
            return fn(session, *args, **kwargs)


__all__ = ["READ_THREADS", "Reads"]
