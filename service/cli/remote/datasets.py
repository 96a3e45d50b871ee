"""``batchwise datasets upload|list|show|delete``: the handlers, on the HTTP client."""

from __future__ import annotations

import argparse
from typing import TextIO

from service.cli.remote.handler import (
    EXIT_OK,
    Handler,
    UsageError,
    emit_json,
    fetch_pages,
    hint_next,
    write_fields,
    write_table,
)
from service.client import BatchwiseClient, Dataset
from service.client.formatting import MISSING, number, timestamp


def _upload(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    if not args.file.is_file():
        raise UsageError(f"no such file: {args.file}")
    dataset = client.upload_dataset(
        args.file, name=args.name, target=args.target, invalid_rows=args.invalid_rows
    )
    if args.json:
        emit_json(dataset, out)
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
        ("classes", MISSING if classes is None else ", ".join(number(c) for c in classes)),
        ("format", f"{dataset['source_format']}, {dataset['size_bytes']} bytes stored"),
        ("sha256", dataset["sha256"]),
        ("created", timestamp(dataset["created_at"])),
    ]
    write_fields(fields, out)


def _list(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    page = fetch_pages(
        lambda cursor: client.list_datasets(limit=args.limit, cursor=cursor), args.cursor, args.all
    )
    if args.json:
        emit_json(page, out)
        return EXIT_OK
    rows = [
        [
            d["id"],
            d["name"],
            str(d["n_rows"]),
            str(d["n_features"]),
            d["target"],
            d["task"],
            timestamp(d["created_at"]),
        ]
        for d in page["items"]
    ]
    write_table(["ID", "NAME", "ROWS", "FEATURES", "TARGET", "TASK", "CREATED"], rows, out)
    hint_next(page["next_cursor"], f"batchwise datasets list --limit {args.limit}")
    return EXIT_OK


def _show(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    dataset = client.get_dataset(args.dataset_id)
    if args.json:
        emit_json(dataset, out)
        return EXIT_OK
    _write_dataset(dataset, out)
    out.write("\n")
    rows = [
        [s["name"], number(s["mean"]), number(s["std"]), number(s["min"]), number(s["max"])]
        for s in dataset["stats"]
    ]
    write_table(["FEATURE", "MEAN", "STD", "MIN", "MAX"], rows, out)
    return EXIT_OK


def _delete(client: BatchwiseClient, args: argparse.Namespace, out: TextIO) -> int:
    client.delete_dataset(args.dataset_id)
    if not args.json:
        out.write(f"deleted dataset {args.dataset_id}\n")
    return EXIT_OK


HANDLERS: dict[str, Handler] = {
    "upload": _upload,
    "list": _list,
    "show": _show,
    "delete": _delete,
}
