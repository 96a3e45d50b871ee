"""What the training loop measures at the current θ besides its step losses: the validation
metrics, the evaluation loss (``config.evaluation``) and the gradient noise scale.

Noise scale (McCandlish et al. 2018): exact over every training row when they fit the budget
(``EXACT_NOISE_MAX_ROWS``, ``EXACT_NOISE_MAX_ROW_PARAMS``; ``ExactNoiseEstimator``), else on a
seeded sample: for linear/logistic/softmax through the rows' exact per-example gradients, for
an MLP through the two-batch estimator (``service.core.noise``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.core.config import TrainConfig
from service.core.data import EvalSet, RowReader
from service.core.models import Model
from service.core.noise import (
    ExactNoiseEstimator,
    NoiseEstimate,
    TwoBatchNoiseEstimator,
    noise_scale_from_sq_norms,
)
from service.core.records import NoiseRecord
from service.core.tasks import Task

__all__ = [
    "EVALUATION_ROWS",
    "EXACT_NOISE_MAX_ROWS",
    "EXACT_NOISE_MAX_ROW_PARAMS",
    "NOISE_SMALL_BATCHES",
    "NoiseMeter",
    "ValidationMetrics",
    "evaluation_loss",
    "make_evaluation_set",
]

#: Rows per loss call when evaluating (``config.evaluation``): few enough that BLAS runs
#: them on the calling thread.
EVALUATION_ROWS = 2048
#: Small batches the two-batch noise estimator splits its sample into (MLPs).
NOISE_SMALL_BATCHES = 16
#: The noise scale is exact (every training row, ``ExactNoiseEstimator``) up to this many
#: training rows for the linear models (linear, logistic, softmax) ...
EXACT_NOISE_MAX_ROWS = 65_536
#: ... and up to this many rows × parameters for an MLP: its cost, about two gradients over
#: the training set, stays within a small multiple of an epoch.
EXACT_NOISE_MAX_ROW_PARAMS = 2**26


def make_evaluation_set(
    config: TrainConfig,
    *,
    val: EvalSet | None,
    reader: RowReader,
    train_rows: np.ndarray,
    rng: np.random.Generator,
    budget: int,
) -> EvalSet:
    """The rows evaluations use: at most ``evaluation.max_rows`` of the train or validation
    rows, a seeded subsample (sorted, so read in file order) drawn once from ``rng``."""
    evaluation = config.evaluation
    assert evaluation is not None
    if evaluation.on == "validation":
        assert val is not None  # check_config_for_dataset demands one
        if val.n_rows <= evaluation.max_rows:
            return val  # the whole validation set, already there
        reader, rows = val.reader, val.rows
    else:
        rows = train_rows
    n = rows.shape[0]
    if n <= evaluation.max_rows:
        return EvalSet(reader, rows, max_bytes=budget)
    picked = np.sort(rng.choice(n, size=evaluation.max_rows, replace=False))
    return EvalSet(reader, rows[picked], max_bytes=budget)


def evaluation_loss(model: Model[Any], theta: np.ndarray, grad: np.ndarray, rows: EvalSet) -> float:
    """The mean loss over ``rows`` at θ (may be NaN or infinite). ``grad`` is scratch."""
    # One loss_and_grad per EVALUATION_ROWS rows: Model.loss's single matmul over all the
    # rows wakes the BLAS threads and is slower between small-batch steps.
    loss_and_grad = model.loss_and_grad
    loss_sum = 0.0
    n = 0
    # An overflow is reported as a divergence by the caller, not as NumPy's RuntimeWarning.
    with np.errstate(over="ignore", invalid="ignore"):
        for X_chunk, y_chunk in rows.chunks():
            for a in range(0, y_chunk.shape[0], EVALUATION_ROWS):
                y_piece = y_chunk[a : a + EVALUATION_ROWS]
                m = y_piece.shape[0]
                loss = loss_and_grad(theta, X_chunk[a : a + EVALUATION_ROWS], y_piece, grad)
                loss_sum += loss * m
                n += m
    return loss_sum / n


class ValidationMetrics:
    """(val_loss, val_rmse, val_r2, val_accuracy) over the validation set, or Nones."""

    def __init__(self, val: EvalSet | None, task: Task) -> None:
        self.val = val
        self.task = task
        #: Σ (y − ȳ)² over the validation targets (R²'s denominator; constant over the run).
        self.sst = self._total_sum_of_squares() if task == "regression" else 0.0

    def _total_sum_of_squares(self) -> float:
        if self.val is None:
            return 0.0
        total = 0.0
        count = 0
        for _, y_chunk in self.val.chunks():
            total += float(np.sum(y_chunk, dtype=np.float64))
            count += y_chunk.shape[0]
        mean = total / count
        sst = 0.0
        for _, y_chunk in self.val.chunks():
            centred = y_chunk.astype(np.float64) - mean
            sst += float(centred @ centred)
        return sst

    def measure(
        self, model: Model[Any], theta: np.ndarray
    ) -> tuple[float | None, float | None, float | None, float | None]:
        if self.val is None:
            return None, None, None, None
        loss_sum = 0.0
        sse = 0.0
        correct = 0
        n = 0
        for X_chunk, y_chunk in self.val.chunks():
            m = y_chunk.shape[0]
            loss_sum += model.loss(theta, X_chunk, y_chunk) * m
            output = model.predict_output(theta, X_chunk)
            if self.task == "regression":
                residual = y_chunk.astype(np.float64) - output
                sse += float(residual @ residual)
            elif self.task == "binary":
                correct += int(np.count_nonzero((output >= 0.5) == (y_chunk == 1.0)))
            else:
                correct += int(np.count_nonzero(np.argmax(output, axis=1) == y_chunk))
            n += m
        val_loss = loss_sum / n
        if self.task != "regression":
            return val_loss, None, None, correct / n
        if not math.isfinite(sse):
            return val_loss, None, None, None
        r2 = 1.0 - sse / self.sst if self.sst > 0.0 else None
        return val_loss, math.sqrt(sse / n), r2, None


class NoiseMeter:
    """The noise scale at θ over ``train_rows`` of ``reader`` (see the module docstring);
    the sampled estimate draws its rows from ``rng``."""

    def __init__(
        self,
        config: TrainConfig,
        model: Model[Any],
        reader: RowReader,
        train_rows: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        self.config = config
        self.model = model
        self.reader = reader
        self.train_rows = train_rows
        self.n_train = train_rows.shape[0]
        self.rng = rng
        row_params = self.n_train * model.n_params
        self.exact = (
            row_params <= EXACT_NOISE_MAX_ROW_PARAMS
            if config.model == "mlp"
            else self.n_train <= EXACT_NOISE_MAX_ROWS
        )
        self._rows: EvalSet | None = None  # the exact noise scale's, made when first used
        self._buffers: tuple[np.ndarray, np.ndarray] | None = None

    def record(self, theta: np.ndarray, grad: np.ndarray) -> NoiseRecord | None:
        """The noise scale at θ, or None when it is not finite. ``grad`` is scratch."""
        with np.errstate(over="ignore", invalid="ignore"):
            if self.exact:
                estimate, loss_level = self._exact_estimate(theta, grad)
            else:
                estimate, loss_level = self._sampled_estimate(theta)
        if estimate is None or not (
            math.isfinite(estimate.trace_sigma)
            and math.isfinite(estimate.grad_sq_norm)
            and math.isfinite(loss_level)
        ):
            return None
        b_simple = estimate.b_simple
        if b_simple is not None and not (math.isfinite(b_simple) and b_simple > 0.0):
            b_simple = None
        corrected = None if b_simple is None else 1.0 / (1.0 / b_simple + 1.0 / self.n_train)
        return NoiseRecord(
            b_simple=b_simple,
            b_simple_corrected=corrected,
            trace_sigma=float(estimate.trace_sigma),
            grad_sq_norm=float(estimate.grad_sq_norm),
            loss_level=float(loss_level),
            n_samples=int(estimate.n_samples),
            exact=estimate.exact,
            b_simple_lower_bound=estimate.lower_bound,
        )

    def _exact_estimate(
        self, theta: np.ndarray, grad: np.ndarray
    ) -> tuple[NoiseEstimate | None, float]:
        """(tr(Σ) and |G|² over all N training rows, the mean loss over them): per block of
        ``EVALUATION_ROWS`` rows, its mean gradient (``loss_and_grad``) and its rows' |g_i|²
        (``per_example_sq_norms``) into an ``ExactNoiseEstimator``. The rows are gathered chunk
        by chunk (no second copy of the training set); no randomness is drawn."""
        if self._rows is None:
            self._rows = EvalSet(self.reader, self.train_rows, max_bytes=0)
        model = self.model
        estimator = ExactNoiseEstimator()
        loss_sum = 0.0
        for X_chunk, y_chunk in self._rows.chunks():
            for a in range(0, y_chunk.shape[0], EVALUATION_ROWS):
                X_block, y_block = (
                    X_chunk[a : a + EVALUATION_ROWS],
                    y_chunk[a : a + EVALUATION_ROWS],
                )
                loss_sum += model.loss_and_grad(theta, X_block, y_block, grad) * y_block.shape[0]
                sq_norms = model.per_example_sq_norms(theta, X_block, y_block)
                estimator.add(sq_norms=sq_norms, mean_grad=grad)
        return estimator.estimate(), loss_sum / self.n_train

    def _sampled_estimate(self, theta: np.ndarray) -> tuple[NoiseEstimate | None, float]:
        """(the estimate on a seeded sample of training rows, the mean loss on it).

        Linear/logistic/softmax: exact per-example gradients, through their squared norms and
        the mean gradient (``noise_scale_from_sq_norms``). MLP: the sample of S rows is cut
        into m = min(16, S) small batches of b = S // m rows; each gives |G_b|², and
        their mean gradient is the gradient on all m·b rows, the big batch (two-batch estimator).
        """
        S = min(self.config.noise_scale_samples, self.n_train)
        picked = np.sort(self.rng.choice(self.n_train, size=S, replace=False))
        rows = self.train_rows[picked]
        if self._buffers is None or self._buffers[0].shape[0] != S:
            self._buffers = self.reader.empty(S)
        X_s, y_s = self._buffers
        self.reader.read(rows, X_s, y_s)
        model = self.model
        loss_level = model.loss(theta, X_s, y_s)
        if self.config.model != "mlp":
            # O(S + P) memory: the rows' |g_i|² and their mean gradient, not the (S, P) matrix
            mean_grad = np.empty_like(theta)
            model.loss_and_grad(theta, X_s, y_s, mean_grad)
            sq_norms = model.per_example_sq_norms(theta, X_s, y_s)
            return noise_scale_from_sq_norms(sq_norms, mean_grad), loss_level
        m = min(NOISE_SMALL_BATCHES, S)
        b = S // m
        small = np.empty_like(theta)
        big = np.zeros(theta.shape, dtype=np.float64)
        small_sq = 0.0
        for j in range(m):
            model.loss_and_grad(theta, X_s[j * b : (j + 1) * b], y_s[j * b : (j + 1) * b], small)
            small64 = small.astype(np.float64)
            small_sq += float(small64 @ small64)
            big += small64
        big /= m
        estimator = TwoBatchNoiseEstimator()
        estimator.add(
            small_sq_norm=small_sq / m, b_small=b, big_sq_norm=float(big @ big), b_big=m * b
        )
        return estimator.estimate(), loss_level
