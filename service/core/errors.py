"""Errors raised by the training core (standard library only).

The layers above translate them into domain errors (``service.errors``); the core itself
knows nothing about HTTP.
"""

from __future__ import annotations


class CoreError(Exception):
    """Base of every error the training core raises on purpose."""


class CoreConfigError(CoreError, ValueError):
    """A configuration value the core cannot use; ``field`` names it.

    ``str(e) == f"{field}: {message}"``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TrainingDiverged(CoreError):
    """The loss became non-finite or exploded at ``epoch``, ``step`` (as the loop numbers them)."""

    def __init__(self, *, epoch: int, step: int, loss: float, message: str) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.loss = loss
        self.message = message
