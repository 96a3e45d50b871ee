"""What sweeps and probes share as groups of jobs: cancelling one without a deadlock.

A group (a sweep, a probe) is a row with a ``status`` and a learning-rate ``round``, whose
jobs its repository cancels, locks and updates (:class:`GroupRepository`: the module
``service.sweeps.repository`` or ``service.probes.repository`` itself).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy.orm import Session

from service.db import utcnow
from service.errors import Conflict, NotFound


class GroupRow(Protocol):
    """A sweep's or a probe's row, as far as a cancel reads it."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def round(self) -> int: ...


Row = TypeVar("Row", bound=GroupRow)


class GroupRepository(Protocol[Row]):
    """What a cancel needs of a group's repository module."""

    def cancel_unfinished_jobs(
        self, session: Session, group_id: str, /, *, now: datetime, skip_locked: bool = False
    ) -> int: ...

    def lock(self, session: Session, group_id: str, /) -> Row | None: ...

    def set_state(
        self, session: Session, row: Row, /, *, status: str, finished_at: datetime
    ) -> None: ...


def cancel(
    session: Session,
    row: Row,
    repository: GroupRepository[Row],
    *,
    kind: str,
    finished: Collection[str],
) -> Row:
    """Cancel the running group ``row`` (a ``kind``: "Sweep", "Probe"): its queued jobs at
    once, its running ones flagged for their workers (as ``POST /v1/jobs/{id}/cancel``), the
    group ``cancelled``; the locked row. 409 once finished (``finished``: its final statuses).

    Order matters on PostgreSQL: the jobs first, then the group's lock — a worker finishing a
    job holds that job's row and then waits for the group's, so taking the group's first and
    then waiting for the job would deadlock. A round submitted in between is cancelled after
    the lock (skipping rows a finishing worker holds).
    """
    if row.status in finished:
        raise Conflict(f"{kind} {row.id!r} has already finished ({row.status}); nothing to cancel.")
    seen_round = row.round
    now = utcnow()
    repository.cancel_unfinished_jobs(session, row.id, now=now)
    locked = repository.lock(session, row.id)
    if locked is None:
        raise NotFound(f"No {kind.lower()} with id {row.id!r}.")
    if locked.status in finished:
        raise Conflict(f"{kind} {row.id!r} has just finished ({locked.status}); nothing to cancel.")
    if locked.round != seen_round:
        repository.cancel_unfinished_jobs(session, row.id, now=now, skip_locked=True)
    repository.set_state(session, locked, status="cancelled", finished_at=now)
    return locked


__all__ = ["GroupRepository", "GroupRow", "cancel"]
