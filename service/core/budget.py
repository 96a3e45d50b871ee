"""The memory one job needs in a worker, from its config and the dataset's shape alone.

``estimate_job_bytes(config, n_rows=, n_features=, n_outputs=)`` counts the NumPy arrays (and
the Python objects of the stored model) that ``Training`` and the worker's loop around it
allocate, so a job larger than a worker's memory can be refused before it is queued. With
s = the dtype's bytes, P parameters, d features, K = ``n_outputs``, B a batch size:

- parameters: θ, the gradient and the optimizer's work array (3·P·s), its moments
  (momentum/nesterov 1, adam 2: k·P·s), the best θ of early stopping with restore (e·P·s);
  a checkpoint holds c = (1 + k + e)·P·s, and between epochs the loop keeps two (the core's
  snapshot and the worker's serialized bytes of the last epoch).
- batch: one step's work arrays per batch size, cached by the model for up to 8 sizes —
  GLM: z (B·K) + ones (B) + the head's scratch; MLP: the output (B·K), ones (B) and, per
  hidden layer of width h, its activations, their gradient and act′ (3·B·h). The sizes are
  every size of the batch-size schedule (grow: B₀·fᵏ up to its cap; adaptive: ×max_growth
  steps up to its cap, its largest possible), their short last batches, the evaluation's
  pieces and the noise scale's sample.
- data: the targets (n_rows·s) and row indices (n_rows·8); the training rows copied once in
  the config's dtype plus the shuffle buffer (2·n_train·(d·s + s_y), s_y = 8 for class
  indices), or ``[x | 1 | y]`` on the small-batch fast path, or the chunked path's window
  of ``max_in_memory_bytes``; the validation, evaluation and noise-scale rows.
- at an epoch's end, one at a time (the largest counts): the validation set's forward pass
  (≈ 2·(h_{l−1} + h_l)·s a row at the widest layer), the noise scale (exact: blocks of
  ``EVALUATION_ROWS`` rows through ``per_example_sq_norms`` and a float64 gradient sum;
  sampled MLP: a gradient, its float64 copy and sum, s + 16 bytes a parameter), the next
  checkpoint (2c: the snapshot and its ``.npz`` bytes), or the finished model as the worker
  stores it: a copy of θ, its ``.npz`` bytes and its JSON (``MODEL_JSON_BYTES_PER_PARAM``,
  ≈ 80 bytes a parameter: for a large model, the largest term of all).

Not counted: the dataset file, which the worker memory-maps (page cache the kernel can
drop), the interpreter and BLAS's own buffers. Against ``tracemalloc``'s peak of that loop
the estimate is within 0.8×–2× (tests/security/test_job_budget.py).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from service.core.checkpoint import Checkpoint
from service.core.config import TrainConfig, effective_task, split_sizes
from service.core.data import AUGMENTED_CHUNK_BYTES, CHUNK_BYTES, chunk_rows
from service.core.fused_sgd import AUGMENTED_MAX_BATCH
from service.core.measurements import (
    EVALUATION_ROWS,
    EXACT_NOISE_MAX_ROW_PARAMS,
    EXACT_NOISE_MAX_ROWS,
    NOISE_SMALL_BATCHES,
)
from service.core.tasks import Task

__all__ = [
    "CHECKPOINT_HEADER_MARGIN",
    "MODEL_JSON_BYTES_PER_PARAM",
    "JobBytes",
    "JobBytesPart",
    "estimate_checkpoint_bytes",
    "estimate_job_bytes",
    "model_outputs",
]

#: The stored model's JSON per parameter: ``FittedModel.to_dict``'s Python float (24 bytes)
#: in a list (8), the finite-checked copy of the lists (8), and the JSON text (≈ 22 bytes a
#: number) with the writer's growing buffer while it is built — 77 measured, on CPython.
MODEL_JSON_BYTES_PER_PARAM = 80
#: The JSON encoder keeps each number's text as its own string until it has this many, then
#: joins them (CPython's accumulator): ≈ 60 bytes a number on top, for the first of them.
JSON_ENCODER_NUMBERS = 100_000
JSON_ENCODER_BYTES_PER_NUMBER = 60
#: The model's work arrays are cached for this many batch sizes (``models``).
_CACHED_BATCH_SIZES = 8
_INDEX_BYTES = 8  # np.intp


@dataclass(frozen=True)
class JobBytesPart:
    """Bytes driven by one config field (``field`` as the core names it: "hidden_layers",
    "batch_size", "validation_split", "noise_scale_samples", or "dataset")."""

    field: str
    bytes: int
    what: str


@dataclass(frozen=True)
class JobBytes:
    """A job's estimated peak, in bytes, split by what drives it (largest part first)."""

    parts: tuple[JobBytesPart, ...]
    n_params: int
    largest_batch: int

    @property
    def total(self) -> int:
        return sum(part.bytes for part in self.parts)


