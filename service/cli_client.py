"""The terminal client: ``batchwise datasets …`` and ``batchwise jobs …``, on
:class:`service.client.BatchwiseClient`.

It talks HTTP only, like the client it is built on (an import-linter contract holds that): it
needs no settings, database or web stack. ``--url`` names the service; without it the
``BATCHWISE_URL`` environment variable, else ``http://127.0.0.1:8000``. That variable belongs
to this terminal client, not to the server's :class:`~service.config.Settings`, so it is read
here and nowhere else. The API key: ``--api-key``, else ``BATCHWISE_API_KEY`` (read by
:class:`~service.client.BatchwiseClient`).

Output: aligned tables and short lines for people on stdout; ``--json`` prints exactly the
JSON the API answered instead. Errors go to stderr: the problem's title, detail and each
field error, exit 1; usage errors exit 2 (argparse); a progress bar goes to stderr so stdout
stays clean for pipes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO, cast

from service.client import (
    API_KEY_ENV,
    BatchwiseAPIError,
    BatchwiseClient,
    BatchwiseError,
    Dataset,
    History,
    Job,
)

__all__ = ["COMMANDS", "DEFAULT_URL", "URL_ENV", "add_commands", "run"]

URL_ENV = "BATCHWISE_URL"
DEFAULT_URL = "http://127.0.0.1:8000"
COMMANDS = frozenset({"datasets", "jobs"})

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

_JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

_CLIENT_ENVIRONMENT = f"""\
environment:
  {URL_ENV}      the service when --url is not given (default {DEFAULT_URL});
                     read by this terminal client only, not a server setting
  {API_KEY_ENV}  the API key when --api-key is not given (batchwise keys create)
exit status: 0 done, 1 the service refused or could not be reached, 2 bad usage
"""


class UsageError(Exception):
    """Bad input found after parsing (an unreadable --config file, a malformed --set)."""


# --- the parsers ----------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    """``--url`` and ``--json``, shared by every leaf command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=None,
        help=f"the service's base URL (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    common.add_argument(
        "--api-key",
        default=None,
        help=f"the tenant's API key (default: ${API_KEY_ENV}; prefer the variable, since "
        "a flag shows in the process list)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        help="print exactly the JSON the API answered (machine-readable) instead of tables",
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds each HTTP request may take (default %(default)s)",
    )
    return common


