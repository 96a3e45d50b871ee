"""The state of a run at an epoch boundary, as bytes a database can hold.

Format: an ``.npz`` archive (``np.savez`` into ``io.BytesIO``) holding every array under its own
name plus ``header``, a uint8 array of UTF-8 JSON with the scalars, the config and the RNG
states. Loaded with ``allow_pickle=False``: no pickle anywhere, so bytes from the database can
never run code. JSON keeps every float exactly (``repr`` round-trips doubles) and the PCG64
states' 128-bit integers exactly, so a restored run continues bit for bit.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.config import TrainConfig
from service.core.errors import CoreConfigError
from service.core.tasks import Task

CHECKPOINT_FORMAT = "batchwise.checkpoint"
CHECKPOINT_VERSION = 1
_OPTIMIZER_PREFIX = "optimizer."


def pack_npz(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray | None]) -> bytes:
    """An ``.npz`` of ``arrays`` (None values left out) and ``header`` as UTF-8 JSON."""
    payload = {name: value for name, value in arrays.items() if value is not None}
    payload["header"] = np.frombuffer(json.dumps(dict(header)).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **payload)  # type: ignore[arg-type]
    return buffer.getvalue()


def unpack_npz(
    data: bytes, *, expected_format: str, what: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(header, arrays)`` from ``pack_npz`` bytes.

    Raises ``CoreConfigError(what, …)`` when the bytes are unreadable or of another format.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        header = json.loads(arrays.pop("header").tobytes().decode())
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CoreConfigError(what, f"unreadable bytes ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != expected_format:
        raise CoreConfigError(what, f"not a {expected_format} archive")
    return header, arrays


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_array(arrays: Mapping[str, np.ndarray], name: str) -> np.ndarray | None:
    return arrays.get(name)


@dataclass(eq=False)
class Checkpoint:
    """Everything a fresh process needs to continue a run bit-identically.

    ``epoch`` counts completed epochs (0 = before training). ``theta`` (n_params,) and the
    optimizer's arrays in the config's dtype; ``rng_states`` the ``bit_generator.state`` dicts of
    the shuffle and noise-sample generators (init and the validation split are re-derived from
    the seed). ``finished`` is the stop reason when the run ended at this boundary ("completed" or
    "early_stopping"); resuming a finished run yields no more epochs. The LR schedule and the
    constant and grow batch sizes are functions of the epoch, so they need no state of their own;
    the adaptive batch size depends on what was measured, so ``batch_size`` (the next epoch's)
    and ``batch_size_reason`` (why) are kept (None for the other kinds). The evaluation schedule
    is a function of ``total_steps``.
    """

    config: TrainConfig
    epoch: int
    theta: np.ndarray
    optimizer_state: dict[str, np.ndarray]
    rng_states: Mapping[str, Mapping[str, Any]]
    task: Task
    n_features: int
    samples_seen: int = 0
    total_steps: int = 0
    classes: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    divergence_reference: float | None = None
    best_value: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    best_theta: np.ndarray | None = None
    finished: str | None = None
    batch_size: int | None = None
    batch_size_reason: str | None = None

    def to_bytes(self) -> bytes:
        """The checkpoint as ``.npz`` bytes (see the module docstring)."""
        header = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "rng_states": self.rng_states,
            "task": self.task,
            "n_features": self.n_features,
            "samples_seen": self.samples_seen,
            "total_steps": self.total_steps,
            "divergence_reference": self.divergence_reference,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
            "finished": self.finished,
            "batch_size": self.batch_size,
            "batch_size_reason": self.batch_size_reason,
            "optimizer_keys": sorted(self.optimizer_state),
        }
        arrays: dict[str, np.ndarray | None] = {
            "theta": self.theta,
            "classes": self.classes,
            "mean": self.mean,
            "std": self.std,
            "best_theta": self.best_theta,
        }
        for key, value in self.optimizer_state.items():
            arrays[_OPTIMIZER_PREFIX + key] = np.asarray(value)
        return pack_npz(header, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Inverse of ``to_bytes``; ``CoreConfigError("checkpoint", …)`` on bad bytes."""
        header, arrays = unpack_npz(data, expected_format=CHECKPOINT_FORMAT, what="checkpoint")
        if header.get("version") != CHECKPOINT_VERSION:
            raise CoreConfigError("checkpoint", f"unsupported version {header.get('version')!r}")
        try:
            optimizer_state = {
                key: arrays[_OPTIMIZER_PREFIX + key] for key in header["optimizer_keys"]
            }
            return cls(
                config=TrainConfig.from_dict(header["config"]),
                epoch=int(header["epoch"]),
                theta=arrays["theta"],
                optimizer_state=optimizer_state,
                rng_states=header["rng_states"],
                task=header["task"],
                n_features=int(header["n_features"]),
                samples_seen=int(header["samples_seen"]),
                total_steps=int(header["total_steps"]),
                classes=_optional_array(arrays, "classes"),
                mean=_optional_array(arrays, "mean"),
                std=_optional_array(arrays, "std"),
                divergence_reference=header["divergence_reference"],
                best_value=header["best_value"],
                best_epoch=int(header["best_epoch"]),
                epochs_without_improvement=int(header["epochs_without_improvement"]),
                best_theta=_optional_array(arrays, "best_theta"),
                finished=header["finished"],
                # Absent from checkpoints written before the adaptive batch size existed.
                batch_size=_optional_int(header.get("batch_size")),
                batch_size_reason=header.get("batch_size_reason"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CoreConfigError):
                raise
            raise CoreConfigError("checkpoint", f"incomplete checkpoint ({exc!r})") from exc