def model_outputs(config: TrainConfig, task: Task, n_classes: int | None) -> int:
    """K, the model's outputs on a dataset of ``task``: classes for a softmax head (softmax on
    two classes: 2), else 1."""
    if effective_task(config, task) == "multiclass":
        return n_classes if n_classes is not None and n_classes > 2 else 2
    return 1


def _n_params(config: TrainConfig, n_features: int, n_outputs: int) -> tuple[int, int]:
    """(P, the most weights one layer has)."""
    if config.model != "mlp":
        return (n_features + 1) * n_outputs, 0
    widths = (n_features, *config.hidden_layers, n_outputs)
    pairs = list(itertools.pairwise(widths))
    return sum(i * o + o for i, o in pairs), max(i * o for i, o in pairs)


def _batch_sizes(config: TrainConfig, n_train: int) -> list[int]:
    """Every batch size the schedule can run at within ``epochs``, ascending."""
    schedule = config.batch_size_schedule
    base = config.batch_size if config.batch_size is not None else n_train
    first = schedule.batch_size_at(0, base, n_train)
    cap = n_train if schedule.max_batch_size is None else min(n_train, schedule.max_batch_size)
    # both kinds change the size at most once every ``every_epochs`` epochs
    changes = (config.epochs - 1) // schedule.every_epochs
    if schedule.kind == "constant":
        changes = 0
    if schedule.kind == "warmup":  # the base and every point's batch, as the run clamps them
        every = {
            first,
            *(schedule.warmup_batch_at(at, base, n_train)[0] for at, _ in schedule.points),
        }
        return sorted(every)
    sizes = [first]
    growth = float(schedule.factor) if schedule.kind == "grow" else schedule.max_growth
    while changes and sizes[-1] < cap:
        # grow: B₀·fᵏ up to the cap; adaptive: at most ⌊max_growth·B⌋ per change
        sizes.append(min(cap, max(sizes[-1] + 1, math.floor(sizes[-1] * growth))))
        changes -= 1
    return sizes


def _head_bytes(config: TrainConfig, n_outputs: int, s: int) -> int:
    """The head's scratch per row (``losses.Head.make_work``, and softmax's one-hot temp)."""
    if n_outputs > 1:
        return 3 * s + 2 * _INDEX_BYTES
    if config.loss == "huber" or (config.model in ("logistic", "mlp") and config.loss is None):
        return 2 * s  # huber's |r| and q, or logistic's softplus and ones (an MLP's, say)
    return 0


def _step_bytes_per_row(config: TrainConfig, n_outputs: int, s: int) -> int:
    """One step's work arrays per batch row (``_work_arrays`` and the head's)."""
    hidden = sum(config.hidden_layers)
    return (n_outputs + 1 + 3 * hidden) * s + _head_bytes(config, n_outputs, s)


def _forward_bytes_per_row(config: TrainConfig, n_features: int, n_outputs: int, s: int) -> int:
    """A forward pass that allocates (``Model.loss``, ``predict_output``), per row: at
    ``Z = A @ W + b`` the last layer's Z and A are alive beside A @ W and the new Z, so the
    widest point is 2·(h_{l−1} + h_l) (the first layer reads X in place: 2·h₁); the softmax
    head adds 4·K, the R² its float64 residual."""
    widths = (*config.hidden_layers, n_outputs)
    widest = 2 * widths[0] + 4 * n_outputs
    for previous, width in itertools.pairwise(widths):
        widest = max(widest, 2 * (previous + width) + 4 * n_outputs)
    return widest * s + 16


@dataclass(frozen=True)
class _Shape:
    """What every term needs: s, d, K, bytes a row, n_train, n_val, P."""

    s: int
    d: int
    K: int
    row: int
    n_train: int
    n_val: int
    P: int


@dataclass(frozen=True)
class _Noise:
    """The noise scale's share: row counts its model workspaces take, rows it keeps, and its
    epoch-end transients (∝ P, and ∝ rows)."""

    work_rows: tuple[int, ...] = ()
    kept_rows: int = 0
    params: int = 0
    rows: int = 0
    rows_what: str = ""


