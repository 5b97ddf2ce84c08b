"""Scoring a head's predictions with the task's metrics (`zooprobe.metrics`).

Keys per task:

- ``patterns``: ``hamming_loss``, ``subset_accuracy``, ``f1/<pattern>``, ``roc_auc/<pattern>``,
  ``macro_f1``, ``macro_roc_auc``, ``n_undefined``;
- ``accuracy``: ``mse``, ``mae``, ``rmse``, ``r2``, ``relative_error``, ``kendall_tau`` (on accuracy itself);
- ``hyperparameters``: ``<target>/{mse,mae,rmse,r2,relative_error,kendall_tau}`` for continuous targets, in
  the space users think in (log10 for learning rate and weight decay), ``<target>/{accuracy,macro_f1}``
  for discrete ones, and ``score``: the mean of every continuous target's R² and every discrete target's
  accuracy (`zooprobe.metrics.hyperparameter_aggregate`).

Undefined metrics (a single class in the split, a constant target) are NaN, and ``n_undefined`` counts
them in every task; they are never reported as 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from zooprobe.heads.targets import TargetArrays, TaskSpec
from zooprobe.metrics import (
    classification_metrics,
    hyperparameter_aggregate,
    pattern_metrics,
    regression_metrics,
    undefined_metrics,
)

#: Metrics where lower is better (early stopping and reports use this to pick a direction).
LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "relative_error", "hamming_loss")


def lower_is_better(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER


def metric_space_targets(spec: TaskSpec, targets: TargetArrays) -> dict[str, np.ndarray]:
    """Targets as users read them: class indices (-1: missing), flags (NaN: missing), metric-space values."""
    out = {}
    for t in spec.targets:
        v = targets.values[t.name]
        out[t.name] = t.from_model_space(v) if t.kind == "continuous" else v
    return out


def evaluate_predictions(
    spec: TaskSpec, targets: TargetArrays, predictions: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Metrics of `predictions` (`Head.predict`: probabilities, metric-space values) against `targets`."""
    truth = metric_space_targets(spec, targets)
    metrics: dict[str, float] = {}
    if spec.task == "patterns":
        names = spec.names
        y = np.stack([truth[n] for n in names], axis=1)
        p = np.stack([predictions[n] for n in names], axis=1)
        metrics.update(pattern_metrics(y, p, names))
        return metrics
    if spec.task == "accuracy":
        t = spec.targets[0]
        metrics.update(regression_metrics(truth[t.name], predictions[t.name]))
    else:
        r2, acc = {}, {}
        for t in spec.targets:
            if t.kind == "continuous":
                m = regression_metrics(truth[t.name], predictions[t.name])
                r2[t.name] = m["r2"]
            else:
                m = classification_metrics(
                    truth[t.name].astype(np.int64), predictions[t.name], len(t.classes)
                )
                acc[t.name] = m["accuracy"]
            metrics.update({f"{t.name}/{k}": v for k, v in m.items() if k != "n"})
        metrics["score"] = hyperparameter_aggregate(r2, acc)
    metrics["n_undefined"] = float(len(undefined_metrics(metrics)))
    return metrics


def metric_names(spec: TaskSpec) -> list[str]:
    """Every validation metric a run of `spec` reports: ``loss`` (added by the trainer) and each key of
    `evaluate_predictions` but the counts (``n``, ``n_undefined``). What ``stop.monitor`` may name.

    Computed by scoring zero models with the evaluator itself, so the list cannot drift from the metrics.
    """
    targets = TargetArrays(
        {
            t.name: np.zeros(0, dtype=np.int64 if t.kind == "categorical" else np.float64)
            for t in spec.targets
        }
    )
    predictions = {
        t.name: np.zeros((0, len(t.classes)) if t.kind == "categorical" else 0) for t in spec.targets
    }
    keys = evaluate_predictions(spec, targets, predictions)
    return ["loss", *(k for k in keys if k not in ("loss", "n", "n_undefined"))]


def default_monitor(task: str) -> str:
    """The validation metric early stopping watches by default."""
    return {"patterns": "loss", "accuracy": "loss", "hyperparameters": "loss"}[task]


__all__ = [
    "LOWER_IS_BETTER",
    "default_monitor",
    "evaluate_predictions",
    "lower_is_better",
    "metric_names",
    "metric_space_targets",
]
