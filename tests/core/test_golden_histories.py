"""Histories recorded before the restructure of issue 13, replayed: the same config, data and
seed must give the same numbers — every field a worker stores of each epoch, the step losses and
the trained model — through every path of the loop (the fused SGD step and the reference one,
every optimizer, schedules, the adaptive batch size, evaluations, noise, early stopping, a
resumed checkpoint).

Two records, two strengths:

- ``golden_histories.json``, written on the commit before the move: every field of each
  epoch's record, floats to 1e-6 relative, on any machine (another CPU's kernels round
  differently; a change of algorithm still shows); the step losses and the model, stored as
  hashes, are compared by the byte test only. Rewrite it
  (``python -m tests.core.test_golden_histories --write``) only for a deliberate change of the
  numbers, and say why in the commit.
- ``golden_bytes.json``, one record per platform — what decides a float's last bits: NumPy's
  version, the SIMD kernels it dispatches to on this CPU, its BLAS and the core it picked, the C
  library (NumPy's fallbacks for sin and cos) — every byte, the hashes of the step losses and
  of the model included. ``--add-platform`` records this platform's, once its run matches the
  first record to 1e-6. A platform without a record skips the byte test and says how to add
  one. (The CPU's name alone is not such an identity:
  two "AMD EPYC" machines, one with AVX-512, differ in the last bits.)
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.core import Checkpoint, TrainConfig, Training

GOLDEN = Path(__file__).with_name("golden_histories.json")
GOLDEN_BYTES = Path(__file__).with_name("golden_bytes.json")
#: Fields that measure the machine, not the maths.
TIMING_FIELDS = ("wall_time_s", "samples_per_s")

CASES: dict[str, dict[str, Any]] = {
    "linear-sgd-float64": {"batch_size": 16, "epochs": 4, "dtype": "float64", "seed": 1},
    "linear-momentum-step-lr-validation-early-stop": {
        "optimizer": "momentum",
        "learning_rate": 0.05,
        "batch_size": 8,
        "epochs": 6,
        "validation_split": 0.2,
        "lr_schedule": {"kind": "step", "step_size": 2, "gamma": 0.5},
        "early_stopping": {"patience": 2},
    },
    "linear-huber-standardized-drop-last": {
        "loss": "huber",
        "standardize": True,
        "drop_last": True,
        "batch_size": 12,
        "epochs": 3,
    },
    "linear-grow-batch-sqrt-scaling-warmup": {
        "batch_size": 4,
        "epochs": 5,
        "lr_scaling": "sqrt",
        "reference_batch_size": 4,
        "batch_size_schedule": {"kind": "grow", "factor": 2, "every_epochs": 2},
        "lr_schedule": {"kind": "cosine", "warmup_epochs": 1},
    },
    "linear-adaptive-batch-noise": {
        "batch_size": 4,
        "epochs": 5,
        "noise_scale": True,
        "batch_size_schedule": {"kind": "adaptive", "max_growth": 4.0},
    },
    "logistic-nesterov-weight-decay-noise": {
        "model": "logistic",
        "optimizer": "nesterov",
        "weight_decay": 0.01,
        "batch_size": 16,
        "epochs": 4,
        "noise_scale": True,
        "lr_schedule": {"kind": "exponential", "gamma": 0.9},
    },
    "softmax-adam-evaluation": {
        "model": "softmax",
        "optimizer": "adam",
        "learning_rate": 0.01,
        "batch_size": 10,
        "epochs": 3,
        "evaluation": {"on": "train", "per_decade": 4},
    },
    "mlp-tanh-adam-float32-noise": {
        "model": "mlp",
        "hidden_layers": [16, 8],
        "activation": "tanh",
        "optimizer": "adam",
        "learning_rate": 0.005,
        "batch_size": 16,
        "epochs": 3,
        "noise_scale": True,
    },
    "mlp-relu-sgd-clip-float64": {
        "model": "mlp",
        "hidden_layers": [12],
        "learning_rate": 0.02,
        "clip_norm": 1.0,
        "batch_size": 8,
        "epochs": 3,
        "dtype": "float64",
        "seed": 7,
    },
}
#: Trained for RESUME_AFTER epochs, checkpointed (through its bytes), then resumed.
RESUMED = ("linear-momentum-step-lr-validation-early-stop", "mlp-tanh-adam-float32-noise")
RESUME_AFTER = 2


def dataset(model: str) -> tuple[np.ndarray, np.ndarray]:
    """120 rows of 3 features from closed forms (no random stream, so no NumPy version can
    change them), with a target fitting the model."""
    i = np.arange(120, dtype=np.float64)
    X = np.stack([np.sin(0.37 * i), np.cos(0.11 * i) * 2.0, (i % 7) / 7.0 - 0.5], axis=1)
    signal = X @ np.array([1.5, -0.75, 2.0]) + 0.25 * np.sin(1.3 * i)
    if model == "logistic":
        return X, (signal > 0).astype(np.float64)
    if model == "softmax":
        return X, np.digitize(signal, [-1.0, 1.0]).astype(np.float64)
    return X, signal


def record_of(case: str, *, resume: bool) -> dict[str, Any]:
    """What a worker stores of the run: each epoch's record (timings left out), the sha256 of
    its float32 step losses, and the sha256 of the trained model's NPZ."""
    config = TrainConfig.from_dict(CASES[case])
    X, y = dataset(config.model)
    training = Training(X, y, config)
    epochs: list[dict[str, Any]] = []
    for record in training:
        epochs.append(_stored(record))
        if resume and len(epochs) == RESUME_AFTER:
            checkpoint = Checkpoint.from_bytes(training.checkpoint().to_bytes())
            training = Training(X, y, config, resume_from=checkpoint)
            epochs.extend(_stored(later) for later in training)
            break
    model = hashlib.sha256(training.model.to_npz_bytes()).hexdigest()
    return {"epochs": epochs, "model_sha256": model}


