"""The evaluator: scoring a head on a split with the task's metrics (`zooprobe.metrics`).

`evaluate_predictions` scores predictions against targets; `evaluate_split` runs a model on a split and
scores it (`predict_split` gathers predictions across torchrun processes); `evaluate_run` re-scores a
trained head on a zoo; `metric_names` lists a task's metrics (from the same code, so the two cannot drift)
and `check_monitor` checks an early-stopping metric against them.

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
import torch

from zooprobe.core.device import autocast
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.heads.encoder_with_head import EncoderWithHead
from zooprobe.heads.head_loader import LoadedHead
from zooprobe.heads.targets import TargetArrays, TaskSpec, target_arrays
from zooprobe.metrics import (
    classification_metrics,
    hyperparameter_aggregate,
    pattern_metrics,
    regression_metrics,
    undefined_metrics,
)
from zooprobe.training import distributed as D
from zooprobe.training.config import TrainConfig
from zooprobe.training.data_loader import SplitData, model_inputs, prepare_data, split_targets
from zooprobe.zoo.store import Zoo

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
        {t.name: np.zeros(0, dtype=np.int64 if t.kind == "categorical" else np.float64) for t in spec.targets}
    )
    predictions = {
        t.name: np.zeros((0, len(t.classes)) if t.kind == "categorical" else 0) for t in spec.targets
    }
    keys = evaluate_predictions(spec, targets, predictions)
    return ["loss", *(k for k in keys if k not in ("loss", "n", "n_undefined"))]


def check_monitor(monitor: str, spec: TaskSpec) -> None:
    """``stop.monitor`` must be a validation metric of the task (`metric_names`)."""
    names = metric_names(spec)
    if monitor not in names:
        raise ConfigError(
            f"stop.monitor {monitor!r} is not a validation metric of task {spec.task!r}; choose one of "
            f"{', '.join(names)}"
        )


# ------------------------------------------------------------------------------------ a model on a split
class NonFiniteOutputError(InvalidInputError):
    """A head produced NaN or inf for some models (diverged weights, or inputs far outside the zoo)."""


@torch.no_grad()
def predict_split(
    model: EncoderWithHead, split: SplitData, device: torch.device, cfg: TrainConfig, info: D.DistInfo
) -> tuple[dict[str, np.ndarray], float]:
    """Raw outputs of every row of `split` (gathered over ranks, no duplicates) and the weighted loss."""
    was_training = model.training
    model.eval()
    rows = np.arange(len(split))[info.rank :: info.world_size]
    raw: dict[str, list[np.ndarray]] = {t.name: [] for t in model.head.spec.targets}
    step = max(cfg.optim.batch_size, 256) if model.frozen else cfg.optim.batch_size
    try:
        for s in range(0, len(rows), step):
            index = rows[s : s + step]
            with autocast(device, cfg.amp):
                out = model(**model_inputs(model, split, index, device, cfg))
            for name, v in out.items():
                raw[name].append(v.float().cpu().numpy())
    finally:
        model.train(was_training)
    mine = {k: (np.concatenate(v) if v else None) for k, v in raw.items()}
    gathered = D.all_gather_objects(info, (rows, mine))
    order = np.concatenate([g[0] for g in gathered])
    full: dict[str, np.ndarray] = {}
    for name in raw:
        parts = [g[1][name] for g in gathered if g[1][name] is not None]
        values = np.concatenate(parts)
        out_arr = np.empty_like(values)
        out_arr[order] = values
        full[name] = out_arr
    targets = split_targets(split, np.arange(len(split)), torch.device("cpu"))
    loss, _ = model.head.loss({k: torch.from_numpy(v) for k, v in full.items()}, targets)
    return full, float(loss)


def evaluate_split(
    model: EncoderWithHead, split: SplitData, device: torch.device, cfg: TrainConfig, info: D.DistInfo
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(metrics including the loss, predictions in metric space) of `model` on every row of `split`."""
    raw, loss = predict_split(model, split, device, cfg, info)
    bad = {name: int((~np.isfinite(v)).sum()) for name, v in raw.items() if not np.isfinite(v).all()}
    if bad:
        raise NonFiniteOutputError(
            f"the head's outputs are non-finite (NaN or inf) for {max(bad.values())} of {len(split)} "
            f"{split.name} models (targets: {', '.join(sorted(bad))})"
        )
    preds = model.head.predict(raw)
    metrics = {"loss": loss, **evaluate_predictions(model.head.spec, split.targets, preds)}
    return metrics, preds


def evaluate_run(cfg: TrainConfig, head: LoadedHead, zoo: Zoo, split: str = "test") -> dict[str, float]:
    """Metrics of a trained head on `split` of `zoo` (`zooprobe.evaluate` loads a run folder's head and
    zoo). Targets are normalized with the head's own statistics (fitted on its training zoo), never
    refitted."""
    data = prepare_data(cfg, head.model.loaded, zoo, progress=False)
    if data.spec.names != head.spec.names:
        raise InvalidInputError(
            f"the zoo's targets {data.spec.names} differ from the head's {head.spec.names}"
        )
    data.splits[split].targets = target_arrays(head.spec, data.splits[split].meta)
    metrics, _ = evaluate_split(head.model, data.splits[split], torch.device("cpu"), cfg, D.DistInfo())
    return metrics


__all__ = [
    "LOWER_IS_BETTER",
    "NonFiniteOutputError",
    "check_monitor",
    "evaluate_predictions",
    "evaluate_run",
    "evaluate_split",
    "lower_is_better",
    "metric_names",
    "metric_space_targets",
    "predict_split",
]
