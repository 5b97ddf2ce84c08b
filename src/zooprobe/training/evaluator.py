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

Uncertainty and domain (`uncertainty_metrics`, added to a trained head's test metrics and to ``zooprobe
evaluate``'s): ``coverage`` and ``interval_width`` of the default-level conformal intervals (accuracy;
``<target>/coverage`` and ``<target>/interval_width`` for continuous hyperparameters, width in metric
space: log10 for the learning rate), ``<target>/ece`` for binary and discrete targets (after temperature
scaling; patterns also ``macro_ece``), and ``in_domain``: the share of the split's models inside the head's
applicability domain. `fit_trust` fits the domain, the calibration and the reliability after training.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from zooprobe.core.device import autocast
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.heads.domain import ApplicabilityDomain, fit_domain
from zooprobe.heads.encoder_with_head import EncoderWithHead
from zooprobe.heads.head_loader import LoadedHead
from zooprobe.heads.targets import TargetArrays, TaskSpec, target_arrays
from zooprobe.heads.trust import Trust
from zooprobe.heads.uncertainty import (
    Calibration,
    expected_calibration_error,
    fit_calibration,
    interval_coverage,
    reliability,
)
from zooprobe.metrics import (
    classification_metrics,
    hyperparameter_aggregate,
    pattern_metrics,
    regression_metrics,
    undefined_metrics,
)
from zooprobe.training import distributed as D
from zooprobe.training.config import TrainConfig
from zooprobe.training.data_loader import (
    RunData,
    SplitData,
    memory_budget,
    model_inputs,
    prepare_data,
    split_targets,
    tokenized_chunks,
)
from zooprobe.zoo.store import Zoo

#: Metrics where lower is better (early stopping and reports use this to pick a direction).
LOWER_IS_BETTER = (
    "loss",
    "mse",
    "mae",
    "rmse",
    "relative_error",
    "hamming_loss",
    "ece",
    "macro_ece",
    "interval_width",
)


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
    zoo), with its interval coverage, ECE and share in domain when the head has them (`uncertainty_metrics`).
    Targets are normalized with the head's own statistics (fitted on its training zoo), never refitted."""
    data = prepare_data(cfg, head.model.loaded, zoo, progress=False)
    if data.spec.names != head.spec.names:
        raise InvalidInputError(
            f"the zoo's targets {data.spec.names} differ from the head's {head.spec.names}"
        )
    part = data.splits[split]
    part.targets = target_arrays(head.spec, part.meta)
    device = torch.device("cpu")
    metrics, preds = evaluate_split(head.model, part, device, cfg, D.DistInfo())
    trust = head.trust
    if trust is not None and trust.calibration is not None:
        truth = metric_space_targets(head.spec, part.targets)
        calibrated = trust.calibration.apply(head.spec, preds)
        metrics.update(uncertainty_metrics(head.spec, truth, calibrated, trust.calibration))
    if trust is not None and trust.domain is not None:
        reps = split_representations(head.model, part, device, cfg)
        metrics["in_domain"] = domain_share(trust.domain, part, reps)
    return metrics


# ------------------------------------------------------------------------------------ uncertainty, domain
def uncertainty_metrics(
    spec: TaskSpec,
    truth: Mapping[str, np.ndarray],
    calibrated: Mapping[str, np.ndarray],
    calibration: Calibration,
    level: float | None = None,
) -> dict[str, float]:
    """Coverage and mean width of the intervals, ECE of the calibrated probabilities (module docs) of
    predictions against `truth` (both in metric space)."""
    out: dict[str, float] = {}
    intervals = calibration.intervals(spec, calibrated, level)
    eces = []
    for t in spec.targets:
        prefix = "" if spec.task == "accuracy" else f"{t.name}/"
        if t.kind == "continuous":
            if t.name in intervals:
                low, high = intervals[t.name]
                coverage, width = interval_coverage(truth[t.name], low, high)
                out[f"{prefix}coverage"], out[f"{prefix}interval_width"] = coverage, width
        else:
            ece = expected_calibration_error(t, calibrated[t.name], truth[t.name])
            out[f"{prefix}ece"] = ece
            eces.append(ece)
    if spec.task == "patterns":
        defined = [e for e in eces if np.isfinite(e)]
        out["macro_ece"] = float(np.mean(defined)) if defined else float("nan")
    return out