def _stored(record: Any) -> dict[str, Any]:
    fields = {k: v for k, v in record.to_dict().items() if k not in TIMING_FIELDS}
    losses = record.step_losses.astype("<f4").tobytes()
    return {**fields, "step_losses_sha256": hashlib.sha256(losses).hexdigest()}


def recorded_on() -> dict[str, str]:
    """This platform: what decides the last bits of the runs' floats (see the module docstring)."""
    return {
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu": _cpu(),
        "simd": _simd(),
        "blas": _blas(),
        "libc": " ".join(platform.libc_ver()),
    }


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _simd() -> str:
    """The SIMD targets NumPy was built to dispatch to that this CPU has."""
    from numpy._core._multiarray_umath import (  # type: ignore[import-not-found]
        __cpu_dispatch__,
        __cpu_features__,
    )

    return " ".join(target for target in __cpu_dispatch__ if __cpu_features__.get(target))


def _blas() -> str:
    """NumPy's BLAS and the core it picked for this CPU (OpenBLAS's ``architecture``); other
    BLAS libraries a test loaded (SciPy's) are not NumPy's."""
    from threadpoolctl import threadpool_info  # type: ignore[import-untyped]

    pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    numpys = [pool for pool in pools if "numpy" in pool["filepath"]] or pools
    return "; ".join(
        sorted(
            f"{pool['internal_api']} {pool['version']} {pool.get('architecture', '?')}"
            for pool in numpys
        )
    )


def runs() -> dict[str, dict[str, Any]]:
    out = {case: record_of(case, resume=False) for case in CASES}
    out.update({f"{case} (resumed)": record_of(case, resume=True) for case in RESUMED})
    return out


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(GOLDEN.read_text())
    return loaded


