"""``batchwise jobs submit|list|show|history|cancel|predict``: the handlers, on the HTTP
client. ``submit --wait`` follows the job with a progress line on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TextIO, cast

from service.cli.remote.handler import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Handler,
    UsageError,
    emit_json,
    fetch_pages,
    hint_next,
    write_fields,
    write_table,
)
from service.client import BatchwiseClient, History, Job
from service.client.formatting import MISSING, duration, number, timestamp
from service.client.progress import ProgressLine

#: Characters of the progress bar on a terminal.
BAR_WIDTH = 24


def build_job_body(args: argparse.Namespace) -> dict[str, Any]:
    """The body of ``POST /v1/jobs`` without ``dataset_id``: ``--config``, then ``--set``,
    then the named flags, each overriding the one before."""
    body: dict[str, Any] = {}
    if args.config is not None:
        try:
            loaded = json.loads(args.config.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read --config {args.config}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"--config {args.config} is not JSON: {exc.msg} (line {exc.lineno}, "
                f"column {exc.colno})"
            ) from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--config {args.config} must hold a JSON object of config fields")
        body |= loaded
    for item in args.sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=JSON")
        try:
            body[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            body[key.strip()] = raw  # a bare word (--set optimizer=adam) is a string
    if args.hidden_layers is not None:
        try:
            body["hidden_layers"] = [int(w) for w in args.hidden_layers.split(",") if w.strip()]
        except ValueError:
            raise UsageError(
                f"--hidden-layers {args.hidden_layers!r}: expected widths like 32,16"
            ) from None
    flags = {
        "model": args.model,
        "optimizer": args.optimizer,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "validation_split": args.validation_split,
        "standardize": args.standardize,
        "noise_scale": args.noise_scale,
        "max_runtime_s": args.max_runtime,
        "name": args.name,
        "tags": args.tags,
    }
    body |= {name: value for name, value in flags.items() if value is not None}
    body.pop("dataset_id", None)  # --dataset says which
    if args.init_from is not None:
        body["init_from"] = _init_from(args.init_from, args.reset_optimizer)
    elif args.reset_optimizer:
        raise UsageError("--reset-optimizer goes with --init-from JOB:EPOCH")
    if args.keep_checkpoints is not None:
        body["keep_checkpoints"] = _keep_checkpoints(args.keep_checkpoints)
    return body


def _init_from(value: str, reset_optimizer: bool | None) -> dict[str, Any]:
    """``--init-from JOB:EPOCH`` as the body's ``init_from``."""
    job_id, sep, epoch = value.rpartition(":")
    if not sep or not job_id or not epoch.strip().isdigit():
        raise UsageError(f"--init-from {value!r}: expected JOB:EPOCH, e.g. 0c6f…:4")
    init: dict[str, Any] = {"job_id": job_id, "epoch": int(epoch)}
    if reset_optimizer:
        init["reset_optimizer"] = True
    return init


def _keep_checkpoints(value: str) -> list[int] | str:
    """``--keep-checkpoints 2,4`` or ``all``."""
    if value.strip() == "all":
        return "all"
    try:
        return [int(epoch) for epoch in value.split(",") if epoch.strip()]
    except ValueError:
        raise UsageError(
            f"--keep-checkpoints {value!r}: expected epochs like 2,4, or all"
        ) from None


