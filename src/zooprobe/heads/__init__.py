"""Prediction heads over weight-space representations.

`targets` (what to predict, from a zoo's metadata), `prediction_heads` (the three heads and `HeadConfig`),
`encoder_with_head` (`EncoderWithHead`: frozen or fine-tuned encoder + head), `head_loader` (`save_head`,
`load_head_folder`, `LoadedHead`). Training them is `zooprobe.training`.
"""

from zooprobe.heads.encoder_with_head import EncoderWithHead
from zooprobe.heads.head_loader import LoadedHead, load_head_folder, save_head
from zooprobe.heads.prediction_heads import (
    AccuracyPredictionHead,
    HeadConfig,
    HyperparameterPredictionHead,
    PatternClassificationHead,
    build_head,
)
from zooprobe.heads.targets import TargetSpec, TaskSpec, build_task_spec

__all__ = [
    "AccuracyPredictionHead",
    "EncoderWithHead",
    "HeadConfig",
    "HyperparameterPredictionHead",
    "LoadedHead",
    "PatternClassificationHead",
    "TargetSpec",
    "TaskSpec",
    "build_head",
    "build_task_spec",
    "load_head_folder",
    "save_head",
]