def _leaf(
    group: Any, name: str, common: argparse.ArgumentParser, help: str, description: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name,
        parents=[common],
        help=help,
        description=description,
        epilog=_CLIENT_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def add_commands(commands: Any) -> None:
    """Register ``datasets`` and ``jobs`` on ``commands`` (the ``add_subparsers()`` of
    ``batchwise``)."""
    common = _common()
    _add_datasets(commands, common)
    _add_jobs(commands, common)


def _add_datasets(commands: Any, common: argparse.ArgumentParser) -> None:
    datasets = commands.add_parser(
        "datasets",
        help="upload, list, show and delete datasets (HTTP client)",
        description="Datasets of a running service, through its HTTP API.",
        epilog=_CLIENT_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = datasets.add_subparsers(dest="action", required=True, metavar="ACTION")

    upload = _leaf(
        group,
        "upload",
        common,
        "upload a CSV, NPY or NPZ file",
        "Upload a dataset file (CSV with a header, NPY with the target as the last column, "
        "or NPZ with arrays X and y), streamed. Prints the stored dataset: id, shape, target, "
        "task. A malformed file is refused naming the line and column.",
    )
    upload.add_argument("file", type=Path, metavar="FILE", help="the CSV, NPY or NPZ file")
    upload.add_argument("--name", help="a label (default: the file name)")
    upload.add_argument(
        "--target", help="the target column: a name, or a 0-based index (default: the last)"
    )
    upload.add_argument(
        "--invalid-rows",
        choices=("error", "drop"),
        help="a row with a missing or non-numeric value: refuse the file (error, the "
        "default) or drop the row and count it",
    )

    listing = _leaf(
        group,
        "list",
        common,
        "list datasets, newest first",
        "List datasets, newest first, one page at a time (or --all).",
    )
    _add_paging(listing)

    show = _leaf(
        group,
        "show",
        common,
        "show a dataset",
        "A dataset's metadata and per-feature statistics.",
    )
    show.add_argument("dataset_id", metavar="ID")

    delete = _leaf(
        group,
        "delete",
        common,
        "delete a dataset",
        "Delete a dataset and its stored bytes (refused while a queued or running job uses "
        "it). Prints nothing with --json (the API answers 204, no body).",
    )
    delete.add_argument("dataset_id", metavar="ID")


def _add_paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        type=int,
        default=20,
        help="page size, 1 to 100 (default %(default)s)",
    )
    parser.add_argument("--cursor", help="the next_cursor of a previous page")
    parser.add_argument(
        "--all",
        action="store_true",
        help="every page, fetched --limit at a time (--json: one page holding every item)",
    )


def _add_jobs(commands: Any, common: argparse.ArgumentParser) -> None:
    jobs = commands.add_parser(
        "jobs",
        help="submit, follow, list, show and cancel training jobs (HTTP client)",
        description="Training jobs of a running service, through its HTTP API.",
        epilog=_CLIENT_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")

    submit = _leaf(
        group,
        "submit",
        common,
        "submit a training job (optionally wait for it)",
        "Queue a training job on a dataset. The config is the API's flat training config: "
        "start from --config FILE.json (any field of POST /v1/jobs), then the flags and "
        "--set KEY=JSON override it. The service checks it against the dataset before "
        "queueing and names a field that cannot run. With --wait, follow the job to its end: "
        "a live progress line on a terminal (epoch, step, loss, ETA), plain lines otherwise, "
        "both on stderr; then its final status on stdout. Exit 1 if it did not succeed.",
    )
    submit.add_argument("--dataset", required=True, metavar="ID", help="the dataset to train on")
    submit.add_argument(
        "--config", type=Path, metavar="FILE.json", help="a JSON object of config fields"
    )
    submit.add_argument("--model", choices=("linear", "logistic", "softmax", "mlp"))
    submit.add_argument(
        "--hidden-layers",
        metavar="W,W,…",
        help="MLP hidden layer widths, comma-separated (e.g. 32,16)",
    )
    submit.add_argument("--optimizer", choices=("sgd", "momentum", "nesterov", "adam"))
    submit.add_argument("--learning-rate", type=float, metavar="LR")
    submit.add_argument("--batch-size", type=int, metavar="B")
    submit.add_argument("--epochs", type=int, metavar="N")
    submit.add_argument("--seed", type=int)
    submit.add_argument("--validation-split", type=float, metavar="FRACTION")
    submit.add_argument(
        "--standardize", action="store_true", default=None, help="z-score the features"
    )
    submit.add_argument(
        "--noise-scale",
        action="store_true",
        default=None,
        help="measure the gradient noise scale every epoch",
    )
    submit.add_argument("--max-runtime", type=float, metavar="S", help="time limit in seconds")
    submit.add_argument("--name", help="a label for people")
    submit.add_argument(
        "--tag", action="append", dest="tags", metavar="TAG", help="a tag (repeatable)"
    )
    submit.add_argument(
        "--set",
        action="append",
        dest="sets",
        default=[],
        metavar="KEY=JSON",
        help='any other field, its value as JSON: --set lr_schedule=\'{"kind": "cosine"}\'',
    )
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends")
    submit.add_argument(
        "--poll",
        type=float,
        default=0.5,
        metavar="S",
        help="with --wait: seconds between looks (default %(default)s)",
    )

    listing = _leaf(
        group,
        "list",
        common,
        "list jobs, newest first",
        "List jobs, newest first, one page at a time (or --all), optionally filtered.",
    )
    listing.add_argument("--status", choices=_JOB_STATUSES)
    listing.add_argument("--dataset", metavar="ID", help="only jobs on this dataset")
    listing.add_argument("--tag", help="only jobs with this tag")
    _add_paging(listing)

    show = _leaf(
        group, "show", common, "show a job", "A job's status, progress, losses and config."
    )
    show.add_argument("job_id", metavar="ID")

    history = _leaf(
        group,
        "history",
        common,
        "print a job's loss history",
        "A job's history, readable while it runs: one row per epoch (train and validation "
        "loss, metric, learning rate, batch size, samples, wall time). --csv prints the "
        "API's CSV export instead; --json the API's JSON with the per-step losses.",
    )
    history.add_argument("job_id", metavar="ID")
    history.add_argument(
        "--max-points",
        type=int,
        metavar="N",
        help="downsample the step losses to at most N points (min and max per bucket)",
    )
    history.add_argument("--csv", action="store_true", help="the API's CSV export")
    history.add_argument(
        "--table",
        choices=("epochs", "steps"),
        default="epochs",
        help="with --csv: per-epoch rows (default) or step,loss rows",
    )

    cancel = _leaf(
        group,
        "cancel",
        common,
        "cancel a job",
        "Cancel a job: a queued one at once, a running one within about a second (its "
        "worker stops at the next step). A finished job cannot be cancelled (exit 1).",
    )
    cancel.add_argument("job_id", metavar="ID")

    predict = _leaf(
        group,
        "predict",
        common,
        "predict with a succeeded job's model",
        "Predictions for rows X from a succeeded job's model: values for regression, class "
        "labels (and probabilities) for classifiers.",
    )
    predict.add_argument("job_id", metavar="ID")
    predict.add_argument(
        "--x",
        required=True,
        metavar="JSON",
        help="the rows as JSON, each with the dataset's features in order: '[[1.0, 2.0]]'",
    )


# --- running --------------------------------------------------------------------------------


def resolve_url(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``--url``, else ``$BATCHWISE_URL``, else :data:`DEFAULT_URL`."""
    environ = os.environ if environ is None else environ
    return flag or environ.get(URL_ENV, "").strip() or DEFAULT_URL


def run(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """Run ``batchwise datasets|jobs ACTION`` as parsed into ``args``; return the exit status."""
    out = sys.stdout if stdout is None else stdout
    command = f"batchwise {args.command} {args.action}"
    handler = _HANDLERS[(args.command, args.action)]
    try:
        client = BatchwiseClient(resolve_url(args.url), timeout=args.timeout, api_key=args.api_key)
        with client:
            return handler(client, args, out)
    except BatchwiseAPIError as exc:
        _print_problem(command, exc)
        return EXIT_ERROR
    except BatchwiseError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except UsageError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2


def _print_problem(command: str, exc: BatchwiseAPIError) -> None:
    lines = [f"{command}: error: {exc.status} {exc.title}"]
    if exc.detail:
        lines.append(f"  {exc.detail}")
    for error in exc.errors:
        where = ".".join(str(part) for part in error.get("loc", [])) or "input"
        lines.append(f"  {where}: {error.get('msg', '')}")
    if exc.status == 401:
        lines.append(f"  give an API key with --api-key or ${API_KEY_ENV} (batchwise keys create)")
    print("\n".join(lines), file=sys.stderr)


def _emit_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


# --- datasets -------------------------------------------------------------------------------


def _datasets_upload(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    if not args.file.is_file():
        raise UsageError(f"no such file: {args.file}")
    dataset = client.upload_dataset(
        args.file, name=args.name, target=args.target, invalid_rows=args.invalid_rows
    )
    if args.json:
        _emit_json(dataset, out)
        return EXIT_OK
    out.write(f"uploaded dataset {dataset['id']}\n")
    _write_dataset(dataset, out)
    return EXIT_OK


def _write_dataset(dataset: Dataset, out: TextIO) -> None:
    dropped = f", {dataset['dropped_rows']} rows dropped" if dataset["dropped_rows"] else ""
    classes = dataset["classes"]
    fields = [
        ("id", dataset["id"]),
        ("name", dataset["name"]),
        ("shape", f"{dataset['n_rows']} rows × {dataset['n_features']} features{dropped}"),
        ("target", f"{dataset['target']} ({dataset['task']})"),
        ("classes", "—" if classes is None else ", ".join(_number(c) for c in classes)),
        ("format", f"{dataset['source_format']}, {dataset['size_bytes']} bytes stored"),
        ("sha256", dataset["sha256"]),
        ("created", _time(dataset["created_at"])),
    ]
    _write_fields(fields, out)


def _datasets_list(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    page = _page(
        lambda cursor: client.list_datasets(limit=args.limit, cursor=cursor), args.cursor, args.all
    )
    if args.json:
        _emit_json(page, out)
        return EXIT_OK
    rows = [
        [
            d["id"],
            d["name"],
            str(d["n_rows"]),
            str(d["n_features"]),
            d["target"],
            d["task"],
            _time(d["created_at"]),
        ]
        for d in page["items"]
    ]
    _write_table(["ID", "NAME", "ROWS", "FEATURES", "TARGET", "TASK", "CREATED"], rows, out)
    _hint_next(page["next_cursor"], f"batchwise datasets list --limit {args.limit}")
    return EXIT_OK


def _datasets_show(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    dataset = client.get_dataset(args.dataset_id)
    if args.json:
        _emit_json(dataset, out)
        return EXIT_OK
    _write_dataset(dataset, out)
    out.write("\n")
    rows = [
        [s["name"], _number(s["mean"]), _number(s["std"]), _number(s["min"]), _number(s["max"])]
        for s in dataset["stats"]
    ]
    _write_table(["FEATURE", "MEAN", "STD", "MIN", "MAX"], rows, out)
    return EXIT_OK


def _datasets_delete(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    client.delete_dataset(args.dataset_id)
    if not args.json:
        out.write(f"deleted dataset {args.dataset_id}\n")
    return EXIT_OK


# --- jobs -----------------------------------------------------------------------------------


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
    return body


def _jobs_submit(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.poll <= 0:
        raise UsageError(f"--poll must be > 0, not {args.poll:g}")
    job = client.submit_job(args.dataset, **build_job_body(args))
    if not args.wait:
        if args.json:
            _emit_json(job, out)
        else:
            out.write(f"job {job['id']} queued\n")
        return EXIT_OK
    if not args.json:
        out.write(f"job {job['id']} queued\n")
        out.flush()
    progress = ProgressLine(sys.stderr)
    try:
        job = client.wait_for_job(job["id"], on_progress=progress.update, poll_s=args.poll)
    except KeyboardInterrupt:
        progress.finish()
        print(
            f"stopped waiting; job {job['id']} goes on (batchwise jobs cancel {job['id']})",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    progress.finish()
    if args.json:
        _emit_json(job, out)
    else:
        out.write(final_line(job) + "\n")
    return EXIT_OK if job["status"] == "succeeded" else EXIT_ERROR


def final_line(job: Job) -> str:
    """One line that says how the job ended: status, epochs, losses, wall time, error."""
    progress, latest = job["progress"], job["latest"]
    parts = [f"job {job['id']} {job['status']}: epoch {progress['epoch']}/{progress['epochs']}"]
    parts.append(f"train loss {_number(latest['train_loss'])}")
    if latest["val_loss"] is not None:
        parts.append(f"val loss {_number(latest['val_loss'])}")
    elapsed = _elapsed(job)
    if elapsed is not None:
        parts.append(f"{elapsed:.1f} s")
    line = ", ".join(parts)
    if job["error"] is not None:
        line += f" — {job['error']['code']}: {job['error']['message']}"
    return line


class ProgressLine:
    """A job's progress on ``stream``: one ``\\r``-rewritten line on a terminal
    (``[#####·····] epoch 3/10 step 12/40 loss 0.1234 ETA 5s``), else a plain line each time
    the epoch or status changes."""

    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._shown = 0
        self._last: tuple[str, int] | None = None

    def update(self, job: Job) -> None:
        """Show ``job``'s progress (a ``wait_for_job`` ``on_progress``)."""
        line = progress_text(job)
        if self.tty:
            bar_done = round(self.WIDTH * min(max(job["progress"]["fraction"], 0.0), 1.0))
            bar = "#" * bar_done + "·" * (self.WIDTH - bar_done)
            text = f"[{bar}] {line}"
            pad = " " * max(0, self._shown - len(text))
            self.stream.write(f"\r{text}{pad}")
            self._shown = len(text)
        else:
            key = (job["status"], job["progress"]["epoch"])
            if key == self._last:
                return
            self._last = key
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the rewritten line, so what follows starts on a fresh one."""
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = 0


def progress_text(job: Job) -> str:
    """``running epoch 3/10 step 12/40 loss 0.1234 ETA 5s`` (what is known so far)."""
    progress = job["progress"]
    parts = [job["status"], f"epoch {progress['epoch']}/{progress['epochs']}"]
    if job["status"] == "running" and progress["steps_per_epoch"]:
        parts.append(f"step {progress['step']}/{progress['steps_per_epoch']}")
    if job["latest"]["train_loss"] is not None:
        parts.append(f"loss {_number(job['latest']['train_loss'])}")
    if progress["eta_s"] is not None:
        parts.append(f"ETA {_duration(progress['eta_s'])}")
    return " ".join(parts)


def _jobs_list(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    page = _page(
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
        _emit_json(page, out)
        return EXIT_OK
    rows = [
        [
            job["id"],
            job["status"],
            job["dataset_id"],
            str(job["config"].get("model", "")),
            _number(job["config"].get("batch_size")),
            f"{job['progress']['epoch']}/{job['progress']['epochs']}",
            _number(job["latest"]["train_loss"]),
            _number(job["latest"]["val_loss"]),
            job["name"] or "",
            _time(job["created_at"]),
        ]
        for job in page["items"]
    ]
    header = ["ID", "STATUS", "DATASET", "MODEL", "BATCH", "EPOCH", "TRAIN LOSS", "VAL LOSS"]
    _write_table([*header, "NAME", "CREATED"], rows, out)
    _hint_next(page["next_cursor"], f"batchwise jobs list --limit {args.limit}")
    return EXIT_OK


def _jobs_show(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    job = client.get_job(args.job_id)
    if args.json:
        _emit_json(job, out)
        return EXIT_OK
    latest, best = job["latest"], job["best"]
    error = job["error"]
    fields = [
        ("id", job["id"]),
        ("name", job["name"] or "—"),
        ("status", job["status"] + (" (cancel requested)" if job["cancel_requested"] else "")),
        ("dataset", job["dataset_id"]),
        ("tags", ", ".join(job["tags"]) or "—"),
        ("progress", progress_text(job)),
        (
            "latest loss",
            f"train {_number(latest['train_loss'])}, val {_number(latest['val_loss'])}",
        ),
        ("best loss", f"train {_number(best['train_loss'])}, val {_number(best['val_loss'])}"),
        ("samples seen", str(job["samples_seen"])),
        ("attempts", f"{job['attempts']} of {job['max_attempts']}"),
        ("created", _time(job["created_at"])),
        ("started", _time(job["started_at"])),
        ("finished", _time(job["finished_at"])),
        ("error", "—" if error is None else f"{error['code']}: {error['message']}"),
    ]
    advice = job["batch_size_advice"]
    if advice is not None:
        fields.append(("batch size", str(advice.get("message", ""))))
    _write_fields(fields, out)
    out.write("\nconfig\n")
    _write_fields(
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


def _jobs_history(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.csv:
        out.write(client.history_csv(args.job_id, table=args.table, max_points=args.max_points))
        return EXIT_OK
    history = client.history(args.job_id, max_points=args.max_points)
    if args.json:
        _emit_json(history, out)
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
    rows = [[_number(column[i]) for _, column in columns] for i in range(len(history["epoch"]))]
    _write_table([title for title, _ in columns], rows, out)
    out.write(
        f"\njob {history['job_id']} {history['status']}: {len(history['epoch'])} epochs, "
        f"{history['total_steps']} steps\n"
    )


def _jobs_cancel(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    job = client.cancel_job(args.job_id)
    if args.json:
        _emit_json(job, out)
    elif job["status"] == "running":
        out.write(f"job {job['id']} cancel requested: its worker stops it within a second\n")
    else:
        out.write(f"job {job['id']} {job['status']}\n")
    return EXIT_OK


def _jobs_predict(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    try:
        rows = json.loads(args.x)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--x is not JSON: {exc.msg} (column {exc.colno})") from None
    prediction = client.predict(args.job_id, rows)
    if args.json:
        _emit_json(prediction, out)
        return EXIT_OK
    probabilities = prediction["probabilities"]
    classes = prediction["classes"] or []
    header = ["ROW", "PREDICTION", *(f"P({_number(c)})" for c in classes)]
    table = [
        [
            str(i),
            _number(value),
            *([_number(p) for p in probabilities[i]] if probabilities is not None else []),
        ]
        for i, value in enumerate(prediction["predictions"])
    ]
    _write_table(header, table, out)
    return EXIT_OK


Handler = Callable[[BatchwiseClient, argparse.Namespace, TextIO], int]

_HANDLERS: dict[tuple[str, str], Handler] = {
    ("datasets", "upload"): _datasets_upload,
    ("datasets", "list"): _datasets_list,
    ("datasets", "show"): _datasets_show,
    ("datasets", "delete"): _datasets_delete,
    ("jobs", "submit"): _jobs_submit,
    ("jobs", "list"): _jobs_list,
    ("jobs", "show"): _jobs_show,
    ("jobs", "history"): _jobs_history,
    ("jobs", "cancel"): _jobs_cancel,
    ("jobs", "predict"): _jobs_predict,
}


# --- output helpers -------------------------------------------------------------------------


def _page(fetch: Callable[[str | None], Any], cursor: str | None, every: bool) -> dict[str, Any]:
    """One page from ``cursor``, or with ``every`` all pages from there merged into one
    (``next_cursor`` null)."""
    page = dict(fetch(cursor))
    if not every:
        return page
    items = list(page["items"])
    while page["next_cursor"] is not None:
        page = dict(fetch(page["next_cursor"]))
        items.extend(page["items"])
    return {"items": items, "next_cursor": None}


def _hint_next(cursor: str | None, command: str) -> None:
    if cursor is not None:
        print(f"more: {command} --cursor {cursor}", file=sys.stderr)


def _write_table(header: Sequence[str], rows: Iterable[Sequence[str]], out: TextIO) -> None:
    """Columns padded to their widest cell, two spaces apart; numbers right-aligned."""
    rows = [list(row) for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(header)]
    numeric = [
        bool(rows) and all(_looks_numeric(row[i]) for row in rows) for i in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    out.write(line(header) + "\n")
    for row in rows:
        out.write(line(row) + "\n")


def _write_fields(fields: Sequence[tuple[str, str]], out: TextIO) -> None:
    width = max((len(name) for name, _ in fields), default=0)
    for name, value in fields:
        out.write(f"{name.ljust(width)}  {value}\n")


def _looks_numeric(cell: str) -> bool:
    if cell == "—":
        return True
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _number(value: Any) -> str:
    """A number for a table: integers as they are, floats to 6 significant digits, null as
    an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"


def _time(iso: str | None) -> str:
    """``2024-11-26T10:00:00.123456Z`` → ``2024-11-26 10:00:00`` (UTC, as the API sends)."""
    if iso is None:
        return "—"
    return iso.replace("T", " ")[:19]


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _elapsed(job: Job) -> float | None:
    if job["started_at"] is None or job["finished_at"] is None:
        return None
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return (finished - started).total_seconds()
