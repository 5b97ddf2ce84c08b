"""How much to believe each prediction: intervals, calibrated probabilities and per-target reliability.

All three are fitted after training, on splits the head never trained on, and saved with the head
(`zooprobe.heads.trust`):

- **Intervals** (continuous targets): split conformal prediction calibrated on the validation split. The
  absolute residuals ``|y - ŷ|`` of the validation models are kept (in metric space: log10 for the learning
  rate); the interval at level ``1 - a`` is ``ŷ ± q`` with ``q`` the ``ceil((n + 1)(1 - a))``-th smallest
  residual, which covers the truth with probability at least ``1 - a`` for networks drawn like the zoo's
  (unbounded when the validation split has fewer than ``1/a - 1`` models). The level is chosen at
  prediction time (default `DEFAULT_LEVEL`). Targets named ``*accuracy`` are clipped to [0, 1].
- **Calibrated probabilities** (binary and categorical targets): temperature scaling. One temperature per
  target, fitted on the validation split by minimizing the negative log-likelihood; probabilities become
  ``softmax(log p / T)`` (``sigmoid(logit p / T)``), which for the neural heads is exactly the softmax of
  their logits divided by ``T``. The most probable class never changes, so accuracy, F1 and ROC-AUC do
  not either; `expected_calibration_error` measures the effect.
- **Reliability**: the head's own test score per target (R² or accuracy). A target is *not predictable
  from this zoo* when its test R² is below `R2_MIN`, or its test accuracy is within `ACCURACY_MARGIN` of
  always answering the train split's majority class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zooprobe.heads.targets import TargetSpec, TaskSpec

DEFAULT_LEVEL = 0.9
R2_MIN = 0.1
ACCURACY_MARGIN = 0.02
MIN_CALIBRATION_MODELS = 10
"""Fewer known validation models than this: no temperature is fitted (T = 1)."""
TEMPERATURE_RANGE = (0.05, 20.0)
ECE_BINS = 10
_EPS = 1e-12


def check_level(level: float) -> float:
    """`level` if it is a valid interval level (in (0, 1)), else a ``ValueError`` saying so."""
    if not (isinstance(level, int | float) and 0.0 < float(level) < 1.0):
        raise ValueError(f"the interval level must be in (0, 1), e.g. 0.9 for 90% intervals; got {level!r}")
    return float(level)


# ------------------------------------------------------------------------------------------ primitives
def conformal_quantile(sorted_residuals: np.ndarray, level: float) -> float:
    """The split-conformal half-width at `level` (module docs); inf when there are too few residuals."""
    n = len(sorted_residuals)
    rank = math.ceil((n + 1) * check_level(level))
    return math.inf if rank > n or n == 0 else float(sorted_residuals[rank - 1])


def _logits(t: TargetSpec, probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p) if t.kind == "binary" else np.log(p)


def scale_probabilities(t: TargetSpec, probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities of a binary ([N]) or categorical ([N, C]) target at `temperature`."""
    if temperature == 1.0:
        return np.asarray(probs, dtype=np.float64)
    z = _logits(t, probs) / temperature
    if t.kind == "binary":
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _known(t: TargetSpec, truth: np.ndarray) -> np.ndarray:
    truth = np.asarray(truth)
    if t.kind == "categorical":
        return truth >= 0
    return np.isfinite(truth.astype(np.float64))


def _nll(t: TargetSpec, probs: np.ndarray, truth: np.ndarray) -> float:
    if t.kind == "binary":
        p = np.clip(probs, _EPS, 1 - _EPS)
        y = truth.astype(np.float64)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    p = np.clip(probs[np.arange(len(truth)), truth.astype(np.int64)], _EPS, 1.0)
    return float(-np.mean(np.log(p)))


