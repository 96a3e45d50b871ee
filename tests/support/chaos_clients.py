"""The chaos run's HTTP clients: every answer recorded, a dead API process failed over.

Each call goes to one of the API processes (round robin); a connection error (the process is
dead) is recorded apart from the answers and the call goes to the other one. A 503 with
``Retry-After`` is waited out (the wait capped, to keep the run short) and the call repeated.
A POST that may have been committed before its answer was lost (a connection error, a 503 or
another 5xx) is looked up before it is sent again — by the unique tag or name the caller gave
it — so a retry never creates a second job, sweep or dataset.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

#: The longest a client waits on a ``Retry-After`` (the service says 5 s; the run is short).
RETRY_AFTER_CAP_S = 1.0
#: Tries of one call before the run gives up on it.
MAX_TRIES = 60
REQUEST_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Answer:
    """One HTTP answer a client got: when (seconds into the run), from which API process."""

    at: float
    api: int
    method: str
    route: str  # the path with ids replaced by ``{id}``
    status: int
    retry_after: str | None


@dataclass(frozen=True)
class ConnectionFailure:
    """A request that got no answer: the process was dead, or died while it was answered."""

    at: float
    api: int
    method: str
    route: str
    error: str


@dataclass(frozen=True)
class Reply:
    """What a call ended with: the answer, or what a lookup found after a lost answer."""

    status: int
    body: Any


class Recorder:
    """Every answer and connection failure of the run, from every thread."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.answers: list[Answer] = []
        self.failures: list[ConnectionFailure] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.started

    def answer(self, api: int, method: str, route: str, response: httpx.Response) -> None:
        with self._lock:
            self.answers.append(
                Answer(
                    self.now(),
                    api,
                    method,
                    route,
                    response.status_code,
                    response.headers.get("retry-after"),
                )
            )

    def failure(self, api: int, method: str, route: str, error: Exception) -> None:
        with self._lock:
            self.failures.append(
                ConnectionFailure(self.now(), api, method, route, type(error).__name__)
            )


def acceptable(answer: Answer) -> bool:
    """2xx, 4xx, or a 503 that says when to come back."""
    if answer.status == 503:
        return answer.retry_after is not None
    return 200 <= answer.status < 300 or 400 <= answer.status < 500


class ChaosClient:
    """One thread's client of every API process (``base_urls`` read at each call: a
    restarted process keeps its URL)."""

    def __init__(self, base_urls: Sequence[str], recorder: Recorder) -> None:
        self.base_urls = list(base_urls)
        self.recorder = recorder
        self._clients = [httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) for url in base_urls]
        self._next = 0

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        route: str,
        lookup: Callable[[], Any] | None = None,
        prefer: int | None = None,
        **kwargs: Any,
    ) -> Reply:
        """Send until answered with anything but a 5xx; ``lookup`` (POSTs) finds what an
        earlier, unanswered try may have created: what it returns, if anything, is the
        reply (status 0: found, not answered)."""
        api = self._next if prefer is None else prefer
        self._next = (self._next + 1) % len(self._clients)
        for _ in range(MAX_TRIES):
            try:
                response = self._clients[api].request(method, path, **kwargs)
            except httpx.TransportError as exc:
                self.recorder.failure(api, method, route, exc)
                api = (api + 1) % len(self._clients)
                time.sleep(0.05)
                if lookup is not None and (found := lookup()) is not None:
                    return Reply(0, found)
                continue
            self.recorder.answer(api, method, route, response)
            if response.status_code < 500:
                return Reply(response.status_code, _body(response))
            # A 5xx: wait as told (or a moment), then again, elsewhere if this one is sick.
            retry_after = response.headers.get("retry-after")
            wait = min(float(retry_after), RETRY_AFTER_CAP_S) if retry_after else 0.2
            time.sleep(wait)
            api = (api + 1) % len(self._clients)
            if lookup is not None and (found := lookup()) is not None:
                return Reply(0, found)
        raise AssertionError(f"{method} {path}: no answer but 5xx after {MAX_TRIES} tries")

    def get(self, path: str, *, route: str, **kwargs: Any) -> Any:
        """GET until answered; the body of a 2xx (AssertionError on a 4xx)."""
        reply = self.call("GET", path, route=route, **kwargs)
        assert 200 <= reply.status < 300, f"GET {path}: {reply.status} {reply.body}"
        return reply.body

    def find_job(self, tag: str) -> dict[str, Any] | None:
        items = self.get("/v1/jobs", params={"tag": tag}, route="/v1/jobs?tag")["items"]
        assert len(items) <= 1, f"a retried POST made {len(items)} jobs tagged {tag}"
        return items[0] if items else None

    def find_named(self, collection: str, name: str) -> dict[str, Any] | None:
        """The newest-first first page of ``/v1/<collection>``: the item called ``name``."""
        page = self.get(f"/v1/{collection}", params={"limit": 100}, route=f"/v1/{collection}")
        named = [item for item in page["items"] if item["name"] == name]
        assert len(named) <= 1, f"a retried POST made {len(named)} {collection} named {name}"
        return named[0] if named else None

    def submit_job(self, body: dict[str, Any], tag: str) -> str:
        """POST /v1/jobs with the unique ``tag``; the job's id (from its answer or lookup)."""
        reply = self.call(
            "POST",
            "/v1/jobs",
            route="/v1/jobs",
            json=body | {"tags": [tag]},
            lookup=lambda: self.find_job(tag),
        )
        assert reply.status in (0, 202), f"POST /v1/jobs: {reply.status} {reply.body}"
        job_id: str = reply.body["id"]
        return job_id


def _body(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").split(";")[0].endswith("json"):
        return response.json()
    return response.text


__all__ = [
    "RETRY_AFTER_CAP_S",
    "Answer",
    "ChaosClient",
    "ConnectionFailure",
    "Recorder",
    "Reply",
    "acceptable",
]
