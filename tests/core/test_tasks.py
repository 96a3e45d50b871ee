"""infer_task: the task a target column implies."""

import numpy as np
import pytest

from service.core.tasks import infer_task


@pytest.mark.parametrize(
    ("y", "expected"),
    [
        (np.array([0.0, 1.0, 1.0, 0.0]), "binary"),
        (np.array([-1, 7, 7, -1, 7]), "binary"),
        (np.array(["no", "yes", "yes"]), "binary"),
        (np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]), "multiclass"),
        (np.array([3, 10, 20, 3, 10, 20]), "multiclass"),
        (np.arange(100) % 50, "multiclass"),  # 50 classes, 100 rows: at the limits
        (np.arange(102) % 51, "regression"),  # 51 distinct values: too many for classes
        (np.array([0, 1, 2, 3, 4, 5, 6]), "regression"),  # 7 distinct in 7 rows: > half
        (np.array([0.0, 1.0, 2.0, 0.0, 1.0]), "regression"),  # 3 distinct in 5 rows: > half
        (np.array([0.5, 1.5, 2.5, 0.5, 1.5, 2.5]), "regression"),  # not integer-valued
        (np.array([1.0, np.nan, 2.0, 1.0, 2.0, 3.0, 3.0, 1.0]), "regression"),
        (np.array([1.0, 1.0, 1.0]), "regression"),  # constant
        (np.array([], dtype=float), "regression"),
        (np.array([0.1, 0.2, 0.3, 0.4]), "regression"),
    ],
)
def test_infer_task(y: np.ndarray, expected: str) -> None:
    assert infer_task(y) == expected


def test_infer_task_accepts_a_column_vector() -> None:
    assert infer_task(np.array([[0], [1], [2], [0], [1], [2]])) == "multiclass"
