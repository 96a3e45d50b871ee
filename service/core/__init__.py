"""The training core: NumPy and the standard library only, no I/O, no global state.

The public surface for the layers above (the worker, the API's validation, sweeps).
"""

from service.core.budget import (
    JobBytes,
    JobBytesPart,
    estimate_checkpoint_bytes,
    estimate_job_bytes,
    model_outputs,
)
from service.core.checkpoint import Checkpoint
from service.core.config import (
    EarlyStopping,
    Evaluation,
    TrainConfig,
    check_config_for_dataset,
    effective_task,
    split_sizes,
)
from service.core.errors import CoreConfigError, CoreError, TrainingDiverged
from service.core.fitted import FittedModel
from service.core.records import EpochRecord, NoiseRecord, StopReason
from service.core.schedules import BatchSizeSchedule, LRSchedule
from service.core.tasks import Task, infer_task
from service.core.train import Training, train

__all__ = [
    "BatchSizeSchedule",
    "Checkpoint",
    "CoreConfigError",
    "CoreError",
    "EarlyStopping",
    "EpochRecord",
    "Evaluation",
    "FittedModel",
    "JobBytes",
    "JobBytesPart",
    "LRSchedule",
    "NoiseRecord",
    "StopReason",
    "Task",
    "TrainConfig",
    "Training",
    "TrainingDiverged",
    "check_config_for_dataset",
    "effective_task",
    "estimate_checkpoint_bytes",
    "estimate_job_bytes",
    "infer_task",
    "model_outputs",
    "split_sizes",
    "train",
]
