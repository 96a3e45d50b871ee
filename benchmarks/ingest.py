"""CSV ingestion speed and memory, beside ``numpy.loadtxt`` on the same file in this process.

    .venv/bin/python -m benchmarks.ingest            # ~100 MB files (~1 minute)
    .venv/bin/python -m benchmarks.ingest --mb 10    # quicker

Two numeric CSVs are generated in a temporary directory, 64 float features and a target:
"short" cells of 6 significant digits (``%.6g``, typical exports) and "full" cells of 17
(``%.17g``, every float64 round-trips). For each: MB/s of ``parse_file`` and of
``np.loadtxt`` (best of ``--repeat``, the two interleaved so a noisy neighbour hits both) and
their ratio; then the peak traced memory (tracemalloc, in separate runs because tracing slows
allocation) over the size of the parsed arrays, which the design bounds by 3×. Last, the
slow path: the short file with a NaN in every hundredth row, parsed with
``invalid_rows="drop"``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import machine
from service.datasets.ingest import IngestLimits, parse_file

N_FEATURES = 64
LIMITS = IngestLimits(max_rows=10**9, max_features=10_000)


def write_csv(
    path: Path, target_mb: float, fmt: str, seed: int = 0, nan_every: int | None = None
) -> int:
    """Write about ``target_mb`` MB of standard-normal rows in ``fmt``; return the row count.
    With ``nan_every``, every such row has a NaN in its first cell."""
    rng = np.random.default_rng(seed)
    header = ",".join(f"f{i}" for i in range(N_FEATURES)) + ",y\n"
    row_fmt = ",".join([fmt] * (N_FEATURES + 1)) + "\n"
    block_rows = 2_000
    rows = 0
    with path.open("w") as f:
        f.write(header)
        while f.tell() < target_mb * 1e6:
            block = rng.standard_normal((block_rows, N_FEATURES + 1))
            if nan_every:
                block[(rows + np.arange(block_rows)) % nan_every == 0, 0] = np.nan
            f.write("".join(row_fmt % tuple(row) for row in block.tolist()))
            rows += block_rows
    return rows


def bench_drop(path: Path, nan_every: int) -> None:
    """The slow path: every block holds NaN rows, so each is read line by line."""
    mb = path.stat().st_size / 1e6
    start = time.perf_counter()
    parsed = parse_file(path, "csv", target=None, limits=LIMITS, invalid_rows="drop")
    seconds = time.perf_counter() - start
    print(
        f"\ninvalid_rows='drop', a NaN in 1 row of {nan_every}: {mb:.1f} MB, "
        f"{parsed.dropped_rows} rows dropped\n  parse_file  {mb / seconds:7.1f} MB/s  "
        f"({seconds:.2f} s; the line-by-line path)"
    )


def best_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def traced_peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench_file(path: Path, label: str, repeat: int) -> None:
    mb = path.stat().st_size / 1e6

    def ours() -> object:
        return parse_file(path, "csv", target=None, limits=LIMITS)

    def loadtxt() -> np.ndarray:
        return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)

    parsed = parse_file(path, "csv", target=None, limits=LIMITS)
    reference = loadtxt()
    same = np.array_equal(parsed.X, reference[:, :-1]) and np.array_equal(
        parsed.y, reference[:, -1]
    )
    arrays_mb = (parsed.X.nbytes + parsed.y.nbytes) / 1e6
    del parsed, reference
    t_ours = t_loadtxt = float("inf")
    for _ in range(repeat):  # interleaved
        t_loadtxt = min(t_loadtxt, best_seconds(loadtxt, 1))
        t_ours = min(t_ours, best_seconds(ours, 1))
    peak_ours = traced_peak(ours) / 1e6
    peak_loadtxt = traced_peak(loadtxt) / 1e6
    print(f"\n{label}: {path.stat().st_size / 1e6:.1f} MB, parsed arrays {arrays_mb:.1f} MB")
    print(f"  values identical to np.loadtxt: {same}")
    print(f"  parse_file  {mb / t_ours:7.1f} MB/s  ({t_ours:.2f} s)")
    print(f"  np.loadtxt  {mb / t_loadtxt:7.1f} MB/s  ({t_loadtxt:.2f} s)")
    print(f"  speed ratio parse_file / loadtxt: {t_loadtxt / t_ours:.2f}x")
    print(
        f"  peak traced memory: parse_file {peak_ours:.0f} MB = "
        f"{peak_ours / arrays_mb:.2f}x the arrays; np.loadtxt {peak_loadtxt:.0f} MB = "
        f"{peak_loadtxt / arrays_mb:.2f}x"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=float, default=100.0, help="size of each CSV (MB)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each parser")
    args = parser.parse_args(argv)
    machine.print_machine()
    with tempfile.TemporaryDirectory(prefix="batchwise-bench-ingest-") as tmp:
        for label, fmt in (("short cells (%.6g)", "%.6g"), ("full cells (%.17g)", "%.17g")):
            path = Path(tmp) / "data.csv"
            start = time.perf_counter()
            rows = write_csv(path, args.mb, fmt)
            print(f"\n[generated {rows} rows in {time.perf_counter() - start:.1f} s]", end="")
            bench_file(path, label, args.repeat)
            path.unlink()
        path = Path(tmp) / "nan.csv"
        write_csv(path, args.mb, "%.6g", nan_every=100)
        bench_drop(path, 100)


if __name__ == "__main__":
    main()
