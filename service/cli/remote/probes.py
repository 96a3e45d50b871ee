"""``batchwise probes submit|show|list|cancel``: the handlers, on the HTTP client. ``submit
--wait`` follows the probe until it ends, a line on stderr per change."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

from service.cli.remote.handler import (
    EXIT_ERROR,
    EXIT_OK,
    Handler,
    UsageError,
    emit_json,
    fetch_pages,
    hint_next,
    write_fields,
    write_table,
)
from service.client import BatchwiseClient, Probe
from service.client.formatting import MISSING, number, timestamp


def _int_list(flag: str, raw: str) -> list[int]:
    try:
        values = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{flag} {raw!r}: expected whole numbers like 1,2,4") from None
    if not values:
        raise UsageError(f"{flag} {raw!r}: expected whole numbers like 1,2,4")
    return values


def build_probe_body(args: argparse.Namespace) -> dict[str, object]:
    """The options of ``POST /v1/probes`` besides ``job_id``, from the flags given."""
    body: dict[str, object] = {}
    if args.at_epochs is not None:
        body["at_epochs"] = (
            "auto" if args.at_epochs == "auto" else _int_list("--at-epochs", args.at_epochs)
        )
    if args.multipliers is not None:
        body["multipliers"] = _int_list("--multipliers", args.multipliers)
    flags = {
        "window_samples": args.window_samples,
        "lr": args.lr,
        "tolerance": args.tolerance,
        "seeds": args.seeds,
        "loss_on": args.loss_on,
        "name": args.name,
    }
    return body | {name: value for name, value in flags.items() if value is not None}


def _changes() -> Callable[[Probe], None]:
    """A progress callback: one line on stderr whenever the probe's status or jobs change."""
    seen: list[str] = []

    def show(probe: Probe) -> None:
        counts = sorted(probe["jobs"].items())
        jobs = ", ".join(f"{count} {status}" for status, count in counts if count)
        line = f"probe {probe['id']} {probe['status']}: round {probe['round']}, jobs {jobs}"
        if not seen or seen[-1] != line:
            print(line, file=sys.stderr)
            seen.append(line)

    return show


def _submit(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    probe = client.create_probe(args.job_id, **build_probe_body(args))
    if args.wait:
        probe = client.wait_for_probe(probe["id"], on_progress=_changes(), poll_s=args.poll)
    if args.json:
        emit_json(probe, out)
    elif args.wait:
        _write_probe(probe, out)
    else:
        out.write(
            f"probe {probe['id']} {probe['status']}: "
            f"follow it with batchwise probes show {probe['id']}\n"
        )
    return EXIT_OK if not args.wait or probe["status"] == "succeeded" else EXIT_ERROR


def _bracket(low: int | None, high: int | None) -> str:
    if low is None:
        return MISSING
    return f"[{low}, {high})" if high is not None else f"[{low}, …)"


def _write_probe(probe: Probe, out: TextIO) -> None:
    write_fields(
        [
            ("id", probe["id"]),
            ("name", probe["name"] or MISSING),
            ("status", probe["status"] + (" (partial)" if probe["partial"] else "")),
            ("source job", probe["job_id"]),
            ("multipliers", ", ".join(str(k) for k in probe["multipliers"])),
            ("window", f"{probe['window_samples']} samples"),
            ("learning rate", probe["lr"]),
            ("tolerance", number(probe["tolerance"])),
            ("seeds", str(probe["seeds"])),
            ("created", timestamp(probe["created_at"])),
            ("finished", timestamp(probe["finished_at"])),
            ("error", probe["error"] or MISSING),
        ],
        out,
    )
    out.write("\n")
    rows = []
    for c in probe["checkpoints"]:
        critical = c["critical"]
        low, high = critical["bracket"][0], critical["bracket"][1]
        rows.append(
            [
                str(c["epoch"]),
                number(c["samples_seen"]),
                number(c["loss"]),
                number(c["batch_size"]),
                number(critical["batch_size"]),
                _bracket(low, high),
                number(c["b_simple"]),
                number(c["ratio"]),
                critical["reason"] or "",
            ]
        )
    header = ["EPOCH", "SAMPLES", "LOSS", "BATCH", "CRITICAL", "BRACKET", "B_SIMPLE", "RATIO"]
    write_table([*header, "NOTE"], rows, out)


def _show(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    probe = client.get_probe(args.probe_id)
    if args.json:
        emit_json(probe, out)
    else:
        _write_probe(probe, out)
    return EXIT_OK


def _list(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    page = fetch_pages(
        lambda cursor: client.list_probes(limit=args.limit, cursor=cursor), args.cursor, args.all
    )
    if args.json:
        emit_json(page, out)
        return EXIT_OK
    rows = [
        [
            probe["id"],
            probe["status"],
            probe["job_id"],
            ",".join(str(e) for e in probe["at_epochs"]),
            ",".join(str(k) for k in probe["multipliers"]),
            probe["name"] or "",
            timestamp(probe["created_at"]),
        ]
        for probe in page["items"]
    ]
    write_table(
        ["ID", "STATUS", "SOURCE JOB", "EPOCHS", "MULTIPLIERS", "NAME", "CREATED"], rows, out
    )
    hint_next(page["next_cursor"], f"batchwise probes list --limit {args.limit}")
    return EXIT_OK


def _cancel(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    probe = client.cancel_probe(args.probe_id)
    if args.json:
        emit_json(probe, out)
    else:
        out.write(f"probe {probe['id']} {probe['status']}\n")
    return EXIT_OK


HANDLERS: dict[str, Handler] = {
    "submit": _submit,
    "show": _show,
    "list": _list,
    "cancel": _cancel,
}
