"""The machine a benchmark ran on, printed beside its figures so they can be compared.

``describe()`` returns lines; ``print_machine()`` prints them. Standard library and NumPy
only (threadpoolctl, when installed, adds the BLAS that NumPy actually loaded).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory() -> str:
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024**2:.1f} GiB"
    return "unknown"


def _cores() -> str:
    logical = os.cpu_count()
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = logical
    return f"{logical} logical, {usable} usable by this process"


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-untyped]
    except ImportError:
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')} (build-time)".strip()
    pools = [
        f"{pool.get('internal_api')} {pool.get('version')} "
        f"({pool.get('num_threads')} threads, {pool.get('threading_layer', '?')})"
        for pool in threadpool_info()
        if pool.get("user_api") == "blas"
    ]
    return "; ".join(pools) or "none loaded"


def describe() -> list[str]:
    """One line per fact: CPU, cores, memory, Python, NumPy and its BLAS, OPENBLAS_* env."""
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(("OPENBLAS_", "OMP_"))}
    return [
        f"cpu: {_cpu_model()}",
        f"cores: {_cores()}",
        f"memory: {_memory()}",
        f"os: {platform.platform()}",
        f"python: {sys.version.split()[0]} ({platform.python_implementation()})",
        f"numpy: {np.__version__}, blas: {_blas()}",
        "env: " + (", ".join(f"{k}={v}" for k, v in env.items()) or "no OPENBLAS_*/OMP_* set"),
    ]


def print_machine() -> None:
    """Print :func:`describe`, indented under a heading."""
    print("machine:")
    for line in describe():
        print(f"  {line}")


if __name__ == "__main__":
    print_machine()
