"""The worker: claims jobs from the database queue and trains them, one at a time per process.

``batchwise worker`` runs :func:`service.worker.loop.run_worker`; ``batchwise serve`` starts
``BATCHWISE_WORKERS`` of them as separate processes (:mod:`service.worker.processes`). This
package's top level stays free of NumPy so :func:`cap_blas_threads` can run before NumPy loads:
import ``service.worker.loop`` only after it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

logger = logging.getLogger("service.worker")

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


def cap_blas_threads(threads: int) -> bool:
    """Cap this process's BLAS threads at ``threads``; True when the cap is in force.

    Before NumPy loads, the environment does it. After, only threadpoolctl can (when
    installed); otherwise the cap is not applied and a warning says so.
    """
    if "numpy" not in sys.modules:
        os.environ.update(blas_thread_env(threads))
        return True
    try:
        threadpoolctl = importlib.import_module("threadpoolctl")
    except ImportError:
        logger.warning("NumPy loaded before the BLAS thread cap and threadpoolctl is missing")
        return False
    threadpoolctl.threadpool_limits(limits=threads)
    return True


__all__ = ["BLAS_THREAD_VARIABLES", "blas_thread_env", "cap_blas_threads"]
