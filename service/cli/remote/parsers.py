"""The argument parsers of ``batchwise datasets …``, ``batchwise jobs …`` and ``batchwise
probes …``: every leaf command takes ``--url``, ``--api-key``, ``--json`` and ``--timeout``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args

from service.client.environment import API_KEY_ENV
from service.client.schemas import JobStatus

#: The commands these parsers add.
COMMANDS = frozenset({"datasets", "jobs", "probes"})
#: The service, when no ``--url`` names it: read by this terminal client only.
URL_ENV = "BATCHWISE_URL"
DEFAULT_URL = "http://127.0.0.1:8000"

_CLIENT_ENVIRONMENT = f"""\
environment:
  {URL_ENV}      the service when --url is not given (default {DEFAULT_URL});
                     read by this terminal client only, not a server setting
  {API_KEY_ENV}  the API key when --api-key is not given (batchwise keys create)
exit status: 0 done, 1 the service refused or could not be reached, 2 bad usage
"""


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
    _add_probes(commands, common)


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
    submit.add_argument(
        "--init-from",
        metavar="JOB:EPOCH",
        help="warm start from that job's checkpoint after that epoch (--epochs counts on)",
    )
    submit.add_argument(
        "--reset-optimizer",
        action="store_true",
        default=None,
        help="with --init-from: start the optimizer afresh",
    )
    submit.add_argument(
        "--keep-checkpoints", metavar="EPOCHS", help="epochs to keep checkpoints of: 2,4 or all"
    )
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
    listing.add_argument("--status", choices=get_args(JobStatus))
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


def _add_probes(commands: Any, common: argparse.ArgumentParser) -> None:
    probes = commands.add_parser(
        "probes",
        help="probe a job's critical batch size at its checkpoints (HTTP client)",
        description="Probes of a running service: branch a job's kept checkpoints at larger "
        "batches and see which keep up (Merrill et al. 2025).",
        epilog=_CLIENT_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = probes.add_subparsers(dest="action", required=True, metavar="ACTION")
    submit = _leaf(
        group,
        "submit",
        common,
        "start a probe of a job (optionally wait for it)",
        "Branch the source job's checkpoints at multipliers × its batch size for the same "
        "samples and find the largest batch whose loss keeps up with ×1. The source must keep "
        "the checkpoints (keep_checkpoints on its job). With --wait, follow it to its end and "
        "print the critical batch per checkpoint; exit 1 unless it succeeded.",
    )
    submit.add_argument("job_id", metavar="JOB_ID", help="the source job")
    submit.add_argument(
        "--at-epochs", metavar="E,E,…|auto", help="checkpoints to branch (default: auto)"
    )
    submit.add_argument(
        "--multipliers", metavar="K,K,…", help="batch multipliers (default 1, 2, 4, …)"
    )
    submit.add_argument(
        "--window-samples", type=int, metavar="N", help="samples per branch (default one epoch)"
    )
    submit.add_argument(
        "--lr", choices=("search", "sqrt", "linear"), help="each branch's rate (default search)"
    )
    submit.add_argument(
        "--tolerance", type=float, metavar="T", help="relative loss gap allowed (default 0.01)"
    )
    submit.add_argument("--seeds", type=int, metavar="N", help="runs per branch (default 1)")
    submit.add_argument("--loss-on", choices=("train", "validation"), help="the compared loss")
    submit.add_argument("--name", help="a label for people")
    submit.add_argument("--wait", action="store_true", help="follow the probe until it ends")
    submit.add_argument(
        "--poll",
        type=float,
        default=0.5,
        metavar="S",
        help="with --wait: seconds between looks (default %(default)s)",
    )
    show = _leaf(
        group,
        "show",
        common,
        "show a probe",
        "A probe's status and, per checkpoint, the critical batch, its bracket, B_simple and "
        "their ratio.",
    )
    show.add_argument("probe_id", metavar="ID")
    listing = _leaf(
        group,
        "list",
        common,
        "list probes, newest first",
        "List probes, newest first, one page at a time (or --all).",
    )
    _add_paging(listing)
    cancel = _leaf(
        group,
        "cancel",
        common,
        "cancel a probe",
        "Cancel a probe's unfinished branches and mark it cancelled. A finished probe cannot "
        "be cancelled (exit 1).",
    )
    cancel.add_argument("probe_id", metavar="ID")
