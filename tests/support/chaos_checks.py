"""What a chaos run must have left (see :mod:`tests.support.chaos`), read from the database,
the processes' logs and data dirs, and the answers the clients recorded.

Histories are judged against an undisturbed in-process run of the core on the dataset's
stored bytes (read back as a worker reads them) and the job's stored, resolved config: the
records as canonical JSON (timing fields aside) and the step losses as the exact stored bytes,
and the final model's ``.npz`` bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from service.core import TrainConfig, Training
from service.core.finite import json_safe
from service.datasets.arrays import open_canonical
from service.datasets.service import read_dataset_bytes
from service.db import session_factory
from service.db.tables import Dataset, DatasetChunk, Job, JobEpoch, JobModel
from tests.support.chaos import ChaosRun, Outage
from tests.support.chaos_clients import Answer, ConnectionFailure, acceptable
from tests.support.stored import TIMING_FIELDS

#: A request sent just before a fault window may be answered just after it.
WINDOW_GRACE_S = 5.0


@dataclass
class Verdict:
    """The run judged; every list of problems is empty on a good run."""

    jobs: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    not_succeeded: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    identical_histories: int = 0
    history_mismatches: list[str] = field(default_factory=list)
    reference_configs: int = 0
    attempts: Counter[int] = field(default_factory=Counter)  # attempt → jobs
    extra_attempts: int = 0
    interruptions: int = 0  # jobs' workers killed, jobs given up, workers ended on their own
    attempt_problems: list[str] = field(default_factory=list)
    answers_by_status: Counter[int] = field(default_factory=Counter)
    unacceptable: list[Answer] = field(default_factory=list)
    stray_503: list[Answer] = field(default_factory=list)
    connection_failures: int = 0
    stray_failures: list[ConnectionFailure] = field(default_factory=list)
    storage_problems: list[str] = field(default_factory=list)


def _canonical(record: dict[str, Any]) -> str:
    kept = {k: v for k, v in json_safe(record).items() if k not in TIMING_FIELDS}
    return json.dumps(kept, sort_keys=True, allow_nan=False)


@dataclass(frozen=True)
class _Stored:
    epochs: list[int]
    records: list[str]
    step_losses: list[bytes]
    npz: bytes | None


def _stored(session: Session, job_id: str) -> _Stored:
    rows = session.scalars(
        select(JobEpoch).where(JobEpoch.job_id == job_id).order_by(JobEpoch.epoch)
    ).all()
    model = session.get(JobModel, job_id)
    return _Stored(
        [row.epoch for row in rows],
        [_canonical(row.record) for row in rows],
        [row.step_losses for row in rows],
        None if model is None else model.npz,
    )


def _reference(session: Session, dataset_id: str, config: dict[str, Any], work: Path) -> _Stored:
    """An undisturbed run of ``config`` on the dataset's stored bytes, as the worker reads
    them (canonical file, memory-mapped)."""
    path = work / f"{dataset_id}.npy"
    dataset = read_dataset_bytes(session, dataset_id, path)
    X, y = open_canonical(path, dataset.n_features, mmap=True)
    training = Training(X, y, TrainConfig.from_dict(config), task=dataset.task)
    records = list(training)
    return _Stored(
        [r.epoch for r in records],
        [_canonical(r.to_dict()) for r in records],
        [r.step_losses.astype("<f4").tobytes() for r in records],
        training.model.to_npz_bytes(),
    )


def check_jobs(engine: Engine, run: ChaosRun, verdict: Verdict) -> None:
    """Every job once (no retried POST made a second), succeeded, with the history and model
    of an undisturbed run; attempts no more than the interruptions explain."""
    with session_factory(engine)() as session:
        jobs = session.scalars(select(Job)).all()
        verdict.jobs = len(jobs)
        verdict.statuses = Counter(job.status for job in jobs)
        expected = set(run.job_ids)
        if len(run.job_ids) != run.plan.jobs or {job.id for job in jobs} != expected:
            verdict.duplicates.append(
                f"{len(jobs)} job rows for {run.plan.jobs} submitted "
                f"({len({job.id for job in jobs} - expected)} unexpected)"
            )
        tags = Counter(tag for job in jobs for tag in job.tags if tag.startswith("chaos-job-"))
        verdict.duplicates += [f"{tag}: {n} jobs" for tag, n in tags.items() if n != 1]
        references: dict[str, _Stored] = {}
        with tempfile.TemporaryDirectory(prefix="chaos-reference-") as work:
            for job in jobs:
                verdict.attempts[job.attempt] += 1
                if job.status != "succeeded":
                    verdict.not_succeeded.append(
                        f"{job.id}: {job.status} on attempt {job.attempt} "
                        f"({job.error_code}: {job.error_message})"
                    )
                    continue
                key = json.dumps([job.dataset_id, job.config], sort_keys=True)
                if key not in references:
                    references[key] = _reference(session, job.dataset_id, job.config, Path(work))
                problem = _compare(_stored(session, job.id), references[key])
                if problem:
                    verdict.history_mismatches.append(f"{job.id}: {problem}")
                else:
                    verdict.identical_histories += 1
        verdict.reference_configs = len(references)
        attempts = {job.id: job.attempt for job in jobs}
    _check_attempts(run, verdict, attempts)


def _compare(stored: _Stored, reference: _Stored) -> str | None:
    if stored.epochs != reference.epochs:
        return f"epochs {stored.epochs} where an undisturbed run stores {reference.epochs}"
    for epoch, (got, want) in enumerate(zip(stored.records, reference.records, strict=True), 1):
        if got != want:
            return f"epoch {epoch}'s record differs: {got} != {want}"
    for epoch, (got_b, want_b) in enumerate(
        zip(stored.step_losses, reference.step_losses, strict=True), 1
    ):
        if got_b != want_b:
            return f"epoch {epoch}'s step losses differ"
    if stored.npz != reference.npz:
        return "the stored model's bytes differ"
    return None


def _count(outputs: list[str], pattern: str) -> Counter[str]:
    return Counter(job for output in outputs for job in re.findall(pattern, output))


def _check_attempts(run: ChaosRun, verdict: Verdict, attempts: dict[str, int]) -> None:
    """Each job's extra attempts are explained by its interruptions (a kill while a worker ran
    it, its worker giving it up during the database's outage, its worker ending on its own);
    each job was finished by one worker, and claimed no more often than its attempt count."""
    outputs = run.worker_outputs
    interrupted = Counter(e.job_id for e in [*run.kills, *run.worker_exits] if e.job_id)
    interrupted += _count(outputs, r"job (\S+): given up \(")
    verdict.extra_attempts = sum(attempt - 1 for attempt in attempts.values())
    verdict.interruptions = sum(interrupted.values())
    verdict.attempt_problems += [
        f"{job}: {attempt} attempts for {interrupted[job]} interruptions"
        for job, attempt in attempts.items()
        if attempt - 1 > interrupted[job]
    ]
    finished = _count(outputs, r"job (\S+): succeeded after")
    verdict.attempt_problems += [
        f"{job}: finished {n} times" for job, n in finished.items() if n > 1
    ]
    claimed = _count(outputs, r"claimed job (\S+) \(attempt")
    verdict.attempt_problems += [
        f"{job}: claimed {n} times, attempt {attempts.get(job)}"
        for job, n in claimed.items()
        if n > attempts.get(job, 0)
    ]


def _inside(at: float, windows: list[Outage]) -> bool:
    return any(w.down - 0.5 <= at <= w.up + WINDOW_GRACE_S for w in windows)


def check_answers(run: ChaosRun, verdict: Verdict) -> None:
    """Every answer 2xx/4xx or a 503 with Retry-After, the 503s during the database's outage;
    connection failures only to an API process while it was dead."""
    answers = run.recorder.answers
    verdict.answers_by_status = Counter(answer.status for answer in answers)
    verdict.unacceptable = [a for a in answers if not acceptable(a)]
    verdict.stray_503 = [
        a for a in answers if a.status == 503 and not _inside(a.at, run.pg_outages)
    ]
    failures = run.recorder.failures
    verdict.connection_failures = len(failures)
    dead = {kill.api: [kill.window] for kill in run.api_kills}
    verdict.stray_failures = [f for f in failures if not _inside(f.at, dead.get(f.api, []))]


def check_storage(engine: Engine, run: ChaosRun, verdict: Verdict) -> None:
    """Datasets whole (the rows the clients were answered 201 for, each with all its chunks,
    size and sha256 as recorded), the killed upload left nothing, and no file half-written in
    any data dir."""
    problems = verdict.storage_problems
    with session_factory(engine)() as session:
        datasets = session.scalars(select(Dataset)).all()
        if sorted(d.id for d in datasets) != sorted(run.dataset_ids.values()):
            problems.append(f"datasets {[d.name for d in datasets]}, expected A and B once each")
        for dataset in datasets:
            seqs = session.scalars(
                select(DatasetChunk.seq).where(DatasetChunk.dataset_id == dataset.id)
            ).all()
            if sorted(seqs) != list(range(dataset.chunk_count)):
                problems.append(f"dataset {dataset.name}: chunks {sorted(seqs)}")
                continue
            with tempfile.TemporaryDirectory() as work:
                try:
                    read_dataset_bytes(session, dataset.id, Path(work) / "bytes.npy")
                except Exception as exc:  # the stored bytes do not match their record
                    problems.append(f"dataset {dataset.name}: {exc}")
    for kill in run.api_kills:
        if not kill.spooling:
            problems.append(f"API {kill.api} was not killed mid-upload")
        if not set(kill.spooling) <= set(kill.left_after_kill):
            problems.append(f"API {kill.api}'s spool after the kill: {kill.left_after_kill}")
        if kill.left_after_restart:
            problems.append(f"API {kill.api}'s spool after restart: {kill.left_after_restart}")
    for spool in run.spools:
        left = sorted(p.name for p in spool.iterdir()) if spool.is_dir() else []
        if left:
            problems.append(f"{spool.parent.name}'s spool at the end: {left}")
    cache = run.worker_data_dir / "cache"
    for path in sorted(cache.iterdir()) if cache.is_dir() else []:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if path.name != f"{digest}.npy":
            problems.append(f"worker cache file {path.name}: not a whole dataset")


def summary(run: ChaosRun, verdict: Verdict) -> list[str]:
    """The run's figures, one per line: faults injected, jobs, attempts, histories, answers."""
    kills = run.kills
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(verdict.answers_by_status.items()))
    exits = Counter(e.status for e in run.worker_exits)
    return [
        f"faults: {len(kills)} worker kill -9s ({sum(k.mid_job for k in kills)} mid-job), "
        f"{len(run.pg_outages)} PostgreSQL restart(s) "
        f"({', '.join(f'{o.up - o.down:.1f} s down' for o in run.pg_outages)}), "
        f"{len(run.api_kills)} API kill -9(s) mid-upload "
        f"({', '.join(f'{k.window.up - k.window.down:.1f} s down' for k in run.api_kills)})",
        f"workers that ended on their own (status: count): {dict(exits) or 'none'}",
        f"jobs: {verdict.jobs} ({run.plan.sweep_jobs} sweep points, {run.plan.plain_jobs} plain); "
        f"statuses {dict(verdict.statuses)}; sweep {run.final_sweep.get('status')}",
        f"attempts (attempt: jobs): {dict(sorted(verdict.attempts.items()))}; "
        f"{verdict.extra_attempts} retries for {verdict.interruptions} interruptions",
        f"histories identical to an undisturbed run: {verdict.identical_histories} of "
        f"{verdict.jobs} ({verdict.reference_configs} distinct configs)",
        f"answers by status: {statuses}; unacceptable {len(verdict.unacceptable)}, "
        f"503 outside the outage {len(verdict.stray_503)}",
        f"connection failures: {verdict.connection_failures} (to a dead API process), "
        f"{len(verdict.stray_failures)} otherwise",
        f"storage problems: {len(verdict.storage_problems)}",
        f"wall time: {run.wall_s:.1f} s",
    ]


def judge(engine: Engine, run: ChaosRun) -> Verdict:
    """Every check of a chaos run."""
    verdict = Verdict()
    check_jobs(engine, run, verdict)
    check_answers(run, verdict)
    check_storage(engine, run, verdict)
    return verdict


__all__ = ["Verdict", "check_answers", "check_jobs", "check_storage", "judge", "summary"]
