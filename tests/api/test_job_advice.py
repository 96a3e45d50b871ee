"""``GET /v1/jobs/{id}``'s ``batch_size_advice`` through the real app on both databases, from
noise-scale records written through the tables (``tests/jobs/factories``) and from a real run.

Hand-written records: epochs 1 … 8, each with |G|² = 0.01 and tr(Σ) = B_k · 0.01, so the late
window (the last quarter: epochs 7 and 8) averages B_simple = (B_7 + B_8) / 2 exactly; with
B_7 = b/2 and B_8 = 2b that is 1.25 b, and the spread factor exp(sd(ln B_7, ln B_8)) =
4^(1/√2) ≈ 2.67. The corrected noise scale is 1/(1/B_simple + 1/N), N the training rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.api import create_app
from service.config import Settings
from service.db import session_factory
from tests.support.factories import epoch_row, line_data, run_like_a_worker, set_job

N_ROWS = 1000
BATCH = 16
EPOCHS = 8
GRAD_SQ = 0.01
SPREAD = 4.0 ** (1.0 / math.sqrt(2.0))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def new_job(client: TestClient, n_rows: int = N_ROWS, **config: Any) -> str:
    X, y = line_data(n_rows)
    response = client.post("/v1/datasets", json={"name": "d", "X": X.tolist(), "y": y.tolist()})
    assert response.status_code == 201, response.text
    body = {"dataset_id": response.json()["id"], "batch_size": BATCH, "epochs": EPOCHS, **config}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def noise(b_simple: float | None, loss_level: float, grad_sq: float = GRAD_SQ) -> dict[str, Any]:
    trace = (b_simple or 1.0) * grad_sq if grad_sq > 0 else 1.0
    corrected = None if b_simple is None else 1.0 / (1.0 / b_simple + 1.0 / N_ROWS)
    return {
        "b_simple": b_simple,
        "b_simple_corrected": corrected,
        "trace_sigma": trace,
        "grad_sq_norm": grad_sq,
        "loss_level": loss_level,
        "n_samples": 1000,
    }


def write_epochs(
    engine: Engine,
    job_id: str,
    records: Sequence[dict[str, Any] | None],
    batch_size: int = BATCH,
) -> None:
    """One epoch row per entry, each with that ``noise_scale`` record (None: not measured)."""
    with session_factory(engine)() as session:
        set_job(session, job_id, status="running", attempt=1, epoch=len(records))
        for epoch, record in enumerate(records, start=1):
            losses = np.full(4, 1.0 / epoch, dtype=np.float32)
            session.add(epoch_row(job_id, epoch, losses, batch_size=batch_size, noise_scale=record))
        session.commit()


def late_records(b: float) -> list[dict[str, Any] | None]:
    """Epochs 1 … 8 at loss 1/k; B_simple b everywhere but b/2 at epoch 7 and 2b at epoch 8."""
    values = [b] * 6 + [b / 2, 2 * b]
    return [noise(value, 1.0 / k) for k, value in enumerate(values, start=1)]


def advice_of(client: TestClient, job_id: str) -> Any:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()["batch_size_advice"]


@pytest.mark.parametrize(
    ("b", "verdict"),
    [
        (1600.0, "well below"),  # B̂ = 1/(1/2000 + 1/1000) ≈ 667: ρ = 16/667 ≈ 0.024
        (13.0, "near"),  # B̂ ≈ 16.0: ρ ≈ 1.0
        (1.0, "well above"),  # B̂ ≈ 1.25: ρ ≈ 12.8
    ],
)
def test_advice_places_the_batch_against_the_late_noise_scale(
    client: TestClient, engine: Engine, b: float, verdict: str
) -> None:
    job_id = new_job(client, noise_scale=True)
    write_epochs(engine, job_id, late_records(b))

    advice = advice_of(client, job_id)
    b_simple = 1.25 * b
    corrected = 1.0 / (1.0 / b_simple + 1.0 / N_ROWS)
    assert advice["verdict"] == verdict
    assert advice["batch_size"] == BATCH
    assert advice["b_simple"] == pytest.approx(b_simple)
    assert advice["noise_scale"] == pytest.approx(corrected)
    assert advice["ratio"] == pytest.approx(BATCH / corrected)
    assert advice["uncertainty_factor"] == pytest.approx(SPREAD)
    assert advice["loss_level"] == pytest.approx((1 / 7 + 1 / 8) / 2)
    assert advice["window"] == [7, 8]
    assert advice["message"].startswith(f"batch {BATCH} is {verdict} the measured noise scale ≈")
    assert "(±2.7×) at training loss 0.13" in advice["message"]
    assert (advice["noise_scale_lower_bound"], advice["exact"]) == (None, False)


def test_without_noise_measurements_the_advice_is_null(client: TestClient, engine: Engine) -> None:
    queued = new_job(client, noise_scale=True)
    assert advice_of(client, queued) is None  # no epoch yet

    unmeasured = new_job(client)
    write_epochs(engine, unmeasured, [None] * 3)
    assert advice_of(client, unmeasured) is None

    # Lists and other answers never carry it (it is computed for GET /v1/jobs/{id} only).
    listed = client.get("/v1/jobs").json()["items"]
    assert [job["batch_size_advice"] for job in listed] == [None, None]


def test_only_a_job_that_measures_its_noise_scale_gets_advice(
    client: TestClient, engine: Engine
) -> None:
    # Noise records on a job whose config never asked for them (written by hand): the advice
    # follows the config, so reading a job never scans the epochs of one that measures nothing.
    job_id = new_job(client)
    write_epochs(engine, job_id, late_records(13.0))
    assert advice_of(client, job_id) is None

    adaptive = new_job(
        client, batch_size_schedule={"kind": "adaptive", "min_batch_size": 8, "max_batch_size": 64}
    )
    write_epochs(engine, adaptive, late_records(13.0))
    assert advice_of(client, adaptive)["verdict"] == "near"  # adaptive measures it


def test_an_unresolved_noise_scale_says_why_without_a_verdict(
    client: TestClient, engine: Engine
) -> None:
    job_id = new_job(client, noise_scale=True)
    # |G|² ≤ 0 in the late window, in records that predate n_samples: nothing bounds B_simple.
    unsized = {k: v for k, v in noise(None, 0.1, grad_sq=-0.001).items() if k != "n_samples"}
    records = [noise(100.0, 0.5)] * 2 + [unsized] * 2
    write_epochs(engine, job_id, records)
    advice = advice_of(client, job_id)
    assert advice["verdict"] is None
    assert advice["noise_scale"] is None
    assert advice["ratio"] is None
    assert advice["loss_level"] == pytest.approx(0.1)
    assert advice["message"].startswith(f"no advice for batch {BATCH}: the mean |G|²")


@pytest.mark.parametrize(
    ("batch_size", "verdict", "says"),
    [
        (BATCH, "well below", f"batch {BATCH} is well below the noise scale, which is at least"),
        (512, None, "batch 512 is at most 0.77× the noise scale, which is at least"),
    ],
)
def test_an_unresolved_noise_scale_gives_its_lower_bound(
    client: TestClient, engine: Engine, batch_size: int, verdict: str | None, says: str
) -> None:
    # The late |G|² estimates of 1000 sampled rows are −0.0005 with tr(Σ) = 1: the sample's
    # |ḡ|² = |G|² + tr(Σ)/n = 0.0005, so B_simple ≳ 1/0.0005 = 2000 and, corrected for
    # N = 1000 rows, B̂ ≳ 1/(1/2000 + 1/1000) ≈ 667: batch 16 is < 1/4 of it whatever B̂ is.
    job_id = new_job(client, noise_scale=True)
    records = [noise(100.0, 0.5)] * 2 + [noise(None, 0.1, grad_sq=-0.0005)] * 2
    write_epochs(engine, job_id, records, batch_size=batch_size)
    advice = advice_of(client, job_id)
    bound = 1.0 / (1.0 / 2000.0 + 1.0 / N_ROWS)
    assert advice["verdict"] == verdict
    assert (advice["noise_scale"], advice["ratio"], advice["b_simple"]) == (None, None, None)
    assert advice["noise_scale_lower_bound"] == pytest.approx(bound)
    assert advice["loss_level"] == pytest.approx(0.1)
    assert advice["message"].startswith(f"{says} ≈ 670 at training loss 0.10 (a lower bound")


def digits_like(n_rows: int = 1797, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Like scikit-learn's digits: 64 features, 10 classes, 1,437 training rows after a 20%
    validation split; overlapping classes, so softmax converges to a training loss near 0.06,
    where the mean gradient is small against the per-example noise."""
    rng = np.random.default_rng(seed)
    centres = 0.5 * rng.standard_normal((10, 64))
    labels = rng.integers(0, 10, n_rows)
    return centres[labels] + rng.standard_normal((n_rows, 64)), labels


