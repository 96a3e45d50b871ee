"""Observability of the API: a request id on every request, and ``GET /metrics``.

Request ids: each HTTP request gets one — the client's ``X-Request-ID`` when it is well-formed
(1-128 of ``A-Z a-z 0-9 . _ : -``, starting with a letter or digit), else a new random one —
echoed in the response's ``X-Request-ID`` (500s included) and carried by every log line of the
request (:func:`service.logs.log_context`).

Metrics (prometheus-client, one registry per app):

- from this process: ``batchwise_http_requests_total{method, route, status}`` (status class
  ``2xx`` … ``5xx``) and ``batchwise_http_request_duration_seconds{method, route}``, labelled
  by the route's path template (``/v1/jobs/{job_id}``), never the raw path, so ids cannot
  explode the number of series; plus the standard ``process_*`` and ``python_*`` metrics.
- from the database, read at scrape time (the API is stateless, several API processes may
  run, workers have no HTTP port): jobs by status, queue depth and oldest queued age, the
  durations of jobs finished in the last hour (a *gauge* histogram: it can go down as jobs
  leave the window, so read it with ``histogram_quantile`` directly, not through ``rate``),
  and the training speed of the running jobs (from each one's latest epoch record).

With ``BATCHWISE_METRICS_TOKEN`` set, ``/metrics`` answers only a request that carries it as a
bearer token (401 problem+json with ``WWW-Authenticate: Bearer`` otherwise).
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
)
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import MutableHeaders
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import problem_responses
from service.db import utcnow
from service.errors import Unauthorized
from service.jobs.stats import FINAL_STATUSES, JOB_STATUSES, read_job_stats
from service.logs import log_context

logger = logging.getLogger("service.api")

REQUEST_ID_HEADER = "X-Request-ID"
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: Jobs finished this long ago or less make up the job-duration histogram.
JOB_DURATION_WINDOW = timedelta(hours=1)
#: Job-duration bucket bounds, seconds: 1 s … 1 day.
JOB_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
#: The route label of a request that matched no route (one series, whatever the path).
UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

METRICS_EXAMPLE = """\
# HELP batchwise_jobs Jobs in the database, by status.
# TYPE batchwise_jobs gauge
batchwise_jobs{status="queued"} 3.0
batchwise_jobs{status="running"} 2.0
# HELP batchwise_queue_depth Jobs waiting to be claimed.
# TYPE batchwise_queue_depth gauge
batchwise_queue_depth 3.0
"""


def request_id_from(header: str | None) -> str:
    """The client's request id when well-formed, else a new one (32 hex digits)."""
    if header is not None and _WELL_FORMED_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The path template of the route that served ``scope`` (``/v1/jobs/{job_id}``), a
    mount's ``/prefix/{path}``, or :data:`UNMATCHED_ROUTE`."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(template, str) and template:
        return template
    path = scope.get("path", "")
    for candidate in routes:
        if isinstance(candidate, Mount) and path.startswith(candidate.path + "/"):
            return candidate.path + "/{path}"
    return UNMATCHED_ROUTE


