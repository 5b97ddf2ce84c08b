"""Training: encoder pretraining (`pretrain`), head training (`trainer`, `TrainConfig`), the data loader,
the evaluator, run folders, training state and distributed helpers.

These work on loaded objects; `zooprobe.train` and `zooprobe.pretrain_encoder` take sources by name.
"""

from zooprobe.training.config import OptimConfig, StopConfig, TrainConfig
from zooprobe.training.pretrain import PretrainConfig, pretrain
from zooprobe.training.run_folder import RunFolder
from zooprobe.training.trainer import TrainResult, fit

__all__ = [
    "OptimConfig",
    "PretrainConfig",
    "RunFolder",
    "StopConfig",
    "TrainConfig",
    "TrainResult",
    "fit",
    "pretrain",
]