def _submit(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.poll <= 0:
        raise UsageError(f"--poll must be > 0, not {args.poll:g}")
    job = client.submit_job(args.dataset, **build_job_body(args))
    if not args.wait:
        if args.json:
            emit_json(job, out)
        else:
            out.write(f"job {job['id']} queued\n")
        return EXIT_OK
    if not args.json:
        out.write(f"job {job['id']} queued\n")
        out.flush()
    progress = ProgressLine(sys.stderr, plain_interval_s=0.0)
    try:
        job = client.wait_for_job(job["id"], on_progress=_show_progress(progress), poll_s=args.poll)
    except KeyboardInterrupt:
        progress.done()
        print(
            f"stopped waiting; job {job['id']} goes on (batchwise jobs cancel {job['id']})",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    progress.done()
    if args.json:
        emit_json(job, out)
    else:
        out.write(final_line(job) + "\n")
    return EXIT_OK if job["status"] == "succeeded" else EXIT_ERROR


def final_line(job: Job) -> str:
    """One line that says how the job ended: status, epochs, losses, wall time, error."""
    progress, latest = job["progress"], job["latest"]
    parts = [f"job {job['id']} {job['status']}: epoch {progress['epoch']}/{progress['epochs']}"]
    parts.append(f"train loss {number(latest['train_loss'])}")
    if latest["val_loss"] is not None:
        parts.append(f"val loss {number(latest['val_loss'])}")
    elapsed = _elapsed(job)
    if elapsed is not None:
        parts.append(f"{elapsed:.1f} s")
    line = ", ".join(parts)
    if job["error"] is not None:
        line += f" — {job['error']['code']}: {job['error']['message']}"
    return line


def _show_progress(line: ProgressLine) -> Callable[[Job], None]:
    """A ``wait_for_job`` ``on_progress`` for ``line``: on a terminal
    ``[#####·····] running epoch 3/10 step 12/40 loss 0.1234 ETA 5s`` rewritten in place;
    elsewhere a plain line each time the status or the epoch changes, not at every step."""

    def show(job: Job) -> None:
        text = progress_text(job)
        if line.tty:
            done = round(BAR_WIDTH * min(max(job["progress"]["fraction"], 0.0), 1.0))
            text = f"[{'#' * done}{'·' * (BAR_WIDTH - done)}] {text}"
        line.update(text, key=(job["status"], job["progress"]["epoch"]))

    return show


def progress_text(job: Job) -> str:
    """``running epoch 3/10 step 12/40 loss 0.1234 ETA 5s`` (what is known so far)."""
    progress = job["progress"]
    parts = [job["status"], f"epoch {progress['epoch']}/{progress['epochs']}"]
    if job["status"] == "running" and progress["steps_per_epoch"]:
        parts.append(f"step {progress['step']}/{progress['steps_per_epoch']}")
    if job["latest"]["train_loss"] is not None:
        parts.append(f"loss {number(job['latest']['train_loss'])}")
    if progress["eta_s"] is not None:
        parts.append(f"ETA {duration(progress['eta_s'])}")
    return " ".join(parts)


def _list(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    page = fetch_pages(
        lambda cursor: client.list_jobs(
            status=args.status,
            dataset_id=args.dataset,
            tag=args.tag,
            limit=args.limit,
            cursor=cursor,
        ),
        args.cursor,
        args.all,
    )
    if args.json:
        emit_json(page, out)
        return EXIT_OK
    rows = [
        [
            job["id"],
            job["status"],
            job["dataset_id"],
            str(job["config"].get("model", "")),
            number(job["config"].get("batch_size")),
            f"{job['progress']['epoch']}/{job['progress']['epochs']}",
            number(job["latest"]["train_loss"]),
            number(job["latest"]["val_loss"]),
            job["name"] or "",
            timestamp(job["created_at"]),
        ]
        for job in page["items"]
    ]
    header = ["ID", "STATUS", "DATASET", "MODEL", "BATCH", "EPOCH", "TRAIN LOSS", "VAL LOSS"]
    write_table([*header, "NAME", "CREATED"], rows, out)
    hint_next(page["next_cursor"], f"batchwise jobs list --limit {args.limit}")
    return EXIT_OK


def _show(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    job = client.get_job(args.job_id)
    if args.json:
        emit_json(job, out)
        return EXIT_OK
    latest, best = job["latest"], job["best"]
    error = job["error"]
    fields = [
        ("id", job["id"]),
        ("name", job["name"] or MISSING),
        ("status", job["status"] + (" (cancel requested)" if job["cancel_requested"] else "")),
        ("dataset", job["dataset_id"]),
        ("tags", ", ".join(job["tags"]) or MISSING),
        ("progress", progress_text(job)),
        (
            "latest loss",
            f"train {number(latest['train_loss'])}, val {number(latest['val_loss'])}",
        ),
        ("best loss", f"train {number(best['train_loss'])}, val {number(best['val_loss'])}"),
        ("samples seen", str(job["samples_seen"])),
        ("attempts", f"{job['attempts']} of {job['max_attempts']}"),
        ("created", timestamp(job["created_at"])),
        ("started", timestamp(job["started_at"])),
        ("finished", timestamp(job["finished_at"])),
        ("error", MISSING if error is None else f"{error['code']}: {error['message']}"),
    ]
    advice = job["batch_size_advice"]
    if advice is not None:
        fields.append(("batch size", str(advice.get("message", ""))))
    write_fields(fields, out)
    out.write("\nconfig\n")
    write_fields(
        [(f"  {key}", json.dumps(value)) for key, value in sorted(job["config"].items())], out
    )
    return EXIT_OK


_HISTORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("EPOCH", "epoch"),
    ("TRAIN LOSS", "train_loss"),
    ("VAL LOSS", "val_loss"),
    ("VAL RMSE", "val_rmse"),
    ("VAL R2", "val_r2"),
    ("VAL ACC", "val_accuracy"),
    ("LR", "learning_rate"),
    ("BATCH", "batch_size"),
    ("SAMPLES", "samples_seen"),
    ("WALL S", "wall_time_s"),
    ("SAMPLES/S", "samples_per_s"),
)


def _history(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.csv:
        out.write(client.history_csv(args.job_id, table=args.table, max_points=args.max_points))
        return EXIT_OK
    history = client.history(args.job_id, max_points=args.max_points)
    if args.json:
        emit_json(history, out)
        return EXIT_OK
    _write_history(history, out)
    return EXIT_OK


def _write_history(history: History, out: TextIO) -> None:
    per_epoch = cast(Mapping[str, list[Any] | None], history)
    columns = [
        (title, column)
        for title, key in _HISTORY_COLUMNS
        if (column := per_epoch.get(key)) is not None  # val_r2 only for regression, …
    ]
    rows = [[number(column[i]) for _, column in columns] for i in range(len(history["epoch"]))]
    write_table([title for title, _ in columns], rows, out)
    out.write(
        f"\njob {history['job_id']} {history['status']}: {len(history['epoch'])} epochs, "
        f"{history['total_steps']} steps\n"
    )


def _cancel(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    job = client.cancel_job(args.job_id)
    if args.json:
        emit_json(job, out)
    elif job["status"] == "running":
        out.write(f"job {job['id']} cancel requested: its worker stops it within a second\n")
    else:
        out.write(f"job {job['id']} {job['status']}\n")
    return EXIT_OK


def _predict(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    try:
        rows = json.loads(args.x)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--x is not JSON: {exc.msg} (column {exc.colno})") from None
    prediction = client.predict(args.job_id, rows)
    if args.json:
        emit_json(prediction, out)
        return EXIT_OK
    probabilities = prediction["probabilities"]
    classes = prediction["classes"] or []
    header = ["ROW", "PREDICTION", *(f"P({number(c)})" for c in classes)]
    table = [
        [
            str(i),
            number(value),
            *([number(p) for p in probabilities[i]] if probabilities is not None else []),
        ]
        for i, value in enumerate(prediction["predictions"])
    ]
    write_table(header, table, out)
    return EXIT_OK


def _elapsed(job: Job) -> float | None:
    if job["started_at"] is None or job["finished_at"] is None:
        return None
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return (finished - started).total_seconds()


HANDLERS: dict[str, Handler] = {
    "submit": _submit,
    "list": _list,
    "show": _show,
    "history": _history,
    "cancel": _cancel,
    "predict": _predict,
}
