"""The training loop: minibatch steps over epochs, one ``EpochRecord`` per epoch.

    training = Training(X, y, config, should_stop=cancelled)
    for record in training:            # raises TrainingDiverged
        save(record, training.checkpoint().to_bytes())
    fitted = training.model

Randomness: one ``np.random.default_rng(seed)`` spawns five independent children — init,
validation split, shuffles, noise-scale samples, the evaluation subsample — so switching one
feature on (noise_scale, evaluation) never changes another's stream. Nothing touches NumPy's
global RNG.

Per epoch e (0-based): B = batch_size_schedule.batch_size_at(e, batch_size or n_train, n_train)
(adaptive: the size ``BatchSizeSchedule.adapt`` chose at the last epoch end from the measured
noise scale, kept in the checkpoint), lr = lr_schedule.lr_at(e, scale_lr(learning_rate, B,
reference_batch_size, lr_scaling), epochs), both fixed for the epoch. The epoch's rows are
gathered once (see ``data``), then each step takes a contiguous slice view:
``J, g = loss_and_grad(θ, X[a:a+B], y[a:a+B])``; ``θ ← optimizer(θ, g)``.
``train_loss`` is the mean of the epoch's step losses (the Keras convention: losses at the θ
each step started from, so it lags the end-of-epoch parameters by half an epoch).

Plain SGD (no weight decay, no clipping) takes the same steps by shorter routes, equal to the
general step up to rounding and as deterministic: the gradient comes scaled by −lr
(``loss_and_scaled_grad``) and the update is one add; and for linear-mse and logistic models
with B ≤ ``AUGMENTED_MAX_BATCH`` and the rows in memory, ``AugmentedSGD`` steps over
cache-sized chunks of [x | 1 | y] rows (``AugmentedEpochs``), its losses checked per chunk.

Evaluations (``config.evaluation``): the loss on a fixed subsample of the train or validation
rows at global step 0 (the initial θ), at every epoch end and at the log-spaced steps
``schedules.log_spaced_steps`` — a pure function of the global step. The epoch's step loop is
split at the scheduled steps (the general loop compares its step count with the next one; the
fast path cuts its chunks there), so without evaluations nothing is added to a step, and with
them the steps are the same (bit for bit). A non-finite evaluation loss is a divergence.

Stopping: ``should_stop()`` is called between steps; when it returns True the partial epoch is
dropped (state rolls back to the last epoch boundary) and iteration ends with
``stop_reason == "stopped"``. ``checkpoint()`` always describes the last completed epoch, so a
worker can resume it in a fresh process and reproduce every later epoch bit for bit.

Divergence: a step loss that is not finite, or above 10⁶ × the reference (the first step's loss
during epoch 1, then the first epoch's train loss), raises ``TrainingDiverged`` with the epoch
(1-based) and the step within it (1-based); the state rolls back to the last boundary. A record
never holds NaN or infinity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from service.core.checkpoint import Checkpoint
from service.core.config import TrainConfig, check_config_for_dataset, effective_task, split_sizes
from service.core.data import (
    AugmentedEpochs,
    EvalSet,
    InMemoryEpochs,
    RowReader,
    Standardization,
    check_finite_features,
    check_inputs,
    encode_targets,
    encode_with_classes,
    fit_standardization,
    make_epoch_source,
    split_rows,
)
from service.core.errors import CoreConfigError, TrainingDiverged
from service.core.fitted import FittedModel
from service.core.models import AUGMENTED_MAX_BATCH, AugmentedSGD, augmented_sgd, build_model
from service.core.noise import (
    ExactNoiseEstimator,
    NoiseEstimate,
    TwoBatchNoiseEstimator,
    noise_scale_from_sq_norms,
)
from service.core.optim import make_optimizer
from service.core.schedules import log_spaced_steps, scale_lr
from service.core.tasks import Task, infer_task

StopReason = Literal["completed", "early_stopping", "stopped", "diverged"]

#: A loss above this multiple of the reference loss counts as divergence.
DIVERGENCE_FACTOR = 1e6
#: Step losses are stored as float32; anything above its range would not be finite there.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Rows per loss call when evaluating (``config.evaluation``): few enough that BLAS runs
#: them on the calling thread.
EVALUATION_ROWS = 2048
#: Small batches the two-batch noise estimator splits its sample into (MLPs).
NOISE_SMALL_BATCHES = 16
#: The noise scale is exact (every training row, ``ExactNoiseEstimator``) up to this many
#: training rows for the linear models (linear, logistic, softmax) ...
EXACT_NOISE_MAX_ROWS = 65_536
#: ... and up to this many rows × parameters for an MLP: its cost, about two gradients over
#: the training set, stays within a small multiple of an epoch (figures in the report).
EXACT_NOISE_MAX_ROW_PARAMS = 2**26


@dataclass(frozen=True)
class NoiseRecord:
    """Gradient noise scale at the end of an epoch (McCandlish et al. 2018).

    ``b_simple = tr(Σ)/|G|²`` (None when the |G|² estimate is not positive);
    ``b_simple_corrected = 1/(1/b_simple + 1/N)`` for sampling N training rows without
    replacement; ``loss_level`` the loss on the same rows at the same θ. ``exact``: computed
    over all N training rows (``n_samples`` = N, nothing estimated), else on a sample.
    ``b_simple_lower_bound``: when the sampled |G|² is not positive, B_simple ≳ tr(Σ)/|ḡ|²
    (``service.core.noise``), a lower bound; None otherwise.
    """

    b_simple: float | None
    b_simple_corrected: float | None
    trace_sigma: float
    grad_sq_norm: float
    loss_level: float
    n_samples: int
    exact: bool = False
    b_simple_lower_bound: float | None = None


@dataclass(frozen=True)
class EvaluationPoint:
    """The loss evaluated after ``step`` optimizer steps of the run (0: the initial θ), when
    ``samples`` training examples had been consumed (``config.evaluation``)."""

    step: int
    samples: int
    loss: float


@dataclass(frozen=True, eq=False)
class EpochRecord:
    """One epoch's results. ``step_losses`` (steps,) float32, one per minibatch step.

    ``evaluations``: the evaluations made during the epoch, in step order (epoch 1's starts at
    step 0; each epoch's ends at its last step); empty without ``config.evaluation``.
    ``batch_size_reason``: with the adaptive batch size, why the epoch ran at ``batch_size``.
    """

    epoch: int
    train_loss: float
    val_loss: float | None
    val_rmse: float | None
    val_r2: float | None
    val_accuracy: float | None
    learning_rate: float
    batch_size: int
    steps: int
    total_steps: int
    samples_seen: int
    wall_time_s: float
    samples_per_s: float
    noise_scale: NoiseRecord | None
    step_losses: np.ndarray
    evaluations: tuple[EvaluationPoint, ...] = ()
    batch_size_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields without ``step_losses`` (store those as ``step_losses.tobytes()``);
        ``evaluations`` as a list of ``{step, samples, loss}``."""
        out = {name: value for name, value in asdict(self).items() if name != "step_losses"}
        out["evaluations"] = [asdict(point) for point in self.evaluations]
        return out


def _limit(reference: float) -> float:
    """The largest step loss allowed: 10⁶ × the reference, within float32's range."""
    if reference > 0.0:
        return min(DIVERGENCE_FACTOR * reference, _FLOAT32_MAX)
    return _FLOAT32_MAX


def _divergence_reason(loss: float, reference: float | None, *, first_epoch: bool) -> str:
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    if reference is None or reference <= 0.0 or loss >= _FLOAT32_MAX:
        return f"the loss {loss:.4g} overflows float32"
    what = "the first step's" if first_epoch else "the first epoch's"
    return f"the loss {loss:.4g} is over {DIVERGENCE_FACTOR:g} × {what} ({reference:.4g})"


class Training:
    """A run of ``config`` on ``X`` (n, d) and ``y`` (n,); iterate it for one record per epoch.

    ``X_val``/``y_val``: an explicit validation set (instead of ``validation_split``).
    ``resume_from``: continue a checkpoint of the same config and data. ``should_stop``: called
    between steps; True ends the run at the last epoch boundary. ``task``: the target's task
    when known (dataset metadata), else ``infer_task(y)``.
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        config: TrainConfig,
        *,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        resume_from: Checkpoint | None = None,
        should_stop: Callable[[], bool] | None = None,
        task: Task | None = None,
    ) -> None:
        check_inputs(X, y)
        explicit_val = X_val is not None or y_val is not None
        if explicit_val:
            if X_val is None or y_val is None:
                raise CoreConfigError("X_val", "give both X_val and y_val, or neither")
            check_inputs(X_val, y_val, name="X_val", y_name="y_val")
            if X_val.shape[1] != X.shape[1]:
                raise CoreConfigError("X_val", f"has {X_val.shape[1]} features; X has {X.shape[1]}")
        self.config = config
        self._should_stop = should_stop
        self.stop_reason: StopReason | None = None
        dtype = np.dtype(config.dtype)
        n_rows, n_features = X.shape
        self.n_features = n_features

        data_task: Task = task if task is not None else infer_task(y)
        self.task: Task = effective_task(config, data_task)
        y_encoded, classes = encode_targets(y, self.task, dtype)
        n_classes: int | None = None
        if data_task != "regression":
            n_classes = classes.shape[0] if classes is not None else int(np.unique(y).shape[0])
        check_config_for_dataset(
            config,
            n_rows=n_rows,
            n_features=n_features,
            task=data_task,
            n_classes=n_classes,
            explicit_validation=explicit_val,
        )
        self.classes = classes
        check_finite_features(X)

        # spawn(5)'s first four children are spawn(4)'s: adding the fifth changed no stream.
        init_rng, split_rng, self._shuffle_rng, self._noise_rng, evaluation_rng = (
            np.random.default_rng(config.seed).spawn(5)
        )
        _, n_val = split_sizes(n_rows, config.validation_split)
        train_rows, val_rows = split_rows(n_rows, n_val, split_rng)
        #: Row indices (sorted) of X used for training and for validation (empty with X_val).
        self.train_rows = train_rows
        self.val_rows = val_rows
        self.n_train = train_rows.shape[0]

        standardization: Standardization | None = None
        if resume_from is not None and resume_from.mean is not None and resume_from.std is not None:
            standardization = Standardization(mean=resume_from.mean, std=resume_from.std)
        elif config.standardize:
            standardization = fit_standardization(X, train_rows, dtype)
        self.standardization = standardization

        self._reader = RowReader(X, y_encoded, dtype=dtype, standardization=standardization)
        budget = config.max_in_memory_bytes
        self._source = make_epoch_source(self._reader, train_rows, max_bytes=budget)
        val_budget = max(0, budget - self.n_train * self._reader.row_bytes)
        self._val: EvalSet | None = None
        if explicit_val:
            assert X_val is not None
            assert y_val is not None
            check_finite_features(X_val, name="X_val")
            y_val_encoded = encode_with_classes(y_val, self.task, dtype, classes)
            val_reader = RowReader(
                X_val, y_val_encoded, dtype=dtype, standardization=standardization
            )
            all_val = np.arange(X_val.shape[0], dtype=np.intp)
            self._val = EvalSet(val_reader, all_val, max_bytes=val_budget)
        elif n_val:
            self._val = EvalSet(self._reader, val_rows, max_bytes=val_budget)
        self._val_sst = self._total_sum_of_squares() if self.task == "regression" else 0.0
        self._evaluation_set: EvalSet | None = None
        if config.evaluation is not None:
            self._evaluation_set = self._make_evaluation_set(evaluation_rng, budget)

        self._model = build_model(
            config.model,
            task=self.task,
            n_features=n_features,
            n_classes=classes.shape[0]
            if self.task == "multiclass" and classes is not None
            else None,
            loss=config.loss,
            huber_delta=config.huber_delta,
            hidden_layers=config.hidden_layers,
            activation=config.activation,
        )
        self._theta = self._model.init_params(init_rng, dtype)
        self._grad = np.zeros_like(self._theta)
        self._optimizer = make_optimizer(
            config.optimizer,
            n_params=self._model.n_params,
            dtype=dtype,
            momentum=config.momentum,
            beta1=config.beta1,
            beta2=config.beta2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            clip_norm=config.clip_norm,
        )
        self._noise_buffers: tuple[np.ndarray, np.ndarray] | None = None
        row_params = self.n_train * self._model.n_params
        self._exact_noise = (
            row_params <= EXACT_NOISE_MAX_ROW_PARAMS
            if config.model == "mlp"
            else self.n_train <= EXACT_NOISE_MAX_ROWS
        )
        self._noise_rows: EvalSet | None = None  # the exact noise scale's, made when first used
        # The small-batch fast path: plain SGD on linear-mse / logistic, rows in memory.
        self._augmented: AugmentedSGD | None = None
        if self._optimizer.is_plain_sgd and isinstance(self._source, InMemoryEpochs):
            self._augmented = augmented_sgd(self._model, dtype)
        self._augmented_epochs: AugmentedEpochs | None = None  # built at its first epoch

        schedule = config.batch_size_schedule
        self._adaptive = schedule.kind == "adaptive"
        #: Adaptive only: the batch size of the next epoch, and why (kept in the checkpoint).
        self._batch_size: int | None = None
        self._batch_size_reason: str | None = None
        if self._adaptive:
            base = config.batch_size if config.batch_size is not None else self.n_train
            self._batch_size = schedule.batch_size_at(0, base, self.n_train)
            asked = "the whole training set" if config.batch_size is None else f"batch_size {base}"
            self._batch_size_reason = f"started at {self._batch_size} ({asked}"
            if self._batch_size != base:
                self._batch_size_reason += ", within min_batch_size, max_batch_size, the rows"
            self._batch_size_reason += ")"

        self._epoch = 0
        self._samples_seen = 0
        self._total_steps = 0
        self._reference: float | None = None
        self._best_value: float | None = None
        self._best_epoch = 0
        self._wait = 0
        self._best_theta: np.ndarray | None = None
        self._finished: str | None = None
        if resume_from is not None:
            self._check_resumable(resume_from)
            self._restore(resume_from)
            self._checkpoint = resume_from
        else:
            self._checkpoint = self._snapshot()

    # -- state ---------------------------------------------------------------------------------

    def _check_resumable(self, checkpoint: Checkpoint) -> None:
        if checkpoint.config != self.config:
            raise CoreConfigError("resume_from", "the checkpoint was made with a different config")
        if checkpoint.task != self.task or checkpoint.n_features != self.n_features:
            raise CoreConfigError("resume_from", "the checkpoint was made on different data")
        same_classes = (checkpoint.classes is None and self.classes is None) or (
            checkpoint.classes is not None
            and self.classes is not None
            and np.array_equal(checkpoint.classes, self.classes)
        )
        if not same_classes:
            raise CoreConfigError("resume_from", "the checkpoint was made with other class labels")
        if (
            checkpoint.theta.shape != self._theta.shape
            or checkpoint.theta.dtype != self._theta.dtype
        ):
            raise CoreConfigError(
                "resume_from", "the checkpoint's parameters do not fit this model"
            )
        if checkpoint.epoch > self.config.epochs:
            raise CoreConfigError("resume_from", "the checkpoint is past the configured epochs")

    def _snapshot(self) -> Checkpoint:
        return Checkpoint(
            config=self.config,
            epoch=self._epoch,
            theta=self._theta.copy(),
            optimizer_state=self._optimizer.state_dict(),
            rng_states={
                "shuffle": self._shuffle_rng.bit_generator.state,
                "noise": self._noise_rng.bit_generator.state,
            },
            task=self.task,
            n_features=self.n_features,
            samples_seen=self._samples_seen,
            total_steps=self._total_steps,
            classes=self.classes,
            mean=None if self.standardization is None else self.standardization.mean,
            std=None if self.standardization is None else self.standardization.std,
            divergence_reference=self._reference,
            best_value=self._best_value,
            best_epoch=self._best_epoch,
            epochs_without_improvement=self._wait,
            best_theta=None if self._best_theta is None else self._best_theta.copy(),
            finished=self._finished,
            batch_size=self._batch_size,
            batch_size_reason=self._batch_size_reason,
        )

    def _restore(self, checkpoint: Checkpoint) -> None:
        np.copyto(self._theta, checkpoint.theta)
        self._optimizer.load_state_dict(checkpoint.optimizer_state)
        self._shuffle_rng.bit_generator.state = checkpoint.rng_states["shuffle"]
        self._noise_rng.bit_generator.state = checkpoint.rng_states["noise"]
        self._epoch = checkpoint.epoch
        self._samples_seen = checkpoint.samples_seen
        self._total_steps = checkpoint.total_steps
        self._reference = checkpoint.divergence_reference
        self._best_value = checkpoint.best_value
        self._best_epoch = checkpoint.best_epoch
        self._wait = checkpoint.epochs_without_improvement
        self._best_theta = None if checkpoint.best_theta is None else checkpoint.best_theta.copy()
        self._finished = checkpoint.finished
        if self._adaptive and checkpoint.batch_size is not None:
            self._batch_size = checkpoint.batch_size
            self._batch_size_reason = checkpoint.batch_size_reason

    def checkpoint(self) -> Checkpoint:
        """The state at the last completed epoch boundary (epoch 0 before any)."""
        return self._checkpoint

    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self._epoch

    @property
    def model(self) -> FittedModel:
        """The current parameters (the best epoch's after early stopping with restore)."""
        return FittedModel(
            config=self.config,
            task=self.task,
            n_features=self.n_features,
            theta=self._theta.copy(),
            mean=None if self.standardization is None else self.standardization.mean,
            std=None if self.standardization is None else self.standardization.std,
            classes=self.classes,
        )

    # -- the loop ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[EpochRecord]:
        if self._finished is not None:
            self.stop_reason = "completed" if self._finished == "completed" else "early_stopping"
            return
        while self._epoch < self.config.epochs:
            if self._should_stop is not None and self._should_stop():
                self.stop_reason = "stopped"
                return
            record = self._run_epoch()
            if record is None:
                self.stop_reason = "stopped"
                return
            yield record
            if self._finished == "early_stopping":
                self.stop_reason = "early_stopping"
                return
        self.stop_reason = "completed"

    def _lr_and_batch_size(self, epoch0: int) -> tuple[float, int]:
        c = self.config
        if self._batch_size is not None:  # adaptive
            batch_size = self._batch_size
        else:
            base = c.batch_size if c.batch_size is not None else self.n_train
            batch_size = c.batch_size_schedule.batch_size_at(epoch0, base, self.n_train)
        scaled = scale_lr(c.learning_rate, batch_size, c.reference_batch_size, c.lr_scaling)
        return c.lr_schedule.lr_at(epoch0, scaled, c.epochs), batch_size

    def _diverged(
        self, epoch: int, step: int, loss: float, lr: float, why: str
    ) -> TrainingDiverged:
        self._restore(self._checkpoint)
        self.stop_reason = "diverged"
        remedy = f"lower the learning rate (now {lr:g})"
        if not self.config.standardize:
            remedy += " or set standardize"
        elif self.config.clip_norm is None:
            remedy += " or set clip_norm"
        return TrainingDiverged(
            epoch=epoch,
            step=step,
            loss=loss,
            message=f"training diverged at epoch {epoch}, step {step}: {why}; {remedy}",
        )

    def _run_epoch(self) -> EpochRecord | None:
        start_time = time.perf_counter()
        epoch0 = self._epoch
        epoch = epoch0 + 1
        lr, B = self._lr_and_batch_size(epoch0)
        n_train = self.n_train
        steps = n_train // B + (1 if n_train % B and not self.config.drop_last else 0)
        step_losses = np.empty(steps, dtype=np.float32)
        evaluations: list[EvaluationPoint] = []
        stops: list[int] = []  # steps within the epoch after which to evaluate (< steps)
        evaluation = self.config.evaluation
        if evaluation is not None:
            g0 = self._total_steps
            if g0 == 0:
                self._evaluate_at(evaluations, epoch, 0, B, lr)
            scheduled = log_spaced_steps(evaluation.per_decade, g0, g0 + steps - 1)
            stops = [step - g0 for step in scheduled]
        on_fast_path = self._augmented is not None and B <= AUGMENTED_MAX_BATCH
        if not on_fast_path:
            # Batch sizes never shrink: the fast path's rows are not needed again, and
            # dropping them first keeps the peak at InMemoryEpochs' copy and buffer.
            self._augmented_epochs = None
        # A diverging step overflows: that is reported as TrainingDiverged from its loss
        # (below), not as NumPy's RuntimeWarning on the way there.
        with np.errstate(over="ignore", invalid="ignore"):
            if on_fast_path:
                assert self._augmented is not None
                loss_sum = self._augmented_steps(
                    self._augmented, epoch, lr, B, step_losses, stops, evaluations
                )
            else:
                loss_sum = self._steps(epoch, lr, B, step_losses, stops, evaluations)
        if loss_sum is None:  # should_stop: the partial epoch is dropped
            self._restore(self._checkpoint)
            return None
        if evaluation is not None:
            self._evaluate_at(evaluations, epoch, steps, B, lr)

        train_loss = loss_sum / steps
        samples = min(steps * B, n_train)
        if epoch0 == 0:
            self._reference = train_loss
        val_loss, val_rmse, val_r2, val_accuracy = self._evaluate()
        if val_loss is not None and not math.isfinite(val_loss):
            raise self._diverged(epoch, steps, val_loss, lr, "the validation loss is not finite")
        noise = self._noise_record() if self.config.measures_noise_scale else None
        batch_size_reason = self._batch_size_reason
        if self._adaptive:
            measured = None if noise is None else noise.b_simple_corrected
            # |G|² not positive: B_simple is beyond what the sample resolves, ≳ its bound
            # tr(Σ)/|ḡ|² (≥ the sample's size, which stands in when there is no bound).
            lower_bound = noise is not None and measured is None and noise.grad_sq_norm <= 0.0
            if noise is not None and lower_bound:
                bound = noise.b_simple_lower_bound or float(noise.n_samples)
                measured = 1.0 / (1.0 / bound + 1.0 / n_train)
            change = self.config.batch_size_schedule.adapt(
                B, measured, n_train, epoch=epoch, lower_bound=lower_bound
            )
            self._batch_size, self._batch_size_reason = change.batch_size, change.reason

        self._epoch = epoch
        self._total_steps += steps
        self._samples_seen += samples
        self._early_stopping(epoch, train_loss, val_loss)
        if self._finished is None and epoch == self.config.epochs:
            self._finished = "completed"
        self._checkpoint = self._snapshot()
        wall = time.perf_counter() - start_time
        return EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_rmse=val_rmse,
            val_r2=val_r2,
            val_accuracy=val_accuracy,
            learning_rate=lr,
            batch_size=B,
            steps=steps,
            total_steps=self._total_steps,
            samples_seen=self._samples_seen,
            wall_time_s=wall,
            samples_per_s=samples / wall if wall > 0 else 0.0,
            noise_scale=noise,
            step_losses=step_losses,
            evaluations=tuple(evaluations),
            batch_size_reason=batch_size_reason,
        )

    def _steps(
        self,
        epoch: int,
        lr: float,
        B: int,
        step_losses: np.ndarray,
        stops: list[int],
        evaluations: list[EvaluationPoint],
    ) -> float | None:
        """The epoch's steps, ``loss_and_grad`` then the optimizer, each loss checked at once,
        evaluating after each step in ``stops``. Fills step_losses; returns their sum, or None
        when should_stop() said stop."""
        # Locals: attribute look-ups cost more than the steps at small batch sizes.
        theta, grad = self._theta, self._grad
        optimizer = self._optimizer
        # Plain SGD: the gradient comes scaled by −lr, and the step is one add.
        plain = optimizer.is_plain_sgd
        loss_and_grad = self._model.loss_and_grad
        loss_and_scaled_grad = self._model.loss_and_scaled_grad
        optimizer_step = optimizer.step
        add = np.add
        neg_lr = -lr
        should_stop = self._should_stop
        reference = self._reference
        need_reference = reference is None
        limit = _FLOAT32_MAX if reference is None else _limit(reference)
        steps = step_losses.shape[0]
        loss_sum = 0.0
        step = 0
        # The one per-step cost of evaluations: comparing the step with the next stop (past
        # the epoch's last step when there is none).
        pending = iter(stops)
        next_stop = next(pending, steps + 1)
        rng = self._shuffle_rng if self.config.shuffle else None
        for X_seg, y_seg in self._source.segments(B, rng):
            n_seg = X_seg.shape[0]
            for a in range(0, n_seg, B):
                if step == steps:  # the partial batch that drop_last drops
                    break
                if plain:
                    loss = loss_and_scaled_grad(
                        theta, X_seg[a : a + B], y_seg[a : a + B], grad, neg_lr
                    )
                else:
                    loss = loss_and_grad(theta, X_seg[a : a + B], y_seg[a : a + B], grad)
                if not loss < limit:
                    why = _divergence_reason(loss, reference, first_epoch=epoch == 1)
                    raise self._diverged(epoch, step + 1, loss, lr, why)
                if need_reference:
                    reference = loss
                    limit = _limit(loss)
                    need_reference = False
                step_losses[step] = loss
                loss_sum += loss
                if plain:
                    add(theta, grad, out=theta)
                else:
                    optimizer_step(theta, grad, lr)
                step += 1
                if step == next_stop:
                    self._evaluate_at(evaluations, epoch, step, B, lr)
                    next_stop = next(pending, steps + 1)
                if should_stop is not None and should_stop():
                    return None
        if plain:
            optimizer.count_steps(steps)
        return loss_sum

    def _augmented_steps(
        self,
        kernel: AugmentedSGD,
        epoch: int,
        lr: float,
        B: int,
        step_losses: np.ndarray,
        stops: list[int],
        evaluations: list[EvaluationPoint],
    ) -> float | None:
        """The epoch's steps on the small-batch fast path (``AugmentedSGD`` over
        ``AugmentedEpochs``): the same steps as ``_steps`` (to rounding), with the losses
        computed and checked per chunk of steps. A diverging chunk runs on to its end; the first
        bad step is still named exactly, and the state rolls back to the epoch boundary as on
        the general path. A chunk is cut at each step in ``stops`` (whole batches, so the same
        steps) to evaluate there."""
        if self._augmented_epochs is None:
            assert isinstance(self._source, InMemoryEpochs)
            self._augmented_epochs = AugmentedEpochs(self._source)
        rng = self._shuffle_rng if self.config.shuffle else None
        reference = self._reference
        limit = _FLOAT32_MAX if reference is None else _limit(reference)
        steps = step_losses.shape[0]
        loss_sum = 0.0
        done = 0
        pending = iter(stops)
        next_stop = next(pending, steps + 1)
        kernel.load(self._theta)
        for chunk in self._augmented_epochs.chunks(B, rng):
            rows = chunk[: (steps - done) * B]  # drop_last drops the partial batch
            while rows.shape[0]:
                # Up to the next stop, if it falls in this chunk (stops < steps: whole batches).
                cut = rows.shape[0] if next_stop > done + len(rows) // B else (next_stop - done) * B
                piece, rows = rows[:cut], rows[cut:]
                if not kernel.run(piece, B, lr, self._should_stop):
                    return None
                losses = kernel.step_losses(piece, B)
                if reference is None:  # the first step's loss is the reference
                    first = float(losses[0])
                    if not first < _FLOAT32_MAX:
                        why = _divergence_reason(first, None, first_epoch=True)
                        raise self._diverged(epoch, 1, first, lr, why)
                    reference = first
                    limit = _limit(first)
                bad = np.flatnonzero(~(losses < limit))  # NaN is never < limit
                if bad.shape[0]:
                    loss = float(losses[bad[0]])
                    why = _divergence_reason(loss, reference, first_epoch=epoch == 1)
                    raise self._diverged(epoch, done + int(bad[0]) + 1, loss, lr, why)
                step_losses[done : done + losses.shape[0]] = losses
                loss_sum += float(losses.sum())
                done += losses.shape[0]
                if done == next_stop:
                    kernel.store(self._theta)
                    self._evaluate_at(evaluations, epoch, done, B, lr)
                    next_stop = next(pending, steps + 1)
            if done == steps:
                break
        kernel.store(self._theta)
        self._optimizer.count_steps(steps)
        return loss_sum

    # -- per-epoch measurements ------------------------------------------------------------------

    def _make_evaluation_set(self, rng: np.random.Generator, budget: int) -> EvalSet:
        """The rows evaluations use: at most ``evaluation.max_rows`` of the train or validation
        rows, a seeded subsample (sorted, so read in file order) drawn once from ``rng``."""
        evaluation = self.config.evaluation
        assert evaluation is not None
        if evaluation.on == "validation":
            val = self._val
            assert val is not None  # check_config_for_dataset demands one
            if val.n_rows <= evaluation.max_rows:
                return val  # the whole validation set, already there
            reader, rows = val.reader, val.rows
        else:
            reader, rows = self._reader, self.train_rows
        n = rows.shape[0]
        if n <= evaluation.max_rows:
            return EvalSet(reader, rows, max_bytes=budget)
        picked = np.sort(rng.choice(n, size=evaluation.max_rows, replace=False))
        return EvalSet(reader, rows[picked], max_bytes=budget)

    def _evaluate_at(
        self, evaluations: list[EvaluationPoint], epoch: int, step: int, B: int, lr: float
    ) -> None:
        """Append the evaluation after ``step`` steps of this epoch (at the current θ):
        mean loss over the evaluation rows; a non-finite one is a divergence."""
        assert self._evaluation_set is not None
        # Speed, measured (8192 × 64 float32 rows, two BLAS threads, between small-batch
        # steps): Model.loss's matmul took 6 ms, one np.dot over all rows 3 ms (waking BLAS
        # threads), loss_and_grad's np.dot calls over pieces of EVALUATION_ROWS 0.1 ms. The
        # gradient it also writes into the step's scratch array is dropped.
        loss_and_grad, theta, grad = self._model.loss_and_grad, self._theta, self._grad
        loss_sum = 0.0
        n = 0
        # An overflow is reported as TrainingDiverged (below), not as NumPy's RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore"):
            for X_chunk, y_chunk in self._evaluation_set.chunks():
                for a in range(0, y_chunk.shape[0], EVALUATION_ROWS):
                    y_piece = y_chunk[a : a + EVALUATION_ROWS]
                    m = y_piece.shape[0]
                    loss = loss_and_grad(theta, X_chunk[a : a + EVALUATION_ROWS], y_piece, grad)
                    loss_sum += loss * m
                    n += m
        loss = loss_sum / n
        total = self._total_steps + step
        if not math.isfinite(loss):
            where = "the initial parameters" if total == 0 else f"global step {total}"
            raise self._diverged(epoch, step, loss, lr, f"the evaluation loss at {where} is {loss}")
        samples = self._samples_seen + min(step * B, self.n_train)
        evaluations.append(EvaluationPoint(step=total, samples=samples, loss=float(loss)))

    def _total_sum_of_squares(self) -> float:
        """Σ (y − ȳ)² over the validation targets (R²'s denominator; constant over the run)."""
        if self._val is None:
            return 0.0
        total = 0.0
        count = 0
        for _, y_chunk in self._val.chunks():
            total += float(np.sum(y_chunk, dtype=np.float64))
            count += y_chunk.shape[0]
        mean = total / count
        sst = 0.0
        for _, y_chunk in self._val.chunks():
            centred = y_chunk.astype(np.float64) - mean
            sst += float(centred @ centred)
        return sst

    def _evaluate(self) -> tuple[float | None, float | None, float | None, float | None]:
        """(val_loss, val_rmse, val_r2, val_accuracy) over the validation set, or Nones."""
        if self._val is None:
            return None, None, None, None
        model, theta = self._model, self._theta
        loss_sum = 0.0
        sse = 0.0
        correct = 0
        n = 0
        for X_chunk, y_chunk in self._val.chunks():
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
        r2 = 1.0 - sse / self._val_sst if self._val_sst > 0.0 else None
        return val_loss, math.sqrt(sse / n), r2, None

    def _noise_record(self) -> NoiseRecord | None:
        """Noise scale at the current θ: exact over every training row when they fit the budget
        (``EXACT_NOISE_MAX_ROWS``, ``EXACT_NOISE_MAX_ROW_PARAMS``), else on a seeded sample."""
        with np.errstate(over="ignore", invalid="ignore"):
            if self._exact_noise:
                estimate, loss_level = self._exact_noise_estimate()
            else:
                estimate, loss_level = self._sampled_noise_estimate()
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

    def _exact_noise_estimate(self) -> tuple[NoiseEstimate | None, float]:
        """(tr(Σ) and |G|² over all N training rows, the mean loss over them): per block of
        ``EVALUATION_ROWS`` rows, its mean gradient (``loss_and_grad``) and its rows' |g_i|²
        (``per_example_sq_norms``) into an ``ExactNoiseEstimator``. The rows are gathered chunk
        by chunk (no second copy of the training set); no randomness is drawn."""
        if self._noise_rows is None:
            self._noise_rows = EvalSet(self._reader, self.train_rows, max_bytes=0)
        model, theta, grad = self._model, self._theta, self._grad
        estimator = ExactNoiseEstimator()
        loss_sum = 0.0
        for X_chunk, y_chunk in self._noise_rows.chunks():
            for a in range(0, y_chunk.shape[0], EVALUATION_ROWS):
                X_block, y_block = (
                    X_chunk[a : a + EVALUATION_ROWS],
                    y_chunk[a : a + EVALUATION_ROWS],
                )
                loss_sum += model.loss_and_grad(theta, X_block, y_block, grad) * y_block.shape[0]
                sq_norms = model.per_example_sq_norms(theta, X_block, y_block)
                estimator.add(sq_norms=sq_norms, mean_grad=grad)
        return estimator.estimate(), loss_sum / self.n_train

    def _sampled_noise_estimate(self) -> tuple[NoiseEstimate | None, float]:
        """(the estimate on a seeded sample of training rows, the mean loss on it).

        Linear/logistic/softmax: exact per-example gradients, through their squared norms and
        the mean gradient (``noise_scale_from_sq_norms``). MLP: the sample of S rows is cut
        into m = min(16, S) small batches of b = S // m rows; each gives |G_b|², and
        their mean gradient is the gradient on all m·b rows, the big batch (two-batch estimator).
        """
        S = min(self.config.noise_scale_samples, self.n_train)
        picked = np.sort(self._noise_rng.choice(self.n_train, size=S, replace=False))
        rows = self.train_rows[picked]
        if self._noise_buffers is None or self._noise_buffers[0].shape[0] != S:
            self._noise_buffers = self._reader.empty(S)
        X_s, y_s = self._noise_buffers
        self._reader.read(rows, X_s, y_s)
        theta = self._theta
        loss_level = self._model.loss(theta, X_s, y_s)
        if self.config.model != "mlp":
            # O(S + P) memory: the rows' |g_i|² and their mean gradient, not the (S, P) matrix
            mean_grad = np.empty_like(theta)
            self._model.loss_and_grad(theta, X_s, y_s, mean_grad)
            sq_norms = self._model.per_example_sq_norms(theta, X_s, y_s)
            return noise_scale_from_sq_norms(sq_norms, mean_grad), loss_level
        m = min(NOISE_SMALL_BATCHES, S)
        b = S // m
        small = np.empty_like(theta)
        big = np.zeros(theta.shape, dtype=np.float64)
        small_sq = 0.0
        for j in range(m):
            self._model.loss_and_grad(
                theta, X_s[j * b : (j + 1) * b], y_s[j * b : (j + 1) * b], small
            )
            small64 = small.astype(np.float64)
            small_sq += float(small64 @ small64)
            big += small64
        big /= m
        estimator = TwoBatchNoiseEstimator()
        estimator.add(
            small_sq_norm=small_sq / m, b_small=b, big_sq_norm=float(big @ big), b_big=m * b
        )
        return estimator.estimate(), loss_level

    def _early_stopping(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        """Keras rule: improved when value < best − min_delta; stop after ``patience`` misses."""
        es = self.config.early_stopping
        if es is None:
            return
        value = val_loss if es.monitor == "val_loss" else train_loss
        assert value is not None  # check_config_for_dataset demands a validation set
        if self._best_value is None or value < self._best_value - es.min_delta:
            self._best_value = value
            self._best_epoch = epoch
            self._wait = 0
            if es.restore_best_weights:
                if self._best_theta is None:
                    self._best_theta = self._theta.copy()
                else:
                    np.copyto(self._best_theta, self._theta)
            return
        self._wait += 1
        if self._wait >= es.patience:
            self._finished = "early_stopping"
            if es.restore_best_weights and self._best_theta is not None:
                np.copyto(self._theta, self._best_theta)


def train(X: np.ndarray, y: np.ndarray, config: TrainConfig, **kwargs: Any) -> Training:
    """``Training(X, y, config, **kwargs)``: iterate the result for one record per epoch."""
    return Training(X, y, config, **kwargs)
