"""The fully connected network (``MLPModel``); its formulas are in the class docstring."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.losses import Head, const
from service.core.models import Model
from service.core.tasks import Task
from service.core.workspace import ViewCache

__all__ = ["MLPModel", "MLPWork"]


@dataclass(slots=True)
class MLPWork:
    """The work arrays of one batch size: one array per hidden layer in each tuple."""

    out: np.ndarray  # (n, m): the raw outputs, then dZ_L in place
    head_z: np.ndarray  # out as the head sees it: (n,) when m = 1, else out itself
    ones: np.ndarray  # (n,): Σ_rows as a dot product
    zero: np.ndarray  # 0-d constants: NumPy converts a Python 0.0 or 1.0 on every ufunc
    one: np.ndarray  # call (~0.25 µs)
    activations: tuple[np.ndarray, ...]  # A_l (n, h_l)
    transposed: tuple[np.ndarray, ...]  # A_lᵀ: views, made once rather than every step
    d_activations: tuple[np.ndarray, ...]  # dA_l (n, h_l)
    local_grads: tuple[np.ndarray, ...]  # act′(Z_l) (n, h_l)


class MLPModel(Model[MLPWork]):
    """Fully connected network: A₀ = X, Z_l = A_{l−1} W_l + b_l, A_l = act(Z_l) for the hidden
    layers, then a linear output layer into the task's head.

    Backward, with dZ_L = dJ/dz from the head:
        dW_l = A_{l−1}ᵀ dZ_l,  db_l = Σ_rows dZ_l,  dA_{l−1} = dZ_l W_lᵀ,
        dZ_{l−1} = dA_{l−1} ⊙ [Z_{l−1} > 0] (relu)  or  dA_{l−1} ⊙ (1 − A_{l−1}²) (tanh).

    Per-example squared norms (``per_example_sq_norms``, for the noise scale): row i's weight
    gradient of layer l is the outer product a_i δ_iᵀ (its input row and its row of dZ_l at
    the head's scale 1), so |g_i|² = Σ_l (|a_i|² + 1)|δ_i|², the + 1 from the bias.

    Init (from the rng, in layer order, drawn in float64 then cast, so float32 and float64
    start from the same values): hidden weights He-normal N(0, 2/fan_in) for relu,
    Glorot-uniform U(±√(6/(fan_in + fan_out))) for tanh; the output layer Glorot-uniform
    (its activation is the identity); all biases zero.
    """

    kind = "mlp"

    def __init__(
        self,
        *,
        task: Task,
        n_features: int,
        n_outputs: int,
        head: Head[Any],
        hidden_layers: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__(task=task, n_features=n_features, n_outputs=n_outputs, head=head)
        self.hidden_layers = tuple(hidden_layers)
        self.activation = activation
        widths = (n_features, *self.hidden_layers, n_outputs)
        # (W offset, fan_in, fan_out, b offset) of each layer in theta
        self._layers: list[tuple[int, int, int, int]] = []
        offset = 0
        for fan_in, fan_out in itertools.pairwise(widths):
            w_offset = offset
            offset += fan_in * fan_out
            self._layers.append((w_offset, fan_in, fan_out, offset))
            offset += fan_out
        self.n_params = offset
        self._theta_views = ViewCache(self._layer_views_and_transposes)
        self._grad_views = ViewCache(self._layer_views)

    def init_params(self, rng: np.random.Generator, dtype: np.dtype | type) -> np.ndarray:
        theta = np.zeros(self.n_params, dtype=dtype)
        last = len(self._layers) - 1
        for index, (w_offset, fan_in, fan_out, _) in enumerate(self._layers):
            size = fan_in * fan_out
            if index < last and self.activation == "relu":
                W = rng.standard_normal(size) * math.sqrt(2.0 / fan_in)
            else:
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                W = rng.uniform(-limit, limit, size)
            theta[w_offset : w_offset + size] = W
        return theta

    def _layer_views(
        self, a: np.ndarray
    ) -> tuple[tuple[np.ndarray, np.ndarray], ...]:  # (W, b) per layer of a flat array
        return tuple(
            (a[w : w + fi * fo].reshape(fi, fo), a[b : b + fo]) for w, fi, fo, b in self._layers
        )

    def views(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        self._check_theta(theta)
        named: dict[str, np.ndarray] = {}
        for index, (W, b) in enumerate(self._layer_views(theta)):
            named[f"W{index}"] = W
            named[f"b{index}"] = b
        return named

    def forward(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        self._check_theta(theta)
        A = np.asarray(X, dtype=theta.dtype)
        layers = self._layer_views(theta)
        for W, b in layers[:-1]:
            Z = A @ W + b
            A = np.maximum(Z, 0.0) if self.activation == "relu" else np.tanh(Z)
        W, b = layers[-1]
        z: np.ndarray = A @ W + b
        return z[:, 0] if self.n_outputs == 1 else z

    def _work_arrays(self, n: int, dtype: np.dtype) -> MLPWork:
        hidden = self.hidden_layers
        activations = tuple(np.empty((n, h), dtype) for h in hidden)
        out = np.empty((n, self.n_outputs), dtype)
        return MLPWork(
            out=out,
            head_z=out[:, 0] if self.n_outputs == 1 else out,
            ones=np.ones(n, dtype),
            zero=const(0.0, dtype),
            one=const(1.0, dtype),
            activations=activations,
            transposed=tuple(A.T for A in activations),
            d_activations=tuple(np.empty((n, h), dtype) for h in hidden),
            local_grads=tuple(np.empty((n, h), dtype) for h in hidden),
        )

    def _layer_views_and_transposes(
        self, a: np.ndarray
    ) -> tuple[tuple[tuple[np.ndarray, np.ndarray], ...], tuple[np.ndarray, ...]]:
        """((W, b) per layer, Wᵀ per layer) of a flat array."""
        layers = self._layer_views(a)
        return layers, tuple(W.T for W, _ in layers)

    def loss_and_scaled_grad(
        self,
        theta: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        grad_out: np.ndarray,
        factor: float,
    ) -> float:
        # ``out`` is passed positionally and gemm goes through the arrays' own ``dot``: at
        # B = 32 a call costs ~0.5 µs, so ~0.1 µs saved on each of ~15 calls is worth it.
        if X.dtype is not theta.dtype and X.dtype != theta.dtype:
            X = X.astype(theta.dtype)
        n: int = X.shape[0]
        n_hidden = len(self.hidden_layers)
        ws = self._workspaces.get(n, theta.dtype, factor)
        work = ws.arrays
        out, head_z, ones, zero, one = work.out, work.head_z, work.ones, work.zero, work.one
        activations, activations_T = work.activations, work.transposed
        d_activations, local_grad = work.d_activations, work.local_grads
        params, params_T = self._theta_views.get(theta)
        grads = self._grad_views.get(grad_out)
        relu = self.activation == "relu"
        add, multiply = np.add, np.multiply

        A_prev = X
        for (W, b), A in zip(params[:-1], activations, strict=True):
            A_prev.dot(W, A)
            add(A, b, A)
            if relu:
                np.maximum(A, zero, out=A)  # positional out is deprecated here
            else:
                np.tanh(A, A)
            A_prev = A
        W, b = params[-1]
        A_prev.dot(W, out)
        add(out, b, out)
        loss_sum = self._head.loss_sum_and_dz(head_z, y, head_z, ws.head_work)

        dZ = out
        for layer in range(n_hidden, 0, -1):
            dW, db = grads[layer]
            A_in = activations[layer - 1]
            activations_T[layer - 1].dot(dZ, dW)
            ones.dot(dZ, db)  # Σ_rows
            dA = d_activations[layer - 1]
            dZ.dot(params_T[layer], dA)
            slope = local_grad[layer - 1]
            if relu:
                np.greater(A_in, zero, slope)  # relu(Z) > 0 exactly where Z > 0
            else:
                multiply(A_in, A_in, slope)
                np.subtract(one, slope, slope)
            multiply(dA, slope, dA)
            dZ = dA
        dW, db = grads[0]
        X.T.dot(dZ, dW)
        ones.dot(dZ, db)
        return loss_sum / n

    def per_example_sq_norms(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """|g_i|² = Σ_l (|a_i,l−1|² + 1)|δ_i,l|² per row: (n,) float64, memory O(n·Σ widths).

        Row i's gradient of layer l is the outer product ∂L_i/∂W_l = a_i,l−1 δ_i,lᵀ and
        ∂L_i/∂b_l = δ_i,l, with a_i,l−1 the row's input to the layer (A_{l−1}[i], A₀ = X) and
        δ_i,l = ∂L_i/∂Z_l[i] its delta: the backward above with the head's scale 1, not 1/n,
        and no sum over rows. |a δᵀ|² = |a|²|δ|² (Frobenius), so the squared norm needs only
        the activations and deltas, never the (n, n_params) matrix of per-example gradients.
        """
        self._check_theta(theta)
        X = np.asarray(X, dtype=theta.dtype)
        n: int = X.shape[0]
        layers = self._layer_views(theta)
        relu = self.activation == "relu"
        inputs = [X]  # A₀ … A_{L−1}: the input of each layer
        for W, b in layers[:-1]:
            Z = inputs[-1] @ W + b
            inputs.append(np.maximum(Z, 0.0) if relu else np.tanh(Z))
        W, b = layers[-1]
        out = inputs[-1] @ W + b  # (n, m)
        head_z = out[:, 0] if self.n_outputs == 1 else out
        work = self._head.make_work(n, self.n_outputs, theta.dtype, 1.0)
        self._head.loss_sum_and_dz(head_z, y, head_z, work)
        delta = out  # δ_L = ∂L_i/∂z_i, written in place by the head
        sq = np.zeros(n, dtype=np.float64)
        for layer in range(len(layers) - 1, -1, -1):
            A_in = inputs[layer].astype(np.float64, copy=False)
            delta64 = delta.astype(np.float64, copy=False)
            sq += (np.einsum("ij,ij->i", A_in, A_in) + 1.0) * np.einsum(
                "ij,ij->i", delta64, delta64
            )
            if layer:
                # δ_{l−1} = (δ_l W_lᵀ) ⊙ act′(Z_{l−1}), act′ read from A_{l−1} as in backward
                A = inputs[layer]
                slope = (A > 0.0) if relu else 1.0 - A * A
                delta = (delta @ layers[layer][0].T) * slope
        return sq
