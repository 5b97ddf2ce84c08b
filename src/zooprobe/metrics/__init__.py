"""Evaluator metrics: numpy in, plain floats out, undefined metrics as NaN (see `zooprobe.metrics.core`)."""

from __future__ import annotations

from zooprobe.metrics.core import (
    RELATIVE_ERROR_EPS,
    classification_metrics,
    hyperparameter_aggregate,
    pattern_metrics,
    regression_metrics,
    undefined_metrics,
)

__all__ = [
    "RELATIVE_ERROR_EPS",
    "classification_metrics",
    "hyperparameter_aggregate",
    "pattern_metrics",
    "regression_metrics",
    "undefined_metrics",
]
