"""Evaluation metrics for prediction heads: regression, classification, multi-label patterns.

Conventions shared by every function here:

- Inputs are numpy arrays (anything `np.asarray` accepts); outputs are plain Python floats.
- Missing targets are *masked out*, never filled: NaN in float targets, -1 in integer class labels.
- A metric that is undefined on the data it is given is NaN, never a silent 0 (a 0 would bias any mean
  taken over metrics). `undefined_metrics` lists the NaN entries so reports can count and show them.
- Non-finite predictions raise `ValueError`: a diverged head must not be silently scored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "RELATIVE_ERROR_EPS",
    "classification_metrics",
    "hyperparameter_aggregate",
    "pattern_metrics",
    "regression_metrics",
    "undefined_metrics",
]

#: Floor on |y| in the denominator of the relative error.
RELATIVE_ERROR_EPS = 1e-8

_NAN = float("nan")


def _nanmean(values: Iterable[float]) -> float:
    """Mean of the non-NaN values; NaN (without a RuntimeWarning) when there are none."""
    kept = [float(v) for v in values if not math.isnan(float(v))]
    return float(sum(kept) / len(kept)) if kept else _NAN


def _check_finite(name: str, values: np.ndarray) -> None:
    bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf) out of {np.size(values)}")


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Metrics of a scalar regression head.

    `y_true` and `y_pred` are 1-D arrays of equal length. Entries where `y_true` is NaN are missing targets
    and are dropped (together with their predictions) before anything is computed; ``y`` and ``p`` below
    are the remaining ``n`` pairs.

    Raises `ValueError` if any prediction (masked or not) is NaN/inf, naming how many; if a target is
    ±inf; or if the shapes are not equal 1-D.

    Keys:

    - ``n``: number of pairs used, as a float.
    - ``mse``: mean((p - y)²).
    - ``mae``: mean(|p - y|).
    - ``rmse``: sqrt(mse).
    - ``r2``: coefficient of determination, 1 - Σ(y - p)² / Σ(y - mean(y))² (`sklearn.metrics.r2_score`).
      NaN if n < 2 or y is constant (the denominator is 0; sklearn would otherwise report 0 or 1).
    - ``relative_error``: mean(|p - y| / max(|y|, eps)) with eps = `RELATIVE_ERROR_EPS` (1e-8).
    - ``kendall_tau``: Kendall's tau-b rank correlation of (y, p), `scipy.stats.kendalltau(y, p).statistic`.
      NaN if n < 2 or either y or p is constant.

    With n = 0 every metric except ``n`` is NaN.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {y.shape} and {p.shape}")
    _check_finite("y_pred", p)
    if np.isinf(y).any():
        raise ValueError(f"y_true has {int(np.isinf(y).sum())} infinite value(s); use NaN for missing")
    known = ~np.isnan(y)
    y, p = y[known], p[known]
    n = int(y.size)
    out: dict[str, float] = {"n": float(n)}
    if n == 0:
        out.update(mse=_NAN, mae=_NAN, rmse=_NAN, r2=_NAN, relative_error=_NAN, kendall_tau=_NAN)
        return out
    err = p - y
    mse = float(np.mean(err**2))
    out["mse"] = mse
    out["mae"] = float(np.mean(np.abs(err)))
    out["rmse"] = math.sqrt(mse)
    y_constant = bool(np.all(y == y[0]))
    from scipy.stats import kendalltau  # heavy: SciPy (seconds of start-up; only when scoring)
    from sklearn.metrics import r2_score  # heavy: scikit-learn

    out["r2"] = _NAN if n < 2 or y_constant else float(r2_score(y, p))
    out["relative_error"] = float(np.mean(np.abs(err) / np.maximum(np.abs(y), RELATIVE_ERROR_EPS)))
    if n < 2 or y_constant or bool(np.all(p == p[0])):
        out["kendall_tau"] = _NAN
    else:
        out["kendall_tau"] = float(kendalltau(y, p).statistic)
    return out


def classification_metrics(y_true: Any, probs: Any, n_classes: int | None = None) -> dict[str, float]:
    """Metrics of a single-label classification head.

    `y_true` is an integer array [N] of class indices with -1 meaning "missing" (those rows are dropped);
    `probs` is [N, C] class probabilities or any scores: the prediction is the argmax over C. If
    `n_classes` is given, C must equal it. Raises `ValueError` on non-finite scores, a label outside
    [-1, C), or mismatched shapes.

    Keys:

    - ``n``: number of rows with a known label, as a float.
    - ``accuracy``: fraction of those rows where argmax(probs) == y_true.
    - ``macro_f1``: unweighted mean of the per-class F1 = 2·TP / (2·TP + FP + FN), taken over the classes
      that occur in the known labels *or* in the predictions (`sklearn.metrics.f1_score` with
      ``average="macro"``, ``labels`` = that union, ``zero_division=np.nan``). Every such class has
      TP + FP + FN > 0, so its F1 is always defined (a 0 is a genuine 0); classes that occur in neither are
      left out rather than counted as 0.

    With n = 0, ``accuracy`` and ``macro_f1`` are NaN.
    """
    y = np.asarray(y_true)
    s = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 2 or s.shape[0] != y.shape[0]:
        raise ValueError(f"y_true must be [N] and probs [N, C], got {y.shape} and {s.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise ValueError("y_true must hold integer class indices (-1 = missing)")
    y = y.astype(np.int64)
    n_cols = s.shape[1]
    if n_classes is not None and n_cols != n_classes:
        raise ValueError(f"probs has {n_cols} columns but n_classes={n_classes}")
    _check_finite("probs", s)
    if y.size and (y.min() < -1 or y.max() >= n_cols):
        raise ValueError(f"y_true must lie in [-1, {n_cols}), got values in [{y.min()}, {y.max()}]")
    known = y != -1
    y, s = y[known], s[known]
    n = int(y.size)
    if n == 0:
        return {"n": 0.0, "accuracy": _NAN, "macro_f1": _NAN}
    pred = np.argmax(s, axis=1)
    labels = np.union1d(y, pred)
    from sklearn.metrics import f1_score  # heavy: scikit-learn (seconds of start-up; only when scoring)

    macro_f1 = f1_score(y, pred, labels=labels, average="macro", zero_division=np.nan)
    return {"n": float(n), "accuracy": float(np.mean(pred == y)), "macro_f1": float(macro_f1)}


def pattern_metrics(y_true: Any, probs: Any, names: list[str], threshold: float = 0.5) -> dict[str, float]:
    """Metrics of a multi-label (architecture pattern) head.

    `y_true` is [N, P] float with 1 = present, 0 = absent and NaN = unknown; `probs` is [N, P] predicted
    probabilities; `names` are the P pattern names. A pattern is predicted present iff
    ``probs >= threshold``. Unknown entries are masked per label: they count nowhere. Raises `ValueError`
    on non-finite probabilities, known labels other than 0/1, mismatched shapes or duplicate names.

    Keys:

    - ``n``: number of rows with at least one known label, as a float.
    - ``hamming_loss``: wrong predictions / known entries, over all known (row, pattern) entries;
      NaN if no entry is known.
    - ``subset_accuracy``: among rows whose P labels are *all* known, the fraction where every pattern is
      predicted right (exact match). Rows with any unknown label are ignored. NaN if no row is complete.
    - ``f1/<name>``: binary F1 = 2·TP / (2·TP + FP + FN) of that pattern over its known rows
      (`sklearn.metrics.f1_score` with ``zero_division=np.nan``); NaN when undefined, i.e. no positive in
      either the truth or the predictions (or no known row).
    - ``roc_auc/<name>``: ROC AUC of that pattern's probabilities over its known rows
      (`sklearn.metrics.roc_auc_score`); NaN when the known labels hold only one class (or none).
    - ``macro_f1`` / ``macro_roc_auc``: mean over patterns of the defined (non-NaN) ``f1/*`` /
      ``roc_auc/*`` values; NaN if none is defined.
    - ``n_undefined``: how many of the 2·P per-pattern values (``f1/*`` and ``roc_auc/*``) are NaN.
    """
    y, s, names, known = _pattern_inputs(y_true, probs, names)
    pred = s >= threshold
    truth = y == 1
    wrong = (pred != truth) & known

    n_known = int(known.sum())
    complete = known.all(axis=1)
    out: dict[str, float] = {
        "n": float(int(known.any(axis=1).sum())),
        "hamming_loss": float(wrong.sum()) / n_known if n_known else _NAN,
        "subset_accuracy": float(np.mean(~wrong[complete].any(axis=1))) if complete.any() else _NAN,
    }
    from sklearn.metrics import f1_score, roc_auc_score  # heavy: scikit-learn (only when scoring)

    f1s: list[float] = []
    aucs: list[float] = []
    for j, name in enumerate(names):
        rows = known[:, j]
        t, pr, sc = truth[rows, j], pred[rows, j], s[rows, j]
        f1 = float(f1_score(t, pr, zero_division=np.nan)) if t.any() or pr.any() else _NAN
        auc = float(roc_auc_score(t, sc)) if t.any() and not t.all() else _NAN
        out[f"f1/{name}"] = f1
        out[f"roc_auc/{name}"] = auc
        f1s.append(f1)
        aucs.append(auc)
    out["macro_f1"] = _nanmean(f1s)
    out["macro_roc_auc"] = _nanmean(aucs)
    out["n_undefined"] = float(sum(math.isnan(v) for v in f1s + aucs))
    return out


def _pattern_inputs(
    y_true: Any, probs: Any, names: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """The checked inputs of `pattern_metrics`: labels, probabilities, names, and which labels are known."""
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(probs, dtype=np.float64)
    if y.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"y_true and probs must both be [N, P], got {y.shape} and {s.shape}")
    names = list(names)
    if len(names) != y.shape[1]:
        raise ValueError(f"got {len(names)} names for {y.shape[1]} patterns")
    if len(set(names)) != len(names):
        raise ValueError(f"pattern names must be unique, got {names}")
    _check_finite("probs", s)
    known = ~np.isnan(y)
    if not np.all((y[known] == 0) | (y[known] == 1)):
        raise ValueError("known pattern labels must be 0 or 1 (NaN = unknown)")
    return y, s, names, known


def hyperparameter_aggregate(continuous_r2: dict[str, float], discrete_accuracy: dict[str, float]) -> float:
    """The single score summarising all hyperparameter targets (what early stopping on them watches).

    Defined as the unweighted mean of one number per target: the R² of each continuous target
    (`continuous_r2`, e.g. ``regression_metrics(...)["r2"]``) and the accuracy of each discrete target
    (`discrete_accuracy`, e.g. ``classification_metrics(...)["accuracy"]``), skipping NaN (undefined)
    entries. Every target weighs the same whatever its kind. Higher is better; R² may be negative, so the
    aggregate may be too. NaN if there is no target or every entry is NaN.
    """
    values = [*continuous_r2.values(), *discrete_accuracy.values()]
    return _nanmean(values)


def undefined_metrics(metrics: dict[str, float]) -> list[str]:
    """Names of the entries of `metrics` whose value is NaN, in the mapping's order.

    Reports use it to count and show undefined metrics instead of letting them pass as 0.
    Non-numeric values are ignored.
    """
    names: list[str] = []
    for key, value in metrics.items():
        try:
            if math.isnan(float(value)):
                names.append(key)
        except (TypeError, ValueError):
            continue
    return names
