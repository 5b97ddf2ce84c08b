"""Prediction heads over weight-space representations: targets, head modules, EncoderWithHead, loading."""

from zooprobe.heads.model import EncoderWithHead
from zooprobe.heads.modules import (
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
    "PatternClassificationHead",
    "TargetSpec",
    "TaskSpec",
    "build_head",
    "build_task_spec",
]