def test_a_small_softmax_job_gets_an_exact_verdict(client: TestClient, engine: Engine) -> None:
    # On 1,438 training rows a 1,024-row sample left the late |G|² unresolved ("no advice"):
    # within the exact budget it is the full-batch gradient, positive, and the advice decides.
    X, y = digits_like()
    response = client.post("/v1/datasets", json={"name": "d", "X": X.tolist(), "y": y.tolist()})
    assert response.status_code == 201, response.text
    body = {
        "dataset_id": response.json()["id"],
        "model": "softmax",
        "batch_size": 32,
        "epochs": 20,
        "learning_rate": 0.1,
        "validation_split": 0.2,
        "standardize": True,
        "noise_scale": True,
    }
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    with session_factory(engine)() as session:
        run_like_a_worker(session, job_id, X, y)
        session.commit()

    history = client.get(f"/v1/jobs/{job_id}/history").json()
    for entry in history["noise_scale"]:
        assert (entry["exact"], entry["n_samples"], entry["b_simple_lower_bound"]) == (
            True, 1438, None,
        )  # fmt: skip
        assert entry["grad_sq_norm"] > 0
    late = history["noise_scale"][15:]  # the last quarter: epochs 16 … 20
    b_simple = sum(e["trace_sigma"] for e in late) / sum(e["grad_sq_norm"] for e in late)
    advice = advice_of(client, job_id)
    assert advice["exact"] is True
    assert advice["b_simple"] == pytest.approx(b_simple, rel=1e-9)
    assert advice["verdict"] == "well below"  # B̂ ≈ 790 against batch 32
    assert advice["message"].startswith("batch 32 is well below the exact noise scale ≈ ")
    loss = sum(e["loss_level"] for e in late) / len(late)
    assert f"at training loss {loss:.2f}" in advice["message"]


