"""The demo's sentences and table rows, from what the API answered: progress lines, a sweep
point's row, the fit of S(B) = S_min (1 + B_noise / B) and the measured noise scale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.client.formatting import figure, seconds
from service.client.schemas import Job, Sweep, SweepPoint


def last(values: Sequence[float | None]) -> float | None:
    """The last of ``values``, or None when there are none."""
    return values[-1] if values else None


def job_error(job: Job) -> str:
    """Why ``job`` failed: ``code: message``."""
    error = job["error"]
    return f"{error['code']}: {error['message']}" if error else "no reason given"


def jobs_line(jobs: Sequence[Job]) -> str:
    """The seed comparison's progress: each job's batch size and state."""
    parts = []
    for job in jobs:
        progress = job["progress"]
        state: str = job["status"]
        if state == "running":
            state = f"{progress['fraction']:.0%} (epoch {progress['epoch']}/{progress['epochs']})"
        parts.append(f"batch {job['config']['batch_size']}: {state}")
    return "  ".join(parts)


def sweep_line(sweep: Sweep, elapsed_s: float) -> str:
    """The sweep's progress: its round, jobs done, running and queued, time so far."""
    counts = sweep["jobs"]
    finished = sum(counts.get(s, 0) for s in ("succeeded", "failed", "cancelled"))
    total = sum(counts.values())
    return (
        f"sweep {sweep['status']}: learning-rate round {sweep['round'] + 1}, {finished}/{total} "
        f"jobs done ({counts.get('running', 0)} running, {counts.get('queued', 0)} queued), "
        f"{elapsed_s:.0f} s"
    )


def point_row(point: SweepPoint) -> list[str]:
    """A sweep point's row of the table: batch, lr (``*`` at the edge), losses, cost to T."""
    lr = point["learning_rate"]
    lr_text = "—" if lr is None else f"{lr:.3g}" + ("*" if point["lr_interior"] is False else "")
    to_target = point["to_target"]
    return [
        str(point["batch_size"]),
        lr_text,
        figure(point["final"]["train"]),
        figure(point["final"]["validation"]),
        figure(to_target["steps"]),
        figure(to_target["samples"]),
        figure(to_target["epochs"], 3),
        seconds(to_target["wall_time_s"]),
        figure(point["samples_per_s"], 3),
    ]


def _interval(value: Any) -> str:
    if isinstance(value, dict) and value.get("low") is not None and value.get("high") is not None:
        return f" (95% interval {figure(value['low'], 3)}–{figure(value['high'], 3)})"
    return ""


def fit_text(fit: dict[str, Any] | None) -> str:
    """The fit of S(B) = S_min (1 + B_noise / B), with its intervals, or why there is none."""
    if fit is None:
        return "Fit of S(B) = S_min (1 + B_noise / B): none."
    if fit.get("b_noise") is None:
        return f"Fit of S(B) = S_min (1 + B_noise / B): refused — {fit.get('reason')}."
    text = (
        f"Fit of S(B) = S_min (1 + B_noise / B) over batch sizes "
        f"{', '.join(map(str, fit.get('batch_sizes') or []))}: B_noise ≈ "
        f"{figure(fit['b_noise'], 3)}{_interval(fit.get('b_noise_ci'))}, S_min ≈ "
        f"{figure(fit.get('s_min'), 3)} steps{_interval(fit.get('s_min_ci'))}, E_min ≈ "
        f"{figure(fit.get('e_min'), 3)} samples"
    )
    if fit.get("r2_log") is not None:
        text += f"; R² of the fit in log space {fit['r2_log']:.3f}"
    return text + "."


def noise_text(at_target: dict[str, Any] | None) -> str | None:
    """The measured B_simple beside the fit: read where the runs crossed the target's loss
    level (B_simple grows as the loss falls, so only one measured there compares with B_noise),
    the median over batch sizes and their range."""
    if not at_target or at_target.get("b_simple") is None:
        return None
    low, high = at_target["spread"]
    measured = sum(1 for point in at_target["points"] if point.get("b_simple") is not None)
    return (
        "Measured noise scale B_simple at the target's loss level "
        f"{figure(at_target['loss_level'])}: "
        f"median {figure(at_target['b_simple'], 3)} over {measured} batch size(s), range "
        f"{figure(low, 3)}–{figure(high, 3)} (corrected for sampling without replacement: "
        f"{figure(at_target['b_simple_corrected'], 3)})."
    )
