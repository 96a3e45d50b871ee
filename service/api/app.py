"""The app factory: ``create_app(settings)`` wires settings, the database engine, the
problem+json error rendering, the docs and the routers. Nothing here runs at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service import __version__
from service.api.auth import AuthenticateFirst
from service.api.body_limit import BodyLimitMiddleware
from service.api.dashboard import install_dashboard
from service.api.docs import install_docs
from service.api.observability import install_observability
from service.api.offload import BodyDecoder
from service.api.openapi import openapi_document
from service.api.problems import install_problem_handlers
from service.api.reads import READ_THREADS, Reads
from service.api.routes import datasets, health, jobs, plots, probes, sweeps
from service.api.same_origin import SameOriginWrites
from service.api.security_headers import install_security_headers
from service.config import Settings
from service.db import create_engine_for, session_factory

DESCRIPTION = """\
Training as a service for people who want to know what batch size does to their model.

Upload a dataset, then train on it. Every error is an RFC 9457 problem document
(`application/problem+json`) with `type`, `title`, `status`, `detail` and, for invalid
input, `errors: [{loc, msg, type}]`.
"""

OPENAPI_TAGS = [
    {"name": "datasets", "description": "Upload, list, inspect and delete datasets."},
    {"name": "health", "description": "Liveness and readiness probes."},
    {"name": "metrics", "description": "Prometheus metrics of the jobs and the API."},
]


def create_app(settings: Settings) -> FastAPI:
    """The Batchwise API for ``settings``; the database engine is disposed at shutdown.

    The database is not touched here (``/readyz`` says whether it is usable): migrating is the
    entry point's job (``batchwise serve`` for SQLite, ``batchwise migrate`` otherwise).
    """
    # Every wait on PostgreSQL ends after database_timeout_s (503 with Retry-After): a stalled
    # server costs a request that long, never a thread for ever.
    timeout_s = settings.database_timeout_s
    engine = create_engine_for(settings.resolved_database_url, timeout_s=timeout_s)
    # The reads of async code (the key check, the hot job reads: service.api.reads) have an
    # engine of their own, so that they never queue for a connection behind the sessions of
    # slower routes, with a connection for each read thread. Autocommit, as they write nothing:
    # PostgreSQL is spared a BEGIN and a ROLLBACK round trip each, and each statement still
    # sees what was committed before it, as in a READ COMMITTED transaction (SQLite's driver
    # begins no transaction for a SELECT either way).
    read_engine = create_engine_for(
        settings.resolved_database_url,
        timeout_s=timeout_s,
        isolation_level="AUTOCOMMIT",
        pool_pre_ping=False,  # a lost connection is retried instead (service.api.reads)
        pool_size=READ_THREADS,
        max_overflow=4,  # for the sync dependencies that check a key (the dashboard's pages)
    )
    body_decoder = BodyDecoder()  # large JSON bodies, decoded in a child process

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            body_decoder.close()
            engine.dispose()
            read_engine.dispose()

    app = FastAPI(
        title="Batchwise",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory(engine)
    app.state.read_session_factory = session_factory(read_engine)
    app.state.reads = Reads(app.state.read_session_factory)
    app.state.body_decoder = body_decoder
    install_problem_handlers(app)
    app.add_middleware(AuthenticateFirst)
    app.add_middleware(SameOriginWrites)  # outside the key check: a forged write costs no query
    # The uploads read under their own limits (max_upload_bytes); every other body is capped.
    uploads = {("POST", datasets.router.prefix), ("POST", datasets.router.prefix + "/inline")}
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes, exempt=uploads)
    # Routes are matched in order, each tried in turn: the health probes and the API first,
    # the docs and the dashboard's pages after.
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(datasets.router)
    app.include_router(sweeps.router)
    app.include_router(probes.router)
    app.include_router(plots.router)
    install_observability(app)
    install_security_headers(app)
    install_docs(app)
    install_dashboard(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


__all__ = ["create_app"]
