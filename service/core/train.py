"""The training loop: minibatch steps over epochs, one ``EpochRecord`` per epoch.

    training = Training(X, y, config, should_stop=cancelled)
    for record in training:            # raises TrainingDiverged
        save(record, training.checkpoint().to_bytes())
    fitted = training.model

Randomness: one ``np.random.default_rng(seed)`` spawns five independent children — init,
validation split, shuffles, noise-scale samples, the evaluation subsample — so switching one
feature on (noise_scale, evaluation) never changes another's stream. Nothing touches NumPy's
global RNG. With ``split_seed`` (a warm start's), init, split and evaluation come from it.

Per epoch e (0-based): B = batch_size_schedule.batch_size_at(e, batch_size or n_train, n_train)
(adaptive: the size ``BatchSizeSchedule.adapt`` chose at the last epoch end from the measured
noise scale, kept in the checkpoint), lr = lr_schedule.lr_at(e, scale_lr(learning_rate, B,
reference_batch_size, lr_scaling), epochs), both fixed for the epoch — but for the warmup,
whose batch changes at the first step boundary past each point (``warmup``). The epoch's rows are
gathered once (see ``data``), then each step takes a contiguous slice view:
``J, g = loss_and_grad(θ, X[a:a+B], y[a:a+B])``; ``θ ← optimizer(θ, g)``.
``train_loss`` is the mean of the epoch's step losses (the Keras convention: losses at the θ
each step started from, so it lags the end-of-epoch parameters by half an epoch).

Each step is the optimizer's (``Optimizer.minibatch_step``): plain SGD (no weight decay, no
clipping) takes it by shorter routes, equal to the general step up to rounding and as
deterministic (``optim.PlainSGD``); for linear-mse and logistic models with B ≤
``AUGMENTED_MAX_BATCH`` and the rows in memory, its fused kernel steps over cache-sized chunks
of [x | 1 | y] rows (``steps.FusedSteps``), its losses checked per chunk.

Evaluations (``config.evaluation``): the loss on a fixed subsample of the train or validation
rows at global step 0 (the initial θ), at every epoch end and at the log-spaced steps
``schedules.log_spaced_steps`` — a pure function of the global step. The epoch's steps run up
to each scheduled step in turn (``steps``' ``run_to``), so without evaluations nothing is added
to a step, and with them the steps are the same (bit for bit). A non-finite evaluation loss is
a divergence.

Stopping: ``should_stop()`` is called between steps; when it returns True the partial epoch is
dropped (state rolls back to the last epoch boundary) and iteration ends with
``stop_reason == "stopped"``. ``checkpoint()`` always describes the last completed epoch, so a
worker can resume it in a fresh process and reproduce every later epoch bit for bit.

Divergence: a step loss that is not finite, or above 10⁶ × the reference (the first step's loss
during epoch 1, then the first epoch's train loss; ``steps.DivergenceGuard``), raises
``TrainingDiverged`` with the epoch (1-based) and the step within it (1-based); the state rolls
back to the last boundary (``state.RunState``). A record never holds NaN or infinity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from service.core.build import build_model
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
from service.core.fused_sgd import AUGMENTED_MAX_BATCH
from service.core.measurements import (
    NoiseMeter,
    ValidationMetrics,
    evaluation_loss,
    make_evaluation_set,
)
from service.core.optim import make_optimizer
from service.core.records import EpochRecord, EvaluationPoint, NoiseRecord, StopReason
from service.core.schedules import log_spaced_steps, scale_lr
from service.core.state import RunState
from service.core.steps import DivergenceGuard, FusedSteps, GradientSteps, StepDiverged
from service.core.tasks import Task, infer_task
from service.core.warm_start import check_warm_start, warm_start
from service.core.warmup import EpochPlan, PhasedSteps, warmup_plan

__all__ = ["EpochRecord", "EvaluationPoint", "NoiseRecord", "StopReason", "Training", "train"]


class Training:
    """A run of ``config`` on ``X`` (n, d) and ``y`` (n,); iterate it for one record per epoch.

    ``X_val``/``y_val``: an explicit validation set (instead of ``validation_split``).
    ``resume_from``: continue a checkpoint of the same config and data. ``init_from``: start
    from another run's checkpoint (a warm start, ``warm_start``; its optimizer state left out
    with ``reset_optimizer``). ``should_stop``: called
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
        init_from: Checkpoint | None = None,
        reset_optimizer: bool = False,
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
        if resume_from is not None and init_from is not None:
            raise CoreConfigError("init_from", "resume a run or warm-start one, not both")
        init_rng, split_rng, shuffle_rng, noise_rng, evaluation_rng = np.random.default_rng(
            config.seed
        ).spawn(5)
        if config.split_seed is not None:  # the rows and the start stay the source run's
            init_rng, split_rng, _, _, evaluation_rng = np.random.default_rng(
                config.split_seed
            ).spawn(5)
        _, n_val = split_sizes(n_rows, config.validation_split)
        train_rows, val_rows = split_rows(n_rows, n_val, split_rng)
        #: Row indices (sorted) of X used for training and for validation (empty with X_val).
        self.train_rows = train_rows
        self.val_rows = val_rows
        self.n_train = train_rows.shape[0]

        standardization: Standardization | None = None
        start = resume_from if resume_from is not None else init_from
        if start is not None and start.mean is not None and start.std is not None:
            standardization = Standardization(mean=start.mean, std=start.std)
        elif config.standardize:
            standardization = fit_standardization(X, train_rows, dtype)
        self.standardization = standardization

        self._reader = RowReader(X, y_encoded, dtype=dtype, standardization=standardization)
        budget = config.max_in_memory_bytes
        self._source = make_epoch_source(self._reader, train_rows, max_bytes=budget)
        val_budget = max(0, budget - self.n_train * self._reader.row_bytes)
        val: EvalSet | None = None
        if explicit_val:
            assert X_val is not None
            assert y_val is not None
            check_finite_features(X_val, name="X_val")
            y_val_encoded = encode_with_classes(y_val, self.task, dtype, classes)
            val_reader = RowReader(
                X_val, y_val_encoded, dtype=dtype, standardization=standardization
            )
            all_val = np.arange(X_val.shape[0], dtype=np.intp)
            val = EvalSet(val_reader, all_val, max_bytes=val_budget)
        elif n_val:
            val = EvalSet(self._reader, val_rows, max_bytes=val_budget)
        self._validation = ValidationMetrics(val, self.task)
        self._evaluation_set: EvalSet | None = None
        if config.evaluation is not None:
            self._evaluation_set = make_evaluation_set(
                config,
                val=val,
                reader=self._reader,
                train_rows=train_rows,
                rng=evaluation_rng,
                budget=budget,
            )

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
        self._minibatch_step = self._optimizer.minibatch_step(self._model)
        self._noise = NoiseMeter(config, self._model, self._reader, train_rows, noise_rng)
        # The optimizer's fused kernel, when it has one for this model, needs the rows in memory.
        self._fused = (
            self._optimizer.fused_kernel(self._model)
            if isinstance(self._source, InMemoryEpochs)
            else None
        )
        self._fused_epochs: AugmentedEpochs | None = None  # built at its first epoch
        self._shuffle_rng = shuffle_rng

        self._state = state = RunState(
            config=config,
            task=self.task,
            n_features=n_features,
            classes=classes,
            standardization=standardization,
            theta=self._theta,
            optimizer=self._optimizer,
            shuffle_rng=shuffle_rng,
            noise_rng=noise_rng,
        )
        schedule = config.batch_size_schedule
        self._adaptive = schedule.kind == "adaptive"
        if self._adaptive:  # the adaptive batch size of the next epoch, and why
            base = config.batch_size if config.batch_size is not None else self.n_train
            state.batch_size = schedule.batch_size_at(0, base, self.n_train)
            asked = "the whole training set" if config.batch_size is None else f"batch_size {base}"
            reason = f"started at {state.batch_size} ({asked}"
            if state.batch_size != base:
                reason += ", within min_batch_size, max_batch_size, the rows"
            state.batch_size_reason = reason + ")"
        self._warmup = schedule.kind == "warmup"
        if resume_from is not None:
            state.check_resumable(resume_from)
            state.restore(resume_from)
            self._checkpoint = resume_from
        else:
            if init_from is not None:
                check_warm_start(state, init_from, reset_optimizer=reset_optimizer)
                warm_start(state, init_from, reset_optimizer=reset_optimizer)
            self._checkpoint = state.snapshot()

    def checkpoint(self) -> Checkpoint:
        """The state at the last completed epoch boundary (epoch 0 before any)."""
        return self._checkpoint

    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self._state.epoch

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
        state = self._state
        if state.finished is not None:
            self.stop_reason = "completed" if state.finished == "completed" else "early_stopping"
            return
        while state.epoch < self.config.epochs:
            if self._should_stop is not None and self._should_stop():
                self.stop_reason = "stopped"
                return
            record = self._run_epoch()
            if record is None:
                self.stop_reason = "stopped"
                return
            yield record
            if state.finished == "early_stopping":
                self.stop_reason = "early_stopping"
                return
        self.stop_reason = "completed"

    def _lr_and_batch_size(self, epoch0: int) -> tuple[float, int]:
        c = self.config
        if self._state.batch_size is not None:  # adaptive
            batch_size = self._state.batch_size
        else:
            base = c.batch_size if c.batch_size is not None else self.n_train
            batch_size = c.batch_size_schedule.batch_size_at(epoch0, base, self.n_train)
        scaled = scale_lr(c.learning_rate, batch_size, c.reference_batch_size, c.lr_scaling)
        return c.lr_schedule.lr_at(epoch0, scaled, c.epochs), batch_size

    def _diverged(
        self, epoch: int, step: int, loss: float, lr: float, why: str
    ) -> TrainingDiverged:
        self._state.restore(self._checkpoint)
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

    def _epoch_steps(
        self, epoch: int, lr: float, B: int, step_losses: np.ndarray, plan: EpochPlan | None
    ) -> GradientSteps | FusedSteps | PhasedSteps:
        """The epoch's steps: fused when the optimizer has a kernel and B is small; the
        warmup's phases one after another (never fused: the batch changes within an epoch)."""
        state = self._state
        guard = DivergenceGuard(state.reference, first_epoch=epoch == 1)
        rng = self._shuffle_rng if self.config.shuffle else None
        if plan is not None:
            return PhasedSteps(
                self._minibatch_step,
                self._source.segments(1, rng),
                plan,
                theta=self._theta,
                grad=self._grad,
                step_losses=step_losses,
                guard=guard,
                should_stop=self._should_stop,
            )
        if self._fused is not None and B <= AUGMENTED_MAX_BATCH:
            if self._fused_epochs is None:
                assert isinstance(self._source, InMemoryEpochs)
                self._fused_epochs = AugmentedEpochs(self._source)
            return FusedSteps(
                self._optimizer,
                self._fused,
                self._fused_epochs.chunks(B, rng),
                theta=self._theta,
                lr=lr,
                batch_size=B,
                step_losses=step_losses,
                guard=guard,
                should_stop=self._should_stop,
            )
        # Batch sizes never shrink: the fast path's rows are not needed again, and dropping
        # them first keeps the peak at InMemoryEpochs' copy and buffer.
        self._fused_epochs = None
        return GradientSteps(
            self._minibatch_step,
            self._source.segments(B, rng),
            theta=self._theta,
            grad=self._grad,
            lr=lr,
            batch_size=B,
            step_losses=step_losses,
            guard=guard,
            should_stop=self._should_stop,
        )

    def _run_epoch(self) -> EpochRecord | None:
        start_time = time.perf_counter()
        state = self._state
        epoch0 = state.epoch
        epoch = epoch0 + 1
        n_train = self.n_train
        plan = warmup_plan(self._state, epoch0, self.n_train) if self._warmup else None
        if plan is not None:
            first = plan.phases[0]
            lr, B, steps = first.lr, first.batch_size, plan.steps
        else:
            lr, B = self._lr_and_batch_size(epoch0)
            steps = n_train // B + (1 if n_train % B and not self.config.drop_last else 0)

        def rows_after(step: int) -> int:
            return min(step * B, n_train) if plan is None else plan.rows_after(step)

        step_losses = np.empty(steps, dtype=np.float32)
        evaluations: list[EvaluationPoint] = []
        stops: list[int] = []  # steps within the epoch after which to evaluate (< steps)
        evaluation = self.config.evaluation
        if evaluation is not None:
            g0 = state.total_steps
            if g0 == 0:
                self._evaluate_at(evaluations, epoch, 0, 0, lr)
            scheduled = log_spaced_steps(evaluation.per_decade, g0, g0 + steps - 1)
            stops = [step - g0 for step in scheduled]
        epoch_steps = self._epoch_steps(epoch, lr, B, step_losses, plan)
        # A diverging step overflows: that is reported as TrainingDiverged from its loss,
        # not as NumPy's RuntimeWarning on the way there.
        with np.errstate(over="ignore", invalid="ignore"):
            for stop in (*stops, steps):
                try:
                    ran = epoch_steps.run_to(stop)
                except StepDiverged as bad:
                    raise self._diverged(epoch, bad.step, bad.loss, lr, bad.why) from None
                if not ran:  # should_stop: the partial epoch is dropped
                    state.restore(self._checkpoint)
                    return None
                if evaluation is not None:  # at each stop, and at the epoch's end
                    self._evaluate_at(evaluations, epoch, stop, rows_after(stop), lr)

        train_loss = epoch_steps.loss_sum / steps
        samples = rows_after(steps)
        if epoch0 == 0:
            state.reference = train_loss
        val_loss, val_rmse, val_r2, val_accuracy = self._validation.measure(
            self._model, self._theta
        )
        if val_loss is not None and not math.isfinite(val_loss):
            raise self._diverged(epoch, steps, val_loss, lr, "the validation loss is not finite")
        noise = (
            self._noise.record(self._theta, self._grad)
            if self.config.measures_noise_scale
            else None
        )
        batch_size_reason = state.batch_size_reason
        changes = () if plan is None else tuple(p.change for p in plan.phases if p.change)
        if plan is not None:
            if plan.phases[0].change is not None:
                batch_size_reason = plan.phases[0].change.reason
            state.batch_size = plan.batch_size
            state.batch_size_reason = changes[-1].reason if changes else batch_size_reason
        if self._adaptive:
            self._adapt_batch_size(epoch, B, noise)

        state.epoch = epoch
        state.total_steps += steps
        state.samples_seen += samples
        state.update_early_stopping(epoch, train_loss, val_loss)
        if state.finished is None and epoch == self.config.epochs:
            state.finished = "completed"
        self._checkpoint = state.snapshot()
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
            total_steps=state.total_steps,
            samples_seen=state.samples_seen,
            wall_time_s=wall,
            samples_per_s=samples / wall if wall > 0 else 0.0,
            noise_scale=noise,
            step_losses=step_losses,
            evaluations=tuple(evaluations),
            batch_size_reason=batch_size_reason,
            batch_changes=changes,
        )

    def _adapt_batch_size(self, epoch: int, B: int, noise: NoiseRecord | None) -> None:
        """The next epoch's adaptive batch size, from the noise scale measured at this one's end."""
        measured = None if noise is None else noise.b_simple_corrected
        # |G|² not positive: B_simple is beyond what the sample resolves, ≳ its bound
        # tr(Σ)/|ḡ|² (≥ the sample's size, which stands in when there is no bound).
        lower_bound = noise is not None and measured is None and noise.grad_sq_norm <= 0.0
        if noise is not None and lower_bound:
            bound = noise.b_simple_lower_bound or float(noise.n_samples)
            measured = 1.0 / (1.0 / bound + 1.0 / self.n_train)
        change = self.config.batch_size_schedule.adapt(
            B, measured, self.n_train, epoch=epoch, lower_bound=lower_bound
        )
        self._state.batch_size, self._state.batch_size_reason = change.batch_size, change.reason

    def _evaluate_at(
        self, evaluations: list[EvaluationPoint], epoch: int, step: int, rows: int, lr: float
    ) -> None:
        """Append the evaluation after ``step`` steps of this epoch, which consumed ``rows``
        rows (at the current θ): mean loss over the evaluation rows; a non-finite one is a
        divergence."""
        assert self._evaluation_set is not None
        # The gradient it also writes into the step's scratch array is dropped.
        loss = evaluation_loss(self._model, self._theta, self._grad, self._evaluation_set)
        total = self._state.total_steps + step
        if not math.isfinite(loss):
            where = "the initial parameters" if total == 0 else f"global step {total}"
            raise self._diverged(epoch, step, loss, lr, f"the evaluation loss at {where} is {loss}")
        samples = self._state.samples_seen + rows
        evaluations.append(EvaluationPoint(step=total, samples=samples, loss=float(loss)))


def train(X: np.ndarray, y: np.ndarray, config: TrainConfig, **kwargs: Any) -> Training:
    """``Training(X, y, config, **kwargs)``: iterate the result for one record per epoch."""
    return Training(X, y, config, **kwargs)
