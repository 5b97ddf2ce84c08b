"""Head training: the config (`TrainConfig`), the data pipeline, the trainer, evaluation, benchmark, CLI."""

from zooprobe.training.config import OptimConfig, StopConfig, TrainConfig
from zooprobe.training.trainer import TrainResult, train

__all__ = ["OptimConfig", "StopConfig", "TrainConfig", "TrainResult", "train"]