def expected_calibration_error(t: TargetSpec, probs: np.ndarray, truth: np.ndarray) -> float:
    """Top-label ECE with `ECE_BINS` equal-width confidence bins over the models with a known truth (NaN
    when there is none)."""
    known = _known(t, truth)
    if not known.any():
        return math.nan
    probs, truth = np.asarray(probs, dtype=np.float64)[known], np.asarray(truth)[known]
    if t.kind == "binary":
        predicted = (probs >= 0.5).astype(np.int64)
        confidence = np.where(predicted == 1, probs, 1.0 - probs)
        correct = predicted == truth.astype(np.int64)
    else:
        predicted = probs.argmax(axis=1)
        confidence = probs.max(axis=1)
        correct = predicted == truth.astype(np.int64)
    bins = np.minimum((confidence * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    ece = 0.0
    for b in range(ECE_BINS):
        members = bins == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def fit_temperature(t: TargetSpec, probs: np.ndarray, truth: np.ndarray) -> tuple[float, str]:
    """(temperature, note) minimizing the NLL of the known validation models (T = 1 when they are fewer
    than `MIN_CALIBRATION_MODELS` or show a single class)."""
    from scipy.optimize import minimize_scalar  # heavy: scipy

    known = _known(t, truth)
    probs, labels = np.asarray(probs, dtype=np.float64)[known], np.asarray(truth)[known]
    if len(labels) < MIN_CALIBRATION_MODELS or len(np.unique(labels)) < 2:
        return 1.0, f"not fitted: {len(labels)} validation model(s) with {len(np.unique(labels))} class(es)"
    low, high = (math.log(x) for x in TEMPERATURE_RANGE)
    result = minimize_scalar(
        lambda log_t: _nll(t, scale_probabilities(t, probs, math.exp(log_t)), labels),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    temperature = float(math.exp(result.x))
    if _nll(t, scale_probabilities(t, probs, temperature), labels) > _nll(t, probs, labels):
        return 1.0, "fitted temperature did not lower the validation NLL"
    return temperature, f"fitted on {len(labels)} validation models"


# ------------------------------------------------------------------------------------------ calibration
@dataclass
class TargetCalibration:
    """The calibration of one target: sorted validation residuals (continuous) or a temperature."""

    kind: str
    residuals: np.ndarray | None = None
    bounds: tuple[float, float] | None = None
    temperature: float = 1.0
    note: str = ""
    validation_ece: tuple[float, float] | None = None
    """(before, after) temperature scaling, on the validation split."""

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "residuals": None if self.residuals is None else [float(r) for r in self.residuals],
            "bounds": None if self.bounds is None else list(self.bounds),
            "temperature": self.temperature,
            "note": self.note,
            "validation_ece": None if self.validation_ece is None else list(self.validation_ece),
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> TargetCalibration:
        residuals = data.get("residuals")
        bounds = data.get("bounds")
        ece = data.get("validation_ece")
        return cls(
            kind=str(data["kind"]),
            residuals=None if residuals is None else np.sort(np.asarray(residuals, dtype=np.float64)),
            bounds=None if bounds is None else (float(bounds[0]), float(bounds[1])),
            temperature=float(data.get("temperature", 1.0)),
            note=str(data.get("note", "")),
            validation_ece=None if ece is None else (ece[0], ece[1]),
        )


@dataclass
class Calibration:
    """Intervals and calibrated probabilities of every target of a head (module docs)."""

    targets: dict[str, TargetCalibration] = field(default_factory=dict)
    level: float = DEFAULT_LEVEL

    def apply(self, spec: TaskSpec, preds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`preds` (`Head.predict` output) with temperature-scaled probabilities."""
        out = dict(preds)
        for t in spec.targets:
            cal = self.targets.get(t.name)
            if cal is not None and t.kind != "continuous":
                out[t.name] = scale_probabilities(t, preds[t.name], cal.temperature)
        return out

    def half_width(self, name: str, level: float | None = None) -> float:
        cal = self.targets[name]
        if cal.residuals is None:
            raise ValueError(f"target {name!r} has no interval (it is not continuous)")
        return conformal_quantile(cal.residuals, self.level if level is None else level)

    def intervals(
        self, spec: TaskSpec, preds: Mapping[str, np.ndarray], level: float | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(low, high) in metric space per continuous target with a calibration (±inf: unbounded)."""
        out = {}
        for t in spec.by_kind("continuous"):
            cal = self.targets.get(t.name)
            if cal is None or cal.residuals is None or t.name not in preds:
                continue
            q = self.half_width(t.name, level)
            value = np.asarray(preds[t.name], dtype=np.float64)
            low, high = value - q, value + q
            if cal.bounds is not None and math.isfinite(q):
                low, high = np.clip(low, *cal.bounds), np.clip(high, *cal.bounds)
            out[t.name] = (low, high)
        return out

    def to_record(self) -> dict[str, Any]:
        return {"level": self.level, "targets": {k: v.to_record() for k, v in self.targets.items()}}

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(
            {str(k): TargetCalibration.from_record(v) for k, v in data["targets"].items()},
            float(data.get("level", DEFAULT_LEVEL)),
        )


def fit_calibration(
    spec: TaskSpec,
    truth: Mapping[str, np.ndarray],
    preds: Mapping[str, np.ndarray],
    level: float = DEFAULT_LEVEL,
) -> Calibration:
    """Fit the `Calibration` of a head on the validation split: `truth` in metric space (class indices with
    -1 missing, flags with NaN missing), `preds` as `Head.predict` returns them."""
    targets: dict[str, TargetCalibration] = {}
    for t in spec.targets:
        y = np.asarray(truth[t.name])
        known = _known(t, y)
        if t.kind == "continuous":
            residuals = np.abs(
                y[known].astype(np.float64) - np.asarray(preds[t.name], dtype=np.float64)[known]
            )
            residuals = np.sort(residuals[np.isfinite(residuals)])
            bounds = (0.0, 1.0) if t.name.endswith("accuracy") and not t.log10 else None
            targets[t.name] = TargetCalibration(
                "continuous", residuals, bounds, note=f"{len(residuals)} validation residuals"
            )
            continue
        p = np.asarray(preds[t.name], dtype=np.float64)
        temperature, note = fit_temperature(t, p, y)
        before = expected_calibration_error(t, p, y)
        after = expected_calibration_error(t, scale_probabilities(t, p, temperature), y)
        targets[t.name] = TargetCalibration(
            t.kind, temperature=temperature, note=note, validation_ece=(before, after)
        )
    return Calibration(targets, check_level(level))


def interval_coverage(truth: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """(share of models with a known truth inside [low, high], mean width); NaN when none is known."""
    y = np.asarray(truth, dtype=np.float64)
    known = np.isfinite(y)
    if not known.any():
        return math.nan, math.nan
    inside = (low[known] <= y[known]) & (y[known] <= high[known])
    width = high[known] - low[known]
    return float(inside.mean()), float(width.mean()) if np.isfinite(width).all() else math.inf


# ------------------------------------------------------------------------------------------ reliability
@dataclass
class Reliability:
    """A target's test score and whether the zoo makes it predictable (module docs)."""

    metric: str
    test: float | None
    majority: float | None = None
    predictable: bool | None = None
    """None: the test score is undefined (a single class, too few models)."""

    def describe(self) -> str:
        """E.g. ``test R² 0.61`` or ``test accuracy 0.55 (majority class 0.30)``."""
        name = "R²" if self.metric == "r2" else self.metric
        if self.test is None:
            return f"test {name} undefined"
        text = f"test {name} {self.test:.2f}"
        if self.majority is not None:
            text += f" (majority class {self.majority:.2f})"
        return text

    def to_record(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "test": self.test,
            "majority": self.majority,
            "predictable": self.predictable,
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Reliability:
        return cls(str(data["metric"]), data.get("test"), data.get("majority"), data.get("predictable"))


def _finite_or_none(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def reliability(
    spec: TaskSpec,
    train_truth: Mapping[str, np.ndarray],
    test_truth: Mapping[str, np.ndarray],
    test_preds: Mapping[str, np.ndarray],
) -> dict[str, Reliability]:
    """Per target: the test R² (continuous) or accuracy and majority-class accuracy (discrete), and
    whether that makes it predictable (module docs). Truths in metric space, predictions as
    `Head.predict` returns them."""
    out: dict[str, Reliability] = {}
    for t in spec.targets:
        y = np.asarray(test_truth[t.name])
        known = _known(t, y)
        if t.kind == "continuous":
            r2 = math.nan
            if known.sum() >= 2:
                yk = y[known].astype(np.float64)
                pk = np.asarray(test_preds[t.name], dtype=np.float64)[known]
                ss_tot = float(((yk - yk.mean()) ** 2).sum())
                if ss_tot > 0:
                    r2 = 1.0 - float(((yk - pk) ** 2).sum()) / ss_tot
            score = _finite_or_none(r2)
            out[t.name] = Reliability("r2", score, None, None if score is None else score >= R2_MIN)
            continue
        train = np.asarray(train_truth[t.name])
        train_known = train[_known(t, train)].astype(np.int64)
        if not known.any() or len(train_known) == 0:
            out[t.name] = Reliability("accuracy", None)
            continue
        majority_class = int(np.bincount(train_known).argmax())
        labels = y[known].astype(np.int64)
        probs = np.asarray(test_preds[t.name], dtype=np.float64)[known]
        predicted = (probs >= 0.5).astype(np.int64) if t.kind == "binary" else probs.argmax(axis=1)
        accuracy = float((predicted == labels).mean())
        majority = float((labels == majority_class).mean())
        out[t.name] = Reliability("accuracy", accuracy, majority, accuracy > majority + ACCURACY_MARGIN)
    return out


__all__ = [
    "ACCURACY_MARGIN",
    "DEFAULT_LEVEL",
    "R2_MIN",
    "Calibration",
    "Reliability",
    "TargetCalibration",
    "check_level",
    "conformal_quantile",
    "expected_calibration_error",
    "fit_calibration",
    "fit_temperature",
    "interval_coverage",
    "reliability",
    "scale_probabilities",
]
