"""The metrics a head's card reports: each metrics.json key's Hub metric id, pretty name and definition."""

from __future__ import annotations

import math
from typing import Any

#: Metric base name -> (Hub metric id, pretty name, definition): one line each, ``id | name | definition``.
_METRIC_TABLE = """
r2 | r_squared | R² | coefficient of determination, 1 - Σ(y - p)² / Σ(y - mean(y))²
mse | mse | MSE | mean squared error, mean((p - y)²)
mae | mae | MAE | mean absolute error, mean(|p - y|)
rmse | rmse | RMSE | root mean squared error, sqrt(MSE)
relative_error | relative_error | relative error | mean relative error, mean(|p - y| / max(|y|, 1e-8))
kendall_tau | kendall_tau | Kendall tau | Kendall's tau-b rank correlation of truth and prediction
accuracy | accuracy | accuracy | fraction of models whose most probable class is the true one
macro_f1 | f1 | macro F1 | unweighted mean of the per-class (or per-pattern) F1 = 2·TP / (2·TP + FP + FN), \
over the classes that occur in the truth or the predictions (patterns: over the patterns where F1 is defined)
f1 | f1 | F1 | binary F1 of one pattern (present when its probability is >= 0.5)
roc_auc | roc_auc | ROC AUC | area under the ROC curve of one pattern's probabilities
macro_roc_auc | roc_auc | macro ROC AUC | mean ROC AUC over the patterns where it is defined
hamming_loss | hamming_loss | Hamming loss | fraction of wrong (model, pattern) flags, a pattern counting as \
present at probability >= 0.5
subset_accuracy | subset_accuracy | subset accuracy | fraction of models (with every pattern known) whose \
patterns are all predicted right
score | score | hyperparameter score | mean of every continuous target's R² and every discrete target's \
accuracy
coverage | coverage | interval coverage | share of models whose true value lies in the 90% conformal \
prediction interval (calibrated on the validation split)
interval_width | interval_width | interval width | mean width of the 90% prediction intervals (log10 for \
log targets)
ece | ece | ECE | expected calibration error of the temperature-scaled probabilities (10 confidence bins)
macro_ece | ece | macro ECE | mean ECE over the patterns where it is defined
"""
METRICS: dict[str, tuple[str, str, str]] = {
    key: (hub_id, pretty, definition)
    for key, hub_id, pretty, definition in (
        [part.strip() for part in line.split(" | ", 3)] for line in _METRIC_TABLE.strip().splitlines()
    )
}
REGRESSION_METRICS = ("r2", "mse", "mae", "rmse", "relative_error", "kendall_tau")
#: Keys of metrics.json's ``test`` that are not scores of the predictions.
NOT_SCORES = ("loss", "n", "n_undefined", "in_domain")


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def metric_info(key: str) -> tuple[str | None, str, str, str]:
    """(target or None, base metric, Hub metric id, pretty name) of a metrics.json key."""
    if key.startswith(("f1/", "roc_auc/")):  # per-pattern metrics: f1/<pattern>, roc_auc/<pattern>
        base, target = key.split("/", 1)
    else:  # <target>/<metric> (hyperparameters) or <metric>
        target, _, base = key.rpartition("/")
    mtype, pretty, _ = METRICS.get(base, (base, base.replace("_", " "), ""))
    return (target or None), base, mtype, pretty


__all__ = ["METRICS", "NOT_SCORES", "REGRESSION_METRICS", "finite", "metric_info"]
