"""A trained model ready to predict: parameters, standardisation and labels, serialisable.

``predict`` speaks the data's own labels: ``classes[index]`` for classifiers (``classes`` is the
sorted ``np.unique`` of the training target), raw values for regression. Inputs are
standardised with the training split's mean/std exactly as the training loop did, in chunks,
so any number of rows predicts in bounded memory and the caller's array is never written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.core.build import build_model
from service.core.checkpoint import pack_npz, unpack_npz
from service.core.config import TrainConfig
from service.core.data import Standardization, chunk_rows
from service.core.errors import CoreConfigError
from service.core.models import Model
from service.core.tasks import Task

FITTED_FORMAT = "batchwise.fitted_model"
FITTED_VERSION = 1


@dataclass(eq=False)
class FittedModel:
    """``theta`` (n_params,) of ``config.model`` for ``task`` on ``n_features`` columns.

    ``mean``/``std`` (n_features,) when trained with ``standardize``; ``classes`` (K,) for
    classifiers (K = 2 for binary), None for regression.
    """

    config: TrainConfig
    task: Task
    n_features: int
    theta: np.ndarray
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    classes: np.ndarray | None = None
    _model: Model[Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n_classes = None
        if self.task == "multiclass":
            if self.classes is None:
                raise CoreConfigError("classes", "a multiclass model needs its class labels")
            n_classes = int(self.classes.shape[0])
        elif self.task == "binary" and (self.classes is None or self.classes.shape[0] != 2):
            raise CoreConfigError("classes", "a binary model needs its 2 class labels")
        c = self.config
        self._model = build_model(
            c.model,
            task=self.task,
            n_features=self.n_features,
            n_classes=n_classes,
            loss=c.loss,
            huber_delta=c.huber_delta,
            hidden_layers=c.hidden_layers,
            activation=c.activation,
        )
        dtype = np.dtype(c.dtype)
        if self.theta.shape != (self._model.n_params,):
            raise CoreConfigError(
                "theta", f"has shape {self.theta.shape}, expected ({self._model.n_params},)"
            )
        self.theta = np.asarray(self.theta, dtype=dtype)
        if (self.mean is None) != (self.std is None):
            raise CoreConfigError("std", "mean and std come together")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                if value.shape != (self.n_features,):
                    raise CoreConfigError(name, f"must have shape ({self.n_features},)")
                setattr(self, name, np.asarray(value, dtype=dtype))

    @property
    def standardization(self) -> Standardization | None:
        """The feature transform applied before the model, or None."""
        if self.mean is None or self.std is None:
            return None
        return Standardization(mean=self.mean, std=self.std)

    def _checked_rows(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            width = X.shape[1] if X.ndim == 2 else f"shape {X.shape}"
            raise CoreConfigError(
                "X", f"rows must have {self.n_features} features (columns); got {width}"
            )
        if X.dtype.kind not in "biuf":
            raise CoreConfigError("X", f"must be numeric; got dtype {X.dtype}")
        return X

    def _outputs(self, X: np.ndarray) -> np.ndarray:
        """``predict_output`` over X (n, d), chunked: (n,) or (n, K)."""
        X = self._checked_rows(X)
        dtype = self.theta.dtype
        k = self._model.n_outputs
        n = X.shape[0]
        out = np.empty((n,) if k == 1 else (n, k), dtype=dtype)
        transform = self.standardization
        step = chunk_rows(self.n_features * dtype.itemsize)
        for start in range(0, n, step):
            # An owned copy in the model's dtype: standardised in place, never the caller's X.
            chunk = np.array(X[start : start + step], dtype=dtype)
            if transform is not None:
                transform.apply_inplace(chunk)
            out[start : start + step] = self._model.predict_output(self.theta, chunk)
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for X (n, n_features): values (n,) for regression, labels (n,) from
        ``classes`` otherwise (binary: class 1 when P(class 1) ≥ 0.5; multiclass: the argmax)."""
        out = self._outputs(X)
        if self.task == "regression" or self.classes is None:
            return out
        if self.task == "binary":
            labels: np.ndarray = self.classes[(out >= 0.5).astype(np.intp)]
        else:
            labels = self.classes[np.argmax(out, axis=1)]
        return labels

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (n, K), columns in the order of ``classes``."""
        if self.task == "regression":
            raise CoreConfigError("model", "predict_proba needs a classifier; this is a regression")
        out = self._outputs(X)
        if self.task == "binary":
            return np.stack([1.0 - out, out], axis=1)
        return out

    def params(self) -> dict[str, np.ndarray]:
        """Named parameter arrays (copies): "W", "b" or "W0", "b0", "W1", …"""
        return {name: view.copy() for name, view in self._model.views(self.theta).items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the config, task, named params as nested lists, standardisation, classes."""
        standardization = None
        if self.mean is not None and self.std is not None:
            standardization = {"mean": self.mean.tolist(), "std": self.std.tolist()}
        return {
            "model": self.config.model,
            "task": self.task,
            "n_features": self.n_features,
            "config": self.config.to_dict(),
            "params": {name: value.tolist() for name, value in self.params().items()},
            "standardization": standardization,
            "classes": None if self.classes is None else self.classes.tolist(),
        }

    def to_npz_bytes(self) -> bytes:
        """``.npz`` bytes (arrays + a JSON header, no pickle) for ``from_npz_bytes``."""
        header = {
            "format": FITTED_FORMAT,
            "version": FITTED_VERSION,
            "config": self.config.to_dict(),
            "task": self.task,
            "n_features": self.n_features,
        }
        arrays = {"theta": self.theta, "mean": self.mean, "std": self.std, "classes": self.classes}
        return pack_npz(header, arrays)

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> FittedModel:
        """Inverse of ``to_npz_bytes``; ``CoreConfigError("model", …)`` on foreign bytes."""
        header, arrays = unpack_npz(data, expected_format=FITTED_FORMAT, what="model")
        if header.get("version") != FITTED_VERSION:
            raise CoreConfigError("model", f"unsupported version {header.get('version')!r}")
        try:
            return cls(
                config=TrainConfig.from_dict(header["config"]),
                task=header["task"],
                n_features=int(header["n_features"]),
                theta=arrays["theta"],
                mean=arrays.get("mean"),
                std=arrays.get("std"),
                classes=arrays.get("classes"),
            )
        except KeyError as exc:
            raise CoreConfigError("model", f"incomplete model file (missing {exc})") from exc
