"""``batchwise demo``: the service's batch-size story, end to end, through its HTTP API only.

1. Upload a bundled dataset, generated deterministically (:func:`make_dataset`): linear
   regression y = X·w + b + ε with independent normal features whose variances are
   log-spaced over a condition number of 30 (not standardized: on isotropic features S_min
   is a step or two and no critical batch can be fitted), b = 0.5 and ε ~ N(0, 1) — the best
   possible mean squared error is the noise variance, 1.
2. The seed comparison: batch 32 × 10 epochs against batch 128 × 5 epochs, same learning rate.
3. A sweep over batch sizes 8, 16, …, 4096 (those below the training rows) with the learning
   rate searched per batch size, the fit of S(B) = S_min (1 + B_noise / B) with its interval,
   the measured noise scale B_simple at the target's loss level, and the recommendation.
4. The plots, written to ``--out``.

Against ``--url`` (with the key in ``BATCHWISE_API_KEY``) or, by default, an embedded service
it starts itself (:mod:`.embedded`: ``batchwise serve`` with two workers on a free port of
loopback, auth off, SQLite in a temporary or given data dir) and stops at the end. Progress goes to
stderr (one updating line on a terminal, plain lines otherwise); the tables to stdout. Small
data and few epochs keep it to well under a few minutes on 2 cores.
"""

from service.client.demo.dataset import DATASET_SEED, DemoDataset, make_dataset
from service.client.demo.embedded import embedded_service
from service.client.demo.plan import FULL, QUICK, DemoPlan, sweep_batch_sizes
from service.client.demo.run import run_demo

__all__ = [
    "DATASET_SEED",
    "FULL",
    "QUICK",
    "DemoDataset",
    "DemoPlan",
    "embedded_service",
    "make_dataset",
    "run_demo",
    "sweep_batch_sizes",
]
