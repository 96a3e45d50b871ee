"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: the database is
reachable and its schema is at the migration head)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.api.problems import problem_responses
from service.db.migrate import current_revision, head_revision
from service.errors import ServiceUnavailable

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The process is up."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"]


class Readiness(BaseModel):
    """The service can serve requests: database reachable, schema current."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ready", "database": "sqlite", "revision": "3f2a1b0c9d8e"}]
        }
    )

    status: Literal["ready"]
    database: str = Field(description="The database backend: `sqlite` or `postgresql`.")
    revision: str = Field(description="The schema's migration revision (the head).")


@router.get(
    "/healthz",
    operation_id="getHealth",
    summary="Liveness",
    description="Answers 200 whenever the process can answer at all; checks nothing else. "
    "For container liveness probes.",
)
async def healthz() -> Health:  # on the event loop: it answers even with every thread busy
    return Health(status="ok")


def check_readiness(engine: Engine) -> Readiness:
    """:class:`Readiness`, or :class:`ServiceUnavailable` (503) saying what is wrong."""
    where = engine.url.render_as_string(hide_password=True)
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        cause = type(getattr(exc, "orig", None) or exc).__name__
        raise ServiceUnavailable(f"The database is unreachable ({cause}) at {where}.") from None
    head = head_revision()
    if current is None:
        raise ServiceUnavailable(
            f"The database at {where} has no schema (never migrated); head is {head}: "
            "run `batchwise migrate`."
        )
    if current != head:
        raise ServiceUnavailable(
            f"The database schema is at {current}, head is {head}: run `batchwise migrate`."
        )
    return Readiness(status="ready", database=engine.dialect.name, revision=current)


@router.get(
    "/readyz",
    operation_id="getReadiness",
    summary="Readiness",
    description="Answers 200 when the database is reachable and its schema is at the "
    "migration head; 503 (problem+json, `detail` says why) otherwise: database unreachable, "
    "or the schema behind — run `batchwise migrate`. For load balancers and readiness probes.",
    responses=problem_responses(503),
)
def readyz(request: Request) -> Readiness:
    engine: Engine = request.app.state.engine
    return check_readiness(engine)
