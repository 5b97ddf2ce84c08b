"""The targets a baseline is fit on: missing values and labels checked, the rows kept per split
(`_target_rows`), and the scores model selection uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _continuous_target(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    return y, np.isfinite(y)


def _label_target(y: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).reshape(-1)
    if y.dtype == bool:
        return y.astype(np.int64), np.ones(len(y), dtype=bool)
    if np.issubdtype(y.dtype, np.floating):
        keep = np.isfinite(y) & (y != -1)
        if np.any(y[keep] != np.round(y[keep])):
            raise ValueError(f"{kind} labels must be integers (or -1 / NaN for missing)")
        labels = np.where(keep, y, -1).astype(np.int64)
    elif np.issubdtype(y.dtype, np.integer):
        labels = y.astype(np.int64)
        keep = labels != -1
    else:
        raise ValueError(f"{kind} labels must be integer codes, got dtype {y.dtype}")
    if np.any(labels[keep] < 0):
        raise ValueError(f"{kind} labels must be >= 0 (-1 = missing)")
    if kind == "binary" and np.any(labels[keep] > 1):
        raise ValueError("binary labels must be 0 or 1 (-1 = missing)")
    return labels, keep


def _check_xy(x: np.ndarray, y: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x_{what} must be 2-D [N, F], got shape {x.shape}")
    if len(x) != len(np.asarray(y).reshape(-1)):
        raise ValueError(f"x_{what} has {len(x)} rows but y_{what} has {len(np.asarray(y).reshape(-1))}")
    return x


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    if len(y) < 2:
        return float("nan")
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return float("nan")
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot


def _log_loss(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    idx = np.searchsorted(classes, y)
    p = np.clip(proba[np.arange(len(y)), idx], 1e-15, 1.0)
    return float(-np.mean(np.log(p)))


@dataclass
class _Rows:
    """The rows a baseline is fit and selected on (those with a target; validation labels seen in
    training), and the training labels and probability columns of a classification target."""

    x_tr: np.ndarray
    y_tr: np.ndarray
    x_va: np.ndarray
    y_va: np.ndarray
    train_dropped: int
    val_dropped: int
    classes: np.ndarray | None = None
    proba_classes: np.ndarray | None = None


def _target_rows(
    kind: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    n_classes: int | None,
) -> _Rows:
    (x_train, y_train), (x_val, y_val) = train, val
    if kind != "continuous":
        y_tr_all, keep_tr = _label_target(y_train, kind)
        y_va_all, keep_va = _label_target(y_val, kind)
    else:
        y_tr_all, keep_tr = _continuous_target(y_train)
        y_va_all, keep_va = _continuous_target(y_val)
    x_tr, y_tr = x_train[keep_tr], y_tr_all[keep_tr]
    if len(y_tr) == 0:
        raise ValueError("no training row has a target (all missing)")
    classes: np.ndarray | None = None
    proba_classes: np.ndarray | None = None
    if kind != "continuous":
        classes = np.unique(y_tr)
        if kind == "binary":
            proba_classes = np.array([0, 1], dtype=np.int64)
        elif n_classes is not None:
            if classes.max() >= n_classes:
                raise ValueError(f"label {classes.max()} found with n_classes={n_classes}")
            proba_classes = np.arange(n_classes, dtype=np.int64)
        else:
            proba_classes = classes
        keep_va = keep_va & np.isin(y_va_all, classes)
    return _Rows(
        x_tr, y_tr, x_val[keep_va], y_va_all[keep_va], int((~keep_tr).sum()), int((~keep_va).sum()),
        classes, proba_classes,
    )  # fmt: skip