def test_a_real_run_measures_its_noise_scale_and_advises_on_it(
    client: TestClient, engine: Engine
) -> None:
    X, y = line_data(400)
    response = client.post("/v1/datasets", json={"name": "d", "X": X.tolist(), "y": y.tolist()})
    body = {
        "dataset_id": response.json()["id"],
        "batch_size": 8,
        "epochs": 8,
        "learning_rate": 0.05,
        "validation_split": 0.25,
        "noise_scale": True,
        "noise_scale_samples": 256,
    }
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    with session_factory(engine)() as session:
        run_like_a_worker(session, job_id, X, y)
        session.commit()

    history = client.get(f"/v1/jobs/{job_id}/history").json()
    measured = history["noise_scale"]
    assert len(measured) == 8
    for entry in measured:
        assert {"b_simple", "b_simple_corrected", "loss_level"} <= set(entry)
        assert entry["loss_level"] > 0
    # The advice recomputes the window from the history: epochs 7 and 8 of 8, N = 300 rows.
    late = measured[6:]
    b_simple = sum(e["trace_sigma"] for e in late) / sum(e["grad_sq_norm"] for e in late)
    corrected = 1.0 / (1.0 / b_simple + 1.0 / 300)
    advice = advice_of(client, job_id)
    assert advice["window"] == [7, 8]
    assert advice["b_simple"] == pytest.approx(b_simple, rel=1e-9)
    assert advice["noise_scale"] == pytest.approx(corrected, rel=1e-9)
    assert advice["loss_level"] == pytest.approx(
        (late[0]["loss_level"] + late[1]["loss_level"]) / 2
    )
    ratio = 8 / corrected
    expected = (
        "well below" if ratio < 0.25 else "below" if ratio < 0.5 else "near" if ratio <= 2
        else "above" if ratio <= 4 else "well above"
    )  # fmt: skip
    assert advice["verdict"] == expected


def test_an_unknown_job_is_still_404(client: TestClient) -> None:
    response = client.get("/v1/jobs/no-such-job")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