def _noise(config: TrainConfig, shape: _Shape, forward_row: int) -> _Noise:
    """Exact over the training rows (gathered in ``EvalSet`` chunks, blocks of
    ``EVALUATION_ROWS``) when ``Training`` takes that path, else on S sampled rows."""
    if not config.measures_noise_scale:
        return _Noise()
    s, d, K, n_train, P = shape.s, shape.d, shape.K, shape.n_train, shape.P
    mlp = config.model == "mlp"
    exact = n_train * P <= EXACT_NOISE_MAX_ROW_PARAMS if mlp else n_train <= EXACT_NOISE_MAX_ROWS
    widest = max((d, *config.hidden_layers, K))
    # per_example_sq_norms: the forward pass, and the float64 norms of inputs and deltas
    sq_norms_row = forward_row + K * (s + 8) + 16
    if mlp:
        sq_norms_row += sum(config.hidden_layers) * s + widest * (16 + 2 * s)
    else:
        sq_norms_row += d * 8
    if exact:
        block = min(EVALUATION_ROWS, n_train)
        return _Noise(
            work_rows=(block, n_train % block),
            kept_rows=min(n_train, 8 * chunk_rows(shape.row)),
            params=3 * 8 * P,  # the estimator's float64 sum of gradients, and its temporaries
            rows=block * sq_norms_row,
            rows_what=f"the exact noise scale's blocks of {block:,} rows",
        )
    S = min(config.noise_scale_samples, n_train)
    sample = f"the noise scale's forward pass over {S:,} sampled rows"
    choice = n_train * _INDEX_BYTES  # Generator.choice without replacement permutes them all
    if mlp:
        # two-batch estimator: a gradient, its float64 copy and the float64 sum
        return _Noise(
            (S // min(NOISE_SMALL_BATCHES, S),), S, P * (s + 16), S * forward_row + choice, sample
        )
    return _Noise((S,), S, P * s, S * sq_norms_row + choice, sample)


def _training_rows(config: TrainConfig, shape: _Shape, sizes: list[int]) -> int:
    """The training rows as the epochs serve them (``data``): in memory, the copy and the
    shuffle buffer, or ``[x | 1 | y]`` on the small-batch fast path; else the chunked window."""
    s, d, row, n_train = shape.s, shape.d, shape.row, shape.n_train
    budget = config.max_in_memory_bytes
    if n_train * row > budget:
        window = max(16, min(n_train, budget // row) // 16 * 16)
        return (window + sizes[-1]) * row + 2 * window * _INDEX_BYTES
    in_memory = n_train * (row * (2 if config.shuffle else 1) + _INDEX_BYTES)
    plain_sgd = (
        config.optimizer == "sgd" and config.weight_decay == 0.0 and config.clip_norm is None
    )
    fast_model = config.model == "logistic" or (
        config.model == "linear" and config.loss in (None, "mse")
    )
    if plain_sgd and fast_model and sizes[-1] <= AUGMENTED_MAX_BATCH:
        # (a schedule that leaves the fast path drops its rows before the copy is made)
        width = (d + 2) * s
        chunk = max(AUGMENTED_CHUNK_BYTES // width // sizes[0], 1) * sizes[0]
        return n_train * (width + _INDEX_BYTES) + chunk * (2 * width + 2 * s)
    return in_memory


def estimate_job_bytes(
    config: TrainConfig, *, n_rows: int, n_features: int, n_outputs: int
) -> JobBytes:
    """The peak bytes a worker allocates for ``config`` on ``n_rows`` × ``n_features`` rows
    with ``n_outputs`` model outputs (``model_outputs``), by part (see the module docstring).

    Pure arithmetic on the config and the shape: a few dozen operations, whatever the sizes.
    The config must have passed ``check_config_for_dataset`` on that shape.
    """
    s = 4 if config.dtype == "float32" else 8
    d, K = n_features, n_outputs
    row = d * s + (_INDEX_BYTES if K > 1 else s)  # class indices are int64
    n_train, n_val = split_sizes(n_rows, config.validation_split)
    P, layer_max = _n_params(config, d, K)
    shape = _Shape(s=s, d=d, K=K, row=row, n_train=n_train, n_val=n_val, P=P)
    budget = config.max_in_memory_bytes
    sizes = _batch_sizes(config, n_train)
    forward_row = _forward_bytes_per_row(config, d, K, s)
    noise = _noise(config, shape, forward_row)

    # parameters: θ, gradient, optimizer work, moments, best θ; two checkpoints kept
    moments = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2}[config.optimizer]
    es = config.early_stopping
    best = 1 if es is not None and es.restore_best_weights else 0
    checkpoint = (1 + moments + best) * P * s
    held = (3 + moments + best) * P * s + 2 * checkpoint
    # the init's float64 draw of the largest layer (scaled in place: NumPy elides the
    # temporary) comes before the gradient and the optimizer
    held = max(held, P * s + 8 * layer_max)

    # batch: the work arrays of every row count the model caches
    rows_of = set(noise.work_rows)
    for size in sizes:
        rows_of.add(size)
        if not config.drop_last:
            rows_of.add(n_train % size)
    evaluation = config.evaluation
    n_eval = 0
    if evaluation is not None:
        n_eval = min(n_train if evaluation.on == "train" else n_val, evaluation.max_rows)
        rows_of.update((min(EVALUATION_ROWS, n_eval), n_eval % EVALUATION_ROWS))
    step_row = _step_bytes_per_row(config, K, s)
    batch = sum(sorted(rows_of, reverse=True)[:_CACHED_BATCH_SIZES]) * step_row

    # data: targets, indices, the training rows, validation, evaluation, noise rows
    data = n_rows * (s + _INDEX_BYTES) + _training_rows(config, shape, sizes)
    data += 2 * CHUNK_BYTES  # reading rows: a chunk in the source's dtype and one cast
    val_rows = 0
    if n_val:
        fits = n_val * row <= max(0, budget - n_train * row)
        val_rows = n_val if fits else min(n_val, 8 * chunk_rows(row))
        data += val_rows * row
    if evaluation is not None and not (evaluation.on == "validation" and n_val <= n_eval):
        kept = n_eval if n_eval * row <= budget else min(n_eval, 8 * chunk_rows(row))
        data += kept * row + n_eval * _INDEX_BYTES
    data += noise.kept_rows * row
    data += 2 * 4 * -(-n_train // sizes[0])  # this epoch's and the last record's step losses

    # at an epoch's end, one at a time: (∝ P, ∝ rows, the field of the rows)
    finish = (
        2 * P * s
        + MODEL_JSON_BYTES_PER_PARAM * P
        + JSON_ENCODER_BYTES_PER_NUMBER * min(P, JSON_ENCODER_NUMBERS)
    )
    transients = [
        (max(2 * checkpoint, finish), 0, "dataset", ""),
        (noise.params, noise.rows, "noise_scale_samples", noise.rows_what),
        (
            0,
            val_rows * forward_row,
            "validation_split",
            f"the forward pass over {val_rows:,} validation rows at a time",
        ),
    ]
    params_extra, rows_extra, rows_field, rows_what = max(transients, key=lambda t: t[0] + t[1])

    copies = (held + params_extra) / (P * s)
    parts = [
        JobBytesPart(
            "hidden_layers" if config.model == "mlp" else "model",
            held + params_extra,
            f"{P:,} parameters × {s} bytes × {copies:.1f} (θ, gradient, {config.optimizer} "
            "state, checkpoints, and the finished model as stored)",
        ),
        JobBytesPart(
            "batch_size",
            batch,
            f"the work arrays of a step at batch size {sizes[-1]:,}"
            + (" (the schedule's largest)" if len(sizes) > 1 else "")
            + f", {step_row:,} bytes a row",
        ),
        JobBytesPart(
            "dataset",
            data,
            f"the {n_train:,} training rows of {d:,} features in {config.dtype} held in memory "
            "(with the validation, evaluation and noise-scale rows)",
        ),
    ]
    if rows_extra:
        parts.append(JobBytesPart(rows_field, rows_extra, rows_what))
    parts.sort(key=lambda part: part.bytes, reverse=True)
    return JobBytes(parts=tuple(parts), n_params=P, largest_batch=sizes[-1])


#: Header text a real checkpoint may have beyond the estimate's (floats, reasons).
CHECKPOINT_HEADER_MARGIN = 1024


def estimate_checkpoint_bytes(
    config: TrainConfig, *, n_features: int, task: Task, n_classes: int | None
) -> int:
    """The bytes of one ``Checkpoint.to_bytes()`` of ``config`` on a dataset of this shape:
    a checkpoint of zeros of the real arrays' shapes and dtypes, measured, plus
    ``CHECKPOINT_HEADER_MARGIN`` for the header's values (``np.savez`` does not compress, so
    the arrays' share is exact)."""
    dtype = np.dtype(config.dtype)
    n_params, _ = _n_params(config, n_features, model_outputs(config, task, n_classes))
    buffers = {"sgd": (), "momentum": ("momentum_buffer",), "nesterov": ("momentum_buffer",)}
    names = buffers.get(config.optimizer, ("m", "v"))
    optimizer_state = {name: np.zeros(n_params, dtype) for name in names}
    optimizer_state["step"] = np.array(0, dtype=np.int64)
    es = config.early_stopping
    labels = None if effective_task(config, task) == "regression" else np.zeros(n_classes or 2)
    rng = np.random.default_rng(0).bit_generator.state
    checkpoint = Checkpoint(
        config=config,
        epoch=0,
        theta=np.zeros(n_params, dtype),
        optimizer_state=optimizer_state,
        rng_states={"shuffle": rng, "noise": rng},
        task=task,
        n_features=n_features,
        classes=labels,
        mean=np.zeros(n_features) if config.standardize else None,
        std=np.zeros(n_features) if config.standardize else None,
        best_theta=np.zeros(n_params, dtype) if es and es.restore_best_weights else None,
    )
    return len(checkpoint.to_bytes()) + CHECKPOINT_HEADER_MARGIN