@torch.no_grad()
def split_representations(
    model: EncoderWithHead, split: SplitData, device: torch.device, cfg: TrainConfig
) -> np.ndarray:
    """The pooled representations [N, D] (float64) the head reads for every model of `split`: the cached
    ones in frozen mode, otherwise encoded now with the (fine-tuned) encoder, in chunks of at most 2048 models
    and ``cfg.weights_memory_mb`` of weights (`tokenized_chunks`; read from the zoo when the split is
    streamed)."""
    if model.frozen and split.reps is not None:
        return split.reps.pooled.double().cpu().numpy()
    was_training = model.training
    model.eval()
    try:
        parts = [
            model.loaded.embed(tms, cfg.encode_batch_size).pooled.double().cpu()
            for tms in tokenized_chunks(model.loaded, split, memory_budget(cfg))
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts).numpy() if parts else np.zeros((0, model.loaded.latent_dim))


def domain_share(domain: ApplicabilityDomain, split: SplitData, reps: np.ndarray) -> float:
    """The share of `split`'s models inside `domain` (NaN for an empty split)."""
    if not len(split):
        return float("nan")
    assert split.features is not None and split.architectures is not None
    features = {"statistics": split.features, "representation": reps, "raw_statistics": split.raw_features}
    checks = domain.check(split.architectures, features)
    return float(np.mean([c.in_domain for c in checks]))


def fit_trust(
    model: EncoderWithHead,
    data: RunData,
    preds: Mapping[str, Mapping[str, np.ndarray]],
    device: torch.device,
    cfg: TrainConfig,
) -> tuple[Trust, dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """A trained head's `Trust`: calibration on the validation split, reliability from the test split, the
    applicability domain from the train split (its thresholds from train and validation). `preds` are the
    head's predictions (`Head.predict`) per split (``validation``, ``test``). Returns the trust, the
    calibrated predictions per split and the test metrics it adds (`uncertainty_metrics`, ``in_domain``)."""
    spec = data.spec
    truth = {name: metric_space_targets(spec, split.targets) for name, split in data.splits.items()}
    calibration = fit_calibration(spec, truth["validation"], preds["validation"])
    calibrated = {name: calibration.apply(spec, p) for name, p in preds.items()}
    rel = reliability(spec, truth["train"], truth["test"], calibrated["test"])
    reps = {name: split_representations(model, split, device, cfg) for name, split in data.splits.items()}

    def features(name: str) -> dict[str, np.ndarray]:
        assert data.splits[name].features is not None
        split = data.splits[name]
        return {
            "statistics": split.features,
            "representation": reps[name],
            "raw_statistics": split.raw_features,
        }

    train = data.splits["train"]
    assert train.architectures is not None
    domain = fit_domain(  # the accuracy depends on the task: a network of an unseen one is outside
        train.architectures,
        features("train"),
        features("validation"),
        tasks=spec.task == "accuracy",
        folded=train.folded_features,
    )
    shares = {name: domain_share(domain, data.splits[name], reps[name]) for name in ("validation", "test")}
    domain.summary = {f"{name}_in_domain": share for name, share in shares.items()}
    extra = uncertainty_metrics(spec, truth["test"], calibrated["test"], calibration)
    extra["in_domain"] = shares["test"]
    return Trust(domain, calibration, rel), calibrated, extra


__all__ = [
    "LOWER_IS_BETTER",
    "NonFiniteOutputError",
    "check_monitor",
    "domain_share",
    "evaluate_predictions",
    "evaluate_run",
    "evaluate_split",
    "fit_trust",
    "lower_is_better",
    "metric_names",
    "metric_space_targets",
    "predict_split",
    "split_representations",
    "uncertainty_metrics",
]
