"""The worker: claims jobs from the database queue and trains them, one at a time per process.

``batchwise worker`` runs :func:`service.worker.loop.run_worker`; ``batchwise serve`` starts
``BATCHWISE_WORKERS`` of them as separate processes (:mod:`service.worker.processes`). This
package's top level stays free of NumPy so :func:`cap_blas_threads` can run before NumPy loads:
import ``service.worker.loop`` only after it.
"""

from __future__ import annotations

import os
import sys

#: The variables the BLAS and OpenMP runtimes NumPy may use read once, when they load.
BLAS_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def blas_thread_env(threads: int) -> dict[str, str]:
    """The environment that caps every BLAS/OpenMP pool of a process at ``threads``."""
    return dict.fromkeys(BLAS_THREAD_VARIABLES, str(threads))


def cap_blas_threads(threads: int) -> None:
    """Cap this process's BLAS threads at ``threads``.

    Before NumPy loads, the environment does it; after, threadpoolctl (a dependency) does.
    """
    if "numpy" not in sys.modules:
        os.environ.update(blas_thread_env(threads))
        return
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(limits=threads)


__all__ = ["BLAS_THREAD_VARIABLES", "blas_thread_env", "cap_blas_threads"]
