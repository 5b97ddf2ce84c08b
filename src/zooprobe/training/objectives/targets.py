"""Pretraining targets read off a zoo's metadata, shared by the supervised objectives (``neurons``,
``layers``): `metadata_targets` picks the targets the training models support and fits their
standardization; `target_tensors` gives every row's values (see `zooprobe.training.objectives.neurons`'s
module docs for the list)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from zooprobe.core.progress import log
from zooprobe.encoder.config import PretrainTarget
from zooprobe.errors import InvalidInputError


def _column(meta: pd.DataFrame, name: str) -> np.ndarray | None:
    return None if name not in meta.columns else meta[name].to_numpy()


def _continuous(meta: pd.DataFrame) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in ("test_accuracy", "train_accuracy", "epochs", "dropout", "momentum", "label_smoothing"):
        col = _column(meta, name)
        if col is not None:
            out[name] = pd.to_numeric(pd.Series(col), errors="coerce").to_numpy(dtype=np.float64)
    logs = (("learning_rate", 1e-8, 10), ("weight_decay", 1e-7, 10), ("batch_size", 1, 2), ("steps", 1, 10))
    for name, floor, base in (*logs, ("train_samples", 1, 10)):
        col = _column(meta, name)
        if col is not None:
            x = pd.to_numeric(pd.Series(col), errors="coerce").to_numpy(dtype=np.float64)
            log_name = f"log{base}_{name}"
            out[log_name] = np.log(np.maximum(x, floor)) / math.log(base)
    return out


def _binary(meta: pd.DataFrame) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in ("has_dropout", "has_residual"):
        col = _column(meta, name)
        if col is not None:
            s = pd.Series(col)
            out[name] = np.where(s.isna(), -1, s.fillna(False).astype(bool).astype(int)).astype(np.int64)
    col = _column(meta, "weight_decay")
    if col is not None:
        x = pd.to_numeric(pd.Series(col), errors="coerce").to_numpy(dtype=np.float64)
        out["zero_weight_decay"] = np.where(np.isfinite(x), (x == 0).astype(int), -1).astype(np.int64)
    return out


def metadata_targets(meta: pd.DataFrame) -> list[PretrainTarget]:
    """The pretraining targets that the training models' metadata `meta` supports (module docs)."""
    specs: list[PretrainTarget] = []
    for name, y in _continuous(meta).items():
        y = y[np.isfinite(y)]
        if len(y) >= 2 and y.std() > 1e-9:
            specs.append(PretrainTarget(name, "continuous", mean=float(y.mean()), std=float(y.std())))
    for name in ("optimizer", "activation", "init", "scheduler", "normalization"):
        col = _column(meta, name)
        if col is None:
            continue
        classes = sorted(
            {str(v) for v in col if v is not None and not (isinstance(v, float) and math.isnan(v))}
        )
        if len(classes) >= 2:
            specs.append(PretrainTarget(name, "categorical", classes=classes))
    for name, y in _binary(meta).items():
        if len(set(y[y >= 0].tolist())) == 2:
            specs.append(PretrainTarget(name, "binary"))
    return specs


def target_tensors(meta: pd.DataFrame, specs: list[PretrainTarget]) -> dict[str, torch.Tensor]:
    """Per target, the values of `meta`'s rows: standardized floats (NaN: missing) or class indices (-1)."""
    cont, binary = _continuous(meta), _binary(meta)
    out: dict[str, torch.Tensor] = {}
    for t in specs:
        if t.kind == "continuous":
            y = cont.get(t.name, np.full(len(meta), np.nan))
            out[t.name] = torch.tensor((y - t.mean) / t.std, dtype=torch.float32)
        elif t.kind == "categorical":
            codes = {c: i for i, c in enumerate(t.classes)}
            col = _column(meta, t.name)
            values = [codes.get(str(v), -1) for v in col] if col is not None else [-1] * len(meta)
            out[t.name] = torch.tensor(values, dtype=torch.long)
        else:
            out[t.name] = torch.tensor(binary.get(t.name, np.full(len(meta), -1)), dtype=torch.long)
    return out


def objective_targets(source: object, train_meta: pd.DataFrame, saved: dict | None) -> list[PretrainTarget]:
    """The targets of a supervised objective: those of a resumed run's `saved` state, else
    `metadata_targets` of the training models' metadata; an error names the zoo `source` when none is
    found."""
    if saved is not None:
        specs = [PretrainTarget.from_dict(t) for t in saved["targets"]]
    else:
        specs = metadata_targets(train_meta)
    if not specs:
        raise InvalidInputError(
            f"zoo {source!s}: no metadata column to pretrain on (supervised pretraining needs one of "
            "test_accuracy, learning_rate, optimizer, activation, ... with two or more distinct values)"
        )
    log.info("supervised pretraining targets: %s", ", ".join(t.name for t in specs))
    return specs


__all__ = ["metadata_targets", "objective_targets", "target_tensors"]