class RequestMetrics:
    """The per-process request counter and latency histogram, by route template."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "batchwise_http_requests",
            "HTTP requests answered, by method, route template and status class.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "batchwise_http_request_duration_seconds",
            "Time from request to the end of the response body, by method and route template.",
            ("method", "route"),
            registry=registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        self.requests.labels(method, route, f"{status // 100}xx").inc()
        self.latency.labels(method, route).observe(seconds)


class RequestObservability:
    """ASGI middleware, outermost (around the 500 handler too): the request id, its log
    context and response header, and the request metrics."""

    def __init__(
        self, app: ASGIApp, *, routes: Sequence[BaseRoute], metrics: RequestMetrics
    ) -> None:
        self.app, self.routes, self.metrics = app, routes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next(
            (v for k, v in scope.get("headers", ()) if k.lower() == b"x-request-id"), None
        )
        request_id = request_id_from(None if header is None else header.decode("latin-1"))
        status = 500  # unless a response starts: an exception escaped before any was sent

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        started = time.perf_counter()
        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self.metrics.observe(
                    scope["method"],
                    route_template(scope, self.routes),
                    status,
                    time.perf_counter() - started,
                )


class JobsCollector:
    """Job metrics read from the database at each scrape (:func:`read_job_stats`).

    An unreachable database gives ``batchwise_database_up 0`` and no job metrics, so the
    request metrics are still scraped.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        clock: Callable[[], datetime] = utcnow,
        window: timedelta = JOB_DURATION_WINDOW,
    ) -> None:
        self.sessions, self.clock, self.window = sessions, clock, window

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "batchwise_database_up", "1 when the last scrape could read the jobs, else 0."
        )
        try:
            with self.sessions() as session:
                stats = read_job_stats(session, now=self.clock(), window=self.window)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            logger.warning("metrics: cannot read the jobs: %s", reason)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        jobs = GaugeMetricFamily(
            "batchwise_jobs", "Jobs in the database, by status.", labels=["status"]
        )
        for status in JOB_STATUSES:
            jobs.add_metric([status], stats.by_status[status])
        yield jobs
        yield GaugeMetricFamily(
            "batchwise_queue_depth", "Jobs waiting to be claimed.", stats.by_status["queued"]
        )
        yield GaugeMetricFamily(
            "batchwise_queue_oldest_age_seconds",
            "Age of the oldest queued job (0 when none waits).",
            stats.oldest_queued_age_s,
        )
        yield self._durations(stats.finished)

        speeds = [job.samples_per_s for job in stats.running if job.samples_per_s is not None]
        yield GaugeMetricFamily(
            "batchwise_running_jobs_samples_per_second",
            "Training samples per second of all running jobs together (each job's latest epoch).",
            sum(speeds),
        )
        walls = [job.epoch_wall_time_s for job in stats.running if job.epoch_wall_time_s]
        yield GaugeMetricFamily(
            "batchwise_running_jobs_epochs_per_second",
            "Epochs per second of all running jobs together (1 / each job's latest epoch's "
            "wall time).",
            sum(1.0 / wall for wall in walls),
        )

    def _durations(self, finished: Iterable[Any]) -> GaugeHistogramMetricFamily:
        window_s = int(self.window.total_seconds())
        family = GaugeHistogramMetricFamily(
            "batchwise_job_duration_seconds",
            f"Seconds from first claim to end of the jobs finished in the last {window_s} s, "
            "by final status (a gauge histogram: it goes down as jobs leave the window).",
            labels=["status"],
        )
        for status in FINAL_STATUSES:
            durations = [job.duration_s for job in finished if job.status == status]
            buckets = [
                (_bound(le), sum(1 for d in durations if d <= le)) for le in JOB_DURATION_BUCKETS
            ]
            buckets.append(("+Inf", len(durations)))
            family.add_metric([status], buckets, gsum_value=sum(durations))
        return family


def _bound(le: float) -> str:
    return f"{float(le)}"


router = APIRouter(tags=["metrics"])


def _check_metrics_token(request: Request) -> None:
    """With ``Settings.metrics_token`` set, :class:`Unauthorized` (401, ``WWW-Authenticate:
    Bearer``) unless the request carries it as a bearer token; compared in constant time."""
    token = request.app.state.settings.metrics_token
    if token is None:
        return
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), expected):
        return
    raise Unauthorized(
        "GET /metrics needs the metrics token: send `Authorization: Bearer <token>` with the "
        "token set in BATCHWISE_METRICS_TOKEN" + (" (the one sent is not it)." if sent else "."),
        invalid_token=bool(sent),
    )


@router.get(
    "/metrics",
    operation_id="getMetrics",
    summary="Prometheus metrics",
    description="Metrics in the Prometheus text format (OpenMetrics when the `Accept` header "
    "asks for `application/openmetrics-text`): jobs by status, queue depth and oldest queued "
    "age, durations of the jobs finished in the last hour, training speed of the running "
    "jobs — read from the database at each scrape, the same from every API process — and "
    "this process's request counts and latencies by route template.",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "The metrics.",
            "content": {"text/plain": {"schema": {"type": "string"}, "example": METRICS_EXAMPLE}},
        },
        **problem_responses(401, 500),
    },
)
def metrics(request: Request) -> Response:
    _check_metrics_token(request)
    registry: CollectorRegistry = request.app.state.metrics_registry
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(registry), media_type=content_type)


def install_observability(app: FastAPI) -> None:
    """Give ``app`` request ids, request metrics and ``GET /metrics`` (its job metrics read
    through ``app.state.session_factory``)."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    registry.register(JobsCollector(app.state.session_factory))
    request_metrics = RequestMetrics(registry)
    app.state.metrics_registry = registry
    app.include_router(router)

    # Outermost, around Starlette's ServerErrorMiddleware: a 500 still gets its request id
    # (header and log line) and is counted.
    build_stack = app.build_middleware_stack

    def build_observed_stack() -> ASGIApp:
        return RequestObservability(
            build_stack(), routes=app.router.routes, metrics=request_metrics
        )

    app.build_middleware_stack = build_observed_stack  # type: ignore[method-assign]


__all__ = [
    "JOB_DURATION_BUCKETS",
    "JOB_DURATION_WINDOW",
    "REQUEST_ID_HEADER",
    "UNMATCHED_ROUTE",
    "JobsCollector",
    "RequestMetrics",
    "RequestObservability",
    "install_observability",
    "request_id_from",
    "route_template",
]
