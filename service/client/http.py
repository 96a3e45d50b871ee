"""A small typed client of the Batchwise HTTP API, on httpx.

It talks HTTP only: no import of the service's API, database, jobs or sweeps (an import-linter
contract holds that), so it works the same against the embedded default and a deployment.
Answers come back as the JSON the API sends, typed with the views in
:mod:`service.client.schemas`. Every 4xx/5xx answer raises :class:`BatchwiseAPIError`
carrying the RFC 9457 problem fields; a connection that fails raises
:class:`BatchwiseConnectionError`, a wait that runs out :class:`BatchwiseTimeoutError`.
Requests carry ``Authorization: Bearer <api_key>``; without an ``api_key`` argument the key
comes from the ``BATCHWISE_API_KEY`` environment variable, and a service with
``BATCHWISE_AUTH=off`` needs none.

    with BatchwiseClient("http://127.0.0.1:8000", api_key="bw_…") as client:
        dataset = client.upload_dataset("houses.csv", target="price")
        job = client.submit_job(dataset["id"], batch_size=32, epochs=10)
        job = client.wait_for_job(job["id"], on_progress=lambda j: print(j["progress"]))
        history = client.history(job["id"])
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict, TypeVar, cast

import httpx
import numpy as np
from numpy.typing import ArrayLike

from service import __version__
from service.client.environment import API_KEY_ENV
from service.client.errors import (
    BatchwiseAPIError,
    BatchwiseConnectionError,
    BatchwiseTimeoutError,
)
from service.client.schemas import (
    FINISHED_JOB_STATUSES,
    FINISHED_PROBE_STATUSES,
    FINISHED_SWEEP_STATUSES,
    Dataset,
    DatasetPage,
    History,
    Job,
    JobPage,
    JobStatus,
    Model,
    Prediction,
    Probe,
    ProbePage,
    ProbeSummary,
    Sweep,
    SweepPage,
    SweepSummary,
)

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_POLL_S = 0.5

Arrays = tuple[ArrayLike, ArrayLike]
T = TypeVar("T")


class BatchwiseClient:
    """The Batchwise API at ``base_url`` (``http://host:port``, no path), each request
    allowed ``timeout`` seconds. A context manager: ``with BatchwiseClient(url) as client``
    closes its connections at the end (or call :meth:`close`).

    ``api_key``: the tenant's key (``batchwise keys create``); ``None`` reads
    ``$BATCHWISE_API_KEY``, and without either no ``Authorization`` header is sent.
    ``transport``: an httpx transport to use instead of the network (tests, proxies).
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        key = (os.environ.get(API_KEY_ENV, "") if api_key is None else api_key).strip()
        headers = {"User-Agent": f"batchwise-client/{__version__}"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport, headers=headers
        )

    def __enter__(self) -> BatchwiseClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise BatchwiseConnectionError(
                f"cannot reach {self.base_url} ({method} {path}): {exc or type(exc).__name__}"
            ) from exc
        if response.is_error:
            raise BatchwiseAPIError.from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # --- service ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok"}`` when the API answers."""
        return cast(dict[str, Any], self._json("GET", "/healthz"))

    def ready(self) -> dict[str, Any]:
        """``GET /readyz``: the database is reachable and its schema current (else 503)."""
        return cast(dict[str, Any], self._json("GET", "/readyz"))

    # --- datasets ---------------------------------------------------------------------------

    def upload_dataset(
        self,
        source: str | os.PathLike[str] | Arrays,
        *,
        name: str | None = None,
        target: str | int | None = None,
        invalid_rows: Literal["error", "drop"] | None = None,
    ) -> Dataset:
        """Upload a dataset as a multipart file: a path to a CSV, NPY or NPZ file (streamed),
        or arrays ``(X, y)`` — X (n_rows, n_features), y (n_rows,) — sent as an NPZ file.
        ``target`` (name or 0-based index) and ``invalid_rows`` apply to files."""
        form: dict[str, str] = {}
        if name is not None:
            form["name"] = name
        if target is not None:
            form["target"] = str(target)
        if invalid_rows is not None:
            form["invalid_rows"] = invalid_rows
        if isinstance(source, tuple):
            X, y = (np.asarray(a) for a in source)
            buffer = io.BytesIO()
            np.savez(buffer, X=X, y=y)
            files = {"file": ("arrays.npz", buffer.getvalue(), "application/octet-stream")}
            return cast(Dataset, self._json("POST", "/v1/datasets", data=form, files=files))
        path = Path(source)
        with path.open("rb") as stream:
            files_stream = {"file": (path.name, stream, "application/octet-stream")}
            return cast(Dataset, self._json("POST", "/v1/datasets", data=form, files=files_stream))

    def create_dataset_inline(
        self,
        X: ArrayLike,
        y: ArrayLike,
        *,
        name: str | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> Dataset:
        """Send a small dataset as JSON (up to 16 MiB): X (n_rows, n_features), y (n_rows,)."""
        body: dict[str, Any] = {
            "X": np.asarray(X, dtype=float).tolist(),
            "y": np.asarray(y, dtype=float).tolist(),
        }
        if name is not None:
            body["name"] = name
        if feature_names is not None:
            body["feature_names"] = list(feature_names)
        return cast(Dataset, self._json("POST", "/v1/datasets/inline", json=body))

    def get_dataset(self, dataset_id: str) -> Dataset:
        """``GET /v1/datasets/{id}``."""
        return cast(Dataset, self._json("GET", f"/v1/datasets/{dataset_id}"))

    def list_datasets(self, *, limit: int | None = None, cursor: str | None = None) -> DatasetPage:
        """``GET /v1/datasets``: one page (``limit`` 1 to 100, server default 20), newest
        first; pass its ``next_cursor`` as ``cursor`` for the next."""
        params = _params(limit=limit, cursor=cursor)
        return cast(DatasetPage, self._json("GET", "/v1/datasets", params=params))

    def iter_datasets(self, *, page_size: int = 100) -> Iterator[Dataset]:
        """Every dataset, newest first, fetched ``page_size`` at a time as the loop asks."""
        return _pages(lambda cursor: self.list_datasets(limit=page_size, cursor=cursor))

    def delete_dataset(self, dataset_id: str) -> None:
        """``DELETE /v1/datasets/{id}`` (409 while a queued or running job uses it)."""
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    # --- jobs -------------------------------------------------------------------------------

    def submit_job(self, dataset_id: str, **config: Any) -> Job:
        """``POST /v1/jobs``: train on ``dataset_id`` with ``config`` (the flat training
        config: ``batch_size=32, epochs=10, learning_rate=0.01, …``, plus ``name``, ``tags``,
        ``max_runtime_s``, ``init_from``, ``keep_checkpoints``). Answers the queued job; 422
        names a field that cannot run."""
        return cast(Job, self._json("POST", "/v1/jobs", json={"dataset_id": dataset_id, **config}))

    def list_checkpoints(self, job_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{id}/checkpoints``: the epochs a warm start (``submit_job(…,
        init_from={"job_id": id, "epoch": e})``) can start from, with samples and loss."""
        return cast(dict[str, Any], self._json("GET", f"/v1/jobs/{job_id}/checkpoints"))

    def get_job(self, job_id: str) -> Job:
        """``GET /v1/jobs/{id}``: status, progress, losses, error."""
        return cast(Job, self._json("GET", f"/v1/jobs/{job_id}"))

    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        dataset_id: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """``GET /v1/jobs``: one page (``limit`` 1 to 100, server default 20), newest first,
        optionally only those with ``status``, on ``dataset_id`` or tagged ``tag``; pass its
        ``next_cursor`` as ``cursor`` (with the same filters) for the next."""
        params = _params(status=status, dataset_id=dataset_id, tag=tag, limit=limit, cursor=cursor)
        return cast(JobPage, self._json("GET", "/v1/jobs", params=params))

    def iter_jobs(
        self,
        *,
        status: JobStatus | None = None,
        dataset_id: str | None = None,
        tag: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Job]:
        """Every job that passes the filters, newest first, fetched ``page_size`` at a time
        as the loop asks."""
        return _pages(
            lambda cursor: self.list_jobs(
                status=status, dataset_id=dataset_id, tag=tag, limit=page_size, cursor=cursor
            )
        )

    def delete_job(self, job_id: str) -> None:
        """``DELETE /v1/jobs/{id}``: a finished job with its history and model (409 while
        queued or running: cancel it first)."""
        self._request("DELETE", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> Job:
        """``POST /v1/jobs/{id}/cancel`` (409 once finished)."""
        return cast(Job, self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def history(self, job_id: str, *, max_points: int | None = None) -> History:
        """``GET /v1/jobs/{id}/history``; ``max_points`` min/max-downsamples the step losses."""
        params = {} if max_points is None else {"max_points": max_points}
        return cast(History, self._json("GET", f"/v1/jobs/{job_id}/history", params=params))

    def history_csv(
        self,
        job_id: str,
        *,
        table: Literal["epochs", "steps"] = "epochs",
        max_points: int | None = None,
    ) -> str:
        """The history as CSV text: one row per epoch (``table="epochs"``) or one ``step,loss``
        row per kept step (``"steps"``); empty cells where a value does not apply."""
        params = _params(table=table, max_points=max_points)
        return self._request("GET", f"/v1/jobs/{job_id}/history.csv", params=params).text

    def get_model(self, job_id: str) -> Model:
        """``GET /v1/jobs/{id}/model``: a succeeded job's parameters (409 before)."""
        return cast(Model, self._json("GET", f"/v1/jobs/{job_id}/model"))

    def get_model_npz(self, job_id: str) -> bytes:
        """The model as the bytes of an ``.npz`` file (no pickle): read it with
        ``np.load(io.BytesIO(data))``."""
        return self._request("GET", f"/v1/jobs/{job_id}/model.npz").content

    def predict(self, job_id: str, X: ArrayLike) -> Prediction:
        """Predictions for rows X (n_rows, n_features) from a succeeded job's model. A list is
        sent as it is, so the service checks it and names a row of the wrong width (422)."""
        rows = X if isinstance(X, list) else np.asarray(X, dtype=float).tolist()
        body = {"X": rows}
        return cast(Prediction, self._json("POST", f"/v1/jobs/{job_id}/predict", json=body))

    def wait_for_job(
        self,
        job_id: str,
        *,
        on_progress: Callable[[Job], None] | None = None,
        poll_s: float = DEFAULT_POLL_S,
        timeout_s: float | None = None,
    ) -> Job:
        """Poll the job every ``poll_s`` seconds, calling ``on_progress(job)`` after each look,
        until it has finished (succeeded, failed or cancelled); answer it then. A job that
        failed is answered, not raised: read its ``status`` and ``error``."""
        return self.wait_for_jobs(
            [job_id],
            on_progress=None if on_progress is None else (lambda jobs: on_progress(jobs[0])),
            poll_s=poll_s,
            timeout_s=timeout_s,
        )[0]

    def wait_for_jobs(
        self,
        job_ids: Sequence[str],
        *,
        on_progress: Callable[[list[Job]], None] | None = None,
        poll_s: float = DEFAULT_POLL_S,
        timeout_s: float | None = None,
    ) -> list[Job]:
        """:meth:`wait_for_job` for several jobs at once: ``on_progress`` gets them all, in
        the order of ``job_ids``, after each look; answers them once every one has finished."""
        return _poll(
            lambda: [self.get_job(job_id) for job_id in job_ids],
            lambda jobs: all(job["status"] in FINISHED_JOB_STATUSES for job in jobs),
            on_progress=on_progress,
            poll_s=poll_s,
            timeout_s=timeout_s,
            what=f"jobs {', '.join(job_ids)}",
        )

    # --- sweeps -----------------------------------------------------------------------------

    def create_sweep(self, dataset_id: str, batch_sizes: Sequence[int], **options: Any) -> Sweep:
        """``POST /v1/sweeps``: run ``base`` (a job config without dataset_id, batch_size and
        name) at every batch size, with ``learning_rates`` or ``lr_search`` or neither
        (scaled), ``target_fraction`` or ``target_loss``, ``target_on``, ``seeds``, ``name``."""
        body = {"dataset_id": dataset_id, "batch_sizes": list(batch_sizes), **options}
        return cast(Sweep, self._json("POST", "/v1/sweeps", json=body))

    def get_sweep(self, sweep_id: str) -> Sweep:
        """``GET /v1/sweeps/{id}``: status, points, fit, noise scale, recommendation."""
        return cast(Sweep, self._json("GET", f"/v1/sweeps/{sweep_id}"))

    def list_sweeps(self, *, limit: int | None = None, cursor: str | None = None) -> SweepPage:
        """``GET /v1/sweeps``: one page of summaries (``limit`` 1 to 100), newest first."""
        params = _params(limit=limit, cursor=cursor)
        return cast(SweepPage, self._json("GET", "/v1/sweeps", params=params))

    def iter_sweeps(self, *, page_size: int = 100) -> Iterator[SweepSummary]:
        """Every sweep's summary, newest first, fetched ``page_size`` at a time."""
        return _pages(lambda cursor: self.list_sweeps(limit=page_size, cursor=cursor))

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        """``POST /v1/sweeps/{id}/cancel`` (409 once finished)."""
        return cast(Sweep, self._json("POST", f"/v1/sweeps/{sweep_id}/cancel"))

    def wait_for_sweep(
        self,
        sweep_id: str,
        *,
        on_progress: Callable[[Sweep], None] | None = None,
        poll_s: float = DEFAULT_POLL_S,
        timeout_s: float | None = None,
    ) -> Sweep:
        """Poll the sweep every ``poll_s`` seconds, calling ``on_progress(sweep)`` after each
        look, until it has finished (succeeded, failed or cancelled); answer it then."""
        return _poll(
            lambda: self.get_sweep(sweep_id),
            lambda sweep: sweep["status"] in FINISHED_SWEEP_STATUSES,
            on_progress=on_progress,
            poll_s=poll_s,
            timeout_s=timeout_s,
            what=f"sweep {sweep_id}",
        )

    # --- probes -----------------------------------------------------------------------------

    def create_probe(self, job_id: str, **options: Any) -> Probe:
        """``POST /v1/probes``: branch ``job_id``'s checkpoints (``at_epochs``, a list or
        ``"auto"``) at ``multipliers`` × its batch for ``window_samples``, the rate per branch
        by ``lr`` (``"search"``, ``"sqrt"``, ``"linear"``), ``tolerance``, ``seeds``, ``name``."""
        body = {"job_id": job_id, **options}
        return cast(Probe, self._json("POST", "/v1/probes", json=body))

    def get_probe(self, probe_id: str) -> Probe:
        """``GET /v1/probes/{id}``: per checkpoint the critical batch, its bracket, B_simple."""
        return cast(Probe, self._json("GET", f"/v1/probes/{probe_id}"))

    def list_probes(self, *, limit: int | None = None, cursor: str | None = None) -> ProbePage:
        """``GET /v1/probes``: one page of summaries (``limit`` 1 to 100), newest first."""
        params = _params(limit=limit, cursor=cursor)
        return cast(ProbePage, self._json("GET", "/v1/probes", params=params))

    def iter_probes(self, *, page_size: int = 100) -> Iterator[ProbeSummary]:
        """Every probe's summary, newest first, fetched ``page_size`` at a time."""
        return _pages(lambda cursor: self.list_probes(limit=page_size, cursor=cursor))

    def cancel_probe(self, probe_id: str) -> Probe:
        """``POST /v1/probes/{id}/cancel`` (409 once finished)."""
        return cast(Probe, self._json("POST", f"/v1/probes/{probe_id}/cancel"))

    def wait_for_probe(
        self,
        probe_id: str,
        *,
        on_progress: Callable[[Probe], None] | None = None,
        poll_s: float = DEFAULT_POLL_S,
        timeout_s: float | None = None,
    ) -> Probe:
        """Poll the probe every ``poll_s`` seconds until it has finished; answer it then."""
        return _poll(
            lambda: self.get_probe(probe_id),
            lambda probe: probe["status"] in FINISHED_PROBE_STATUSES,
            on_progress=on_progress,
            poll_s=poll_s,
            timeout_s=timeout_s,
            what=f"probe {probe_id}",
        )

    # --- plots ------------------------------------------------------------------------------

    def get_plot(self, path: str, **params: str | int | float) -> bytes:
        """The image at ``path`` (``/v1/jobs/{id}/plots/loss.svg``, ``/v1/sweeps/{id}/plots/
        curves.png`` with ``x="samples"``, …) as bytes: SVG or PNG by the extension."""
        return self._request("GET", path, params=params).content


class _Page(TypedDict):
    items: list[Any]
    next_cursor: str | None


def _params(**values: str | int | None) -> dict[str, str | int]:
    """Query parameters without the ones left out (``None``)."""
    return {name: value for name, value in values.items() if value is not None}


def _pages(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    """The items of ``fetch(None)``, then of ``fetch(next_cursor)`` until it is null."""
    cursor: str | None = None
    while True:
        page = cast(_Page, fetch(cursor))
        yield from page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return


def _poll(
    look: Callable[[], T],
    done: Callable[[T], bool],
    *,
    on_progress: Callable[[T], None] | None,
    poll_s: float,
    timeout_s: float | None,
    what: str,
) -> T:
    if poll_s <= 0:
        raise ValueError(f"poll_s must be > 0, not {poll_s!r}")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        seen = look()
        if on_progress is not None:
            on_progress(seen)
        if done(seen):
            return seen
        if deadline is not None and time.monotonic() + poll_s > deadline:
            raise BatchwiseTimeoutError(f"{what} not finished after {timeout_s:g} s")
        time.sleep(poll_s)