def platform_records() -> list[dict[str, Any]]:
    if not GOLDEN_BYTES.exists():
        return []
    records: list[dict[str, Any]] = json.loads(GOLDEN_BYTES.read_text())["platforms"]
    return records


NAMES = [*CASES, *(f"{case} (resumed)" for case in RESUMED)]


def run_of(name: str) -> dict[str, Any]:
    case, resume = name.removesuffix(" (resumed)"), name.endswith(" (resumed)")
    return record_of(case, resume=resume)


@pytest.mark.parametrize("name", NAMES)
def test_the_run_gives_the_history_recorded_before_the_move(
    golden: dict[str, Any], name: str
) -> None:
    _assert_same(run_of(name), golden["runs"][name], name, exact=False)


@pytest.mark.parametrize("name", NAMES)
def test_the_run_gives_the_bytes_recorded_on_this_platform(name: str) -> None:
    here = recorded_on()
    records = [record for record in platform_records() if record["recorded_on"] == here]
    if not records:
        pytest.skip(
            f"no bytes recorded on this platform ({here}): "
            "python -m tests.core.test_golden_histories --add-platform records them"
        )
    _assert_same(run_of(name), records[0]["runs"][name], name, exact=True)


def _assert_same(
    actual: dict[str, Any], expected: dict[str, Any], name: str, *, exact: bool
) -> None:
    assert len(actual["epochs"]) == len(expected["epochs"])
    for epoch, (got, want) in enumerate(zip(actual["epochs"], expected["epochs"], strict=True)):
        assert _same(got, want, exact=exact), f"{name}, epoch {epoch + 1}: {got} != {want}"
    if exact:
        assert actual["model_sha256"] == expected["model_sha256"], name


def _same(got: Any, want: Any, *, exact: bool) -> bool:
    """Equal, floats exactly or to 1e-6 relative; sha256 fields compared only when exact."""
    if isinstance(want, dict) and isinstance(got, dict):
        keys = {k for k in want if exact or not k.endswith("sha256")}
        return set(got) == set(want) and all(_same(got[k], want[k], exact=exact) for k in keys)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(
            _same(g, w, exact=exact) for g, w in zip(got, want, strict=True)
        )
    if isinstance(want, float) and isinstance(got, float) and not exact:
        # Another CPU's BLAS kernels round differently: Intel Xeon against the AMD EPYC record
        # differs by up to 7.4e-7 relative (a float32 validation loss near convergence).
        return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12)
    return bool(got == want)


def _add_platform() -> None:
    """Record this platform's bytes, replacing an earlier record of it; refused when a run
    differs from the record before the move by more than 1e-6."""
    reference = json.loads(GOLDEN.read_text())["runs"]
    current = runs()
    differ = [name for name in current if not _same(current[name], reference[name], exact=False)]
    if differ:
        sys.exit(f"these runs differ from {GOLDEN.name} by more than 1e-6: {differ}")
    here = recorded_on()
    records = [record for record in platform_records() if record["recorded_on"] != here]
    records.append({"recorded_on": here, "runs": current})
    GOLDEN_BYTES.write_text(json.dumps({"platforms": records}, indent=1) + "\n")
    print(f"wrote {GOLDEN_BYTES.name}: {len(records)} platforms")


if __name__ == "__main__":
    if sys.argv[1:] == ["--add-platform"]:
        _add_platform()
    elif sys.argv[1:] == ["--write"]:
        written = runs()
        GOLDEN.write_text(
            json.dumps({"recorded_on": recorded_on(), "runs": written}, indent=1) + "\n"
        )
        here = {"recorded_on": recorded_on(), "runs": written}  # the others hold old numbers
        GOLDEN_BYTES.write_text(json.dumps({"platforms": [here]}, indent=1) + "\n")
        print(f"wrote {GOLDEN.name} and this platform's bytes; add the other platforms again")
    else:
        sys.exit("usage: python -m tests.core.test_golden_histories --write | --add-platform")
