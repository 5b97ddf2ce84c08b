"""Prediction targets built from zoo metadata: what each task predicts and how it is scored.

A task is a `TaskSpec`: an ordered list of `TargetSpec`, each naming one metadata column and its kind:

- ``binary``: a pattern flag (``has_conv_layers``...): 0/1, a missing value is NaN;
- ``continuous``: a number (``test_accuracy``, ``learning_rate``...), optionally modelled in log10 space
  (``log10``; values are clipped below at ``log_floor`` first, so an exact 0 weight decay becomes
  ``log10(log_floor)``, which is documented in the spec and in the head's config) and standardized with the
  train split's mean and std (``mean``, ``std``; heads predict standardized values);
- ``categorical``: a class (``optimizer``...), its vocabulary fitted on the train split and stored with
  the head; a missing value, or a class the train split never showed, is -1.

Missing values are masked out of losses and metrics, never filled: `TargetArrays` keeps NaN / -1 and
`count_missing` reports them. Metrics for continuous targets are computed in the space users think in:
log10 for log targets (log10 learning rate), the raw value otherwise.

Which targets are usable is decided on the train split (`resolve_targets`): a target the user named
explicitly must exist, suit the task (patterns are boolean columns, the accuracy head regresses a number)
and have at least two distinct values in the train split, otherwise it is an error. A default target that
is empty or constant in the train split is left out with a warning naming it and why (a head trained on
one class would report a perfect, meaningless score).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.heads.config import TASKS

Task = Literal["patterns", "accuracy", "hyperparameters"]
TargetKind = Literal["binary", "continuous", "categorical"]

#: Default targets per task (used when the config does not list them; those absent from a zoo are skipped).
DEFAULT_CONTINUOUS = ("learning_rate", "weight_decay")
DEFAULT_DISCRETE = ("optimizer", "activation", "init", "family")
LOG_TARGETS = {"learning_rate": 1e-8, "weight_decay": 1e-7}
"""Continuous hyperparameters modelled in log10 space by default, with their floor (0 -> floor)."""
NOT_TARGETS = ("model_id", "split", "weights")
"""Columns that are never targets (identifiers and the weights themselves)."""


@dataclass(frozen=True)
class TargetSpec:
    """One predicted quantity (see the module docs). Serialized into the head's config."""

    name: str
    kind: TargetKind
    log10: bool = False
    log_floor: float = 1e-8
    mean: float = 0.0
    std: float = 1.0
    classes: tuple[str, ...] = ()
    weight: float = 1.0
    bounded: bool = False
    """Continuous only: the head predicts through a sigmoid, in [0, 1], without standardization."""

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.kind == "categorical" else 1

    def to_model_space(self, values: np.ndarray) -> np.ndarray:
        """User values -> what the head regresses (log10, then standardized unless bounded)."""
        x = self.to_metric_space(values)
        return x if self.bounded else (x - self.mean) / self.std

    def to_metric_space(self, values: np.ndarray) -> np.ndarray:
        """User values -> the space metrics are computed in (log10 for log targets)."""
        x = np.asarray(values, dtype=np.float64)
        if self.log10:
            with np.errstate(invalid="ignore"):
                x = np.log10(np.maximum(x, self.log_floor))
        return x

    def from_model_space(self, values: np.ndarray) -> np.ndarray:
        """Head outputs -> metric space (inverse of the standardization)."""
        x = np.asarray(values, dtype=np.float64)
        return x if self.bounded else x * self.std + self.mean

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown or "name" not in data or "kind" not in data:
            raise ConfigError(f"target spec: unknown fields {unknown} or missing name/kind in {dict(data)}")
        kwargs = dict(data)
        kwargs["classes"] = tuple(str(c) for c in kwargs.get("classes", ()))
        if kwargs["kind"] not in ("binary", "continuous", "categorical"):
            raise ConfigError(f"target {kwargs['name']!r}: unknown kind {kwargs['kind']!r}")
        return cls(**kwargs)


@dataclass(frozen=True)
class TaskSpec:
    """A task and its targets, in output order."""

    task: str
    targets: tuple[TargetSpec, ...]

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not self.targets:
            raise ConfigError(f"task {self.task!r} has no targets")

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def by_kind(self, kind: str) -> list[TargetSpec]:
        return [t for t in self.targets if t.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "targets": [t.to_dict() for t in self.targets]}

    def label(self, preds: Mapping[str, np.ndarray], index: Sequence[str] | None = None) -> pd.DataFrame:
        """Predictions as `LoadedHead.predict` returns them (probabilities; continuous targets in metric
        space), as a table a user reads: one row per model and, per target,

        - binary: ``NAME`` (True/False) and ``NAME_probability``;
        - categorical: ``NAME`` (the class name), ``NAME_probability`` (its probability) and one
          ``P(NAME=CLASS)`` column per class;
        - continuous: ``NAME`` in the units of the zoo's metadata (a fraction for accuracies; ``10**x`` for
          targets modelled in log10, such as the learning rate) and, for those, ``NAME_log10``.
        """
        columns: dict[str, Any] = {}
        for t in self.targets:
            v = np.asarray(preds[t.name], dtype=np.float64)
            if t.kind == "binary":
                columns[t.name] = v >= 0.5
                columns[f"{t.name}_probability"] = v
            elif t.kind == "categorical":
                best = v.argmax(axis=1)
                columns[t.name] = [t.classes[i] for i in best]
                columns[f"{t.name}_probability"] = v[np.arange(len(v)), best]
                for j, cls in enumerate(t.classes):
                    columns[f"P({t.name}={cls})"] = v[:, j]
            elif t.log10:
                columns[t.name] = np.power(10.0, v)
                columns[f"{t.name}_log10"] = v
            else:
                columns[t.name] = v
        return pd.DataFrame(columns, index=list(index) if index is not None else None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        if not isinstance(data, Mapping) or "task" not in data or "targets" not in data:
            raise ConfigError(f"task spec needs 'task' and 'targets', got {data!r}")
        return cls(str(data["task"]), tuple(TargetSpec.from_dict(t) for t in data["targets"]))


@dataclass
class TargetArrays:
    """Targets of N models in model space: ``values[name]`` is float64 [N] (NaN = missing) for binary and
    continuous targets, int64 [N] (-1 = missing or unseen class) for categorical ones."""

    values: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else 0

    def subset(self, index: np.ndarray | Sequence[int]) -> TargetArrays:
        idx = np.asarray(index, dtype=np.int64)
        return TargetArrays({k: v[idx] for k, v in self.values.items()})


# ------------------------------------------------------------------------------------------ building
def _is_bool_column(series: pd.Series) -> bool:
    non_null = series.dropna()
    if len(non_null) == 0:
        return False
    if series.dtype == bool or str(series.dtype) == "boolean":
        return True
    return bool(non_null.map(lambda v: isinstance(v, bool | np.bool_)).all())


def _is_number_column(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series.dtype)) and not _is_bool_column(series)


def valid_targets(task: str, meta: pd.DataFrame) -> list[str]:
    """Columns of `meta` that `task` can predict: boolean columns (patterns), numeric columns (accuracy),
    any column but identifiers and weights (hyperparameters)."""
    columns = [str(c) for c in meta.columns if c not in NOT_TARGETS and not str(c).startswith("_")]
    if task == "patterns":
        return [c for c in columns if _is_bool_column(meta[c])]
    if task == "accuracy":
        return [c for c in columns if _is_number_column(meta[c])]
    return columns


def _show(value: Any) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _train_problem(name: str, series: pd.Series) -> str | None:
    """Why a column cannot be fitted on the train split (no values, a single value), or None."""
    values = series.dropna()
    if len(values) == 0:
        return f"no values in the train split ({len(series)} models)"
    distinct = values.astype(str).unique()
    if len(distinct) < 2:
        return f"a single value ({_show(values.iloc[0])}) in all {len(values)} train models with a value"
    return None


def _kind_problem(task: str, series: pd.Series) -> str | None:
    """Why a column does not suit `task`, or None."""
    values = series.dropna()
    if task == "patterns" and len(values) and not _is_bool_column(series):
        return f"patterns are boolean columns, it holds {series.dtype} values such as {_show(values.iloc[0])}"
    if task == "accuracy" and len(values) and not _is_number_column(series):
        return f"the accuracy head regresses a number, it holds values such as {_show(values.iloc[0])}"
    return None


@dataclass(frozen=True)
class TargetSelection:
    """The targets a task will use (`names`) and the default targets left out (`dropped`: name -> why)."""

    names: list[str]
    dropped: dict[str, str] = field(default_factory=dict)

    def warning(self, task: str) -> str:
        """The message for the left-out default targets ("" when none was left out)."""
        if not self.dropped:
            return ""
        shown = "; ".join(f"{name!r}: {why}" for name, why in self.dropped.items())
        return (
            f"task {task!r}: default target(s) left out because the train split cannot fit them ({shown}); "
            "their metrics are not reported. Name targets with --targets to choose others"
        )


def resolve_targets(
    task: str, train_meta: pd.DataFrame, targets: Sequence[str] | None = None
) -> TargetSelection:
    """Which targets `task` uses on a zoo with this train split (see the module docs).

    Explicit `targets`: an unknown column is an `InvalidInputError`, a column that does not suit the task a
    `ConfigError` listing the task's valid targets, a column that is empty or constant in the train split
    an `InvalidInputError`. Default targets: those that are empty or constant in the train split (or,
    for patterns, not boolean) are left out (`TargetSelection.dropped`); none left is an error.
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    columns = [str(c) for c in train_meta.columns]
    if targets:
        names = [str(n) for n in targets]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"targets: {repeated} listed more than once")
        missing = [n for n in names if n not in columns]
        if missing:
            raise InvalidInputError(
                f"task {task!r}: target(s) {missing} are not zoo fields; fields: {columns}"
            )
        for name in names:
            problem = _kind_problem(task, train_meta[name]) if name not in NOT_TARGETS else "an identifier"
            if problem:
                raise ConfigError(
                    f"target {name!r} cannot be predicted by task {task!r} ({problem}); valid targets of "
                    f"task {task!r} in this zoo: {', '.join(valid_targets(task, train_meta)) or 'none'}"
                )
        for name in names:
            problem = _train_problem(name, train_meta[name])
            if problem:
                raise InvalidInputError(
                    f"task {task!r}: target {name!r} has {problem}: a head cannot learn it and its metrics "
                    "would be meaningless; drop it from --targets, or use a zoo whose train split varies"
                )
        return TargetSelection(names)
    candidates = _default_candidates(task, columns, train_meta)
    kept: list[str] = []
    dropped: dict[str, str] = {}
    for name in candidates:
        problem = _kind_problem(task, train_meta[name]) or _train_problem(name, train_meta[name])
        if problem:
            dropped[name] = problem
        else:
            kept.append(name)
    if not kept:
        shown = "; ".join(f"{name!r}: {why}" for name, why in dropped.items())
        raise InvalidInputError(
            f"task {task!r}: none of the default targets can be fitted on the train split ({shown}); pass "
            "targets explicitly or use another zoo"
        )
    return TargetSelection(kept, dropped)


def _default_candidates(task: str, columns: Sequence[str], meta: pd.DataFrame) -> list[str]:
    if task == "patterns":
        names = [c for c in columns if c.startswith("has_")]
        if not names:
            raise InvalidInputError(
                "task 'patterns': the zoo has no boolean has_* columns (has_conv_layers, has_batch_norm, "
                "...); import the zoo with pattern flags or choose another task"
            )
        return names
    if task == "accuracy":
        if "test_accuracy" not in columns:
            raise InvalidInputError("task 'accuracy': the zoo has no test_accuracy column")
        return ["test_accuracy"]
    names = [c for c in (*DEFAULT_CONTINUOUS, *DEFAULT_DISCRETE) if c in columns]
    if not names:
        raise InvalidInputError(
            "task 'hyperparameters': the zoo has none of the default targets "
            f"{[*DEFAULT_CONTINUOUS, *DEFAULT_DISCRETE]}; pass targets explicitly"
        )
    return names


def default_targets(task: str, columns: Sequence[str], meta: pd.DataFrame) -> list[str]:
    """Target names of `task` available in a zoo with these metadata `columns` (`resolve_targets`' default
    choice; `meta` is the train split)."""
    return resolve_targets(task, meta[list(columns)]).names


def _infer_kind(task: str, name: str, series: pd.Series) -> TargetKind:
    if task == "patterns":
        return "binary"
    if task == "accuracy":
        return "continuous"
    # The field notes' pitfall: never infer "regression" from an int/bool dtype. Strings and bools are
    # classes; so are integer columns with few distinct values (batch_size, depth, width).
    non_null = series.dropna()
    if series.dtype == object or _is_bool_column(series) or str(series.dtype) in ("string", "category"):
        return "categorical"
    if pd.api.types.is_integer_dtype(series.dtype) and non_null.nunique() <= 16:
        return "categorical"
    if pd.api.types.is_numeric_dtype(series.dtype):
        return "continuous"
    return "categorical"


def build_task_spec(
    task: str,
    train_meta: pd.DataFrame,
    targets: Sequence[str] | None = None,
    *,
    log_targets: Mapping[str, float] | None = None,
    loss_weights: Mapping[str, float] | None = None,
    bounded_accuracy: bool = False,
) -> TaskSpec:
    """Fit a task's targets on the train split's metadata (vocabularies, standardization statistics).

    `targets` overrides the default target list; `log_targets` maps continuous target names to their log
    floor (default: `LOG_TARGETS`); `loss_weights` weights each target's loss (default 1).
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if len(train_meta) == 0:
        raise InvalidInputError("the train split is empty: no models to fit the targets on")
    selection = resolve_targets(task, train_meta, targets)
    if selection.dropped:
        warnings.warn(selection.warning(task), stacklevel=2)
    names = selection.names
    logs = dict(LOG_TARGETS if log_targets is None else log_targets)
    weights = check_loss_weights(loss_weights, names, selection.dropped)
    specs: list[TargetSpec] = []
    for name in names:
        series = train_meta[name]
        kind = _infer_kind(task, name, series)
        base = TargetSpec(name=name, kind=kind, weight=float(weights.get(name, 1.0)))
        if kind == "binary":
            values = series.dropna()
            if not values.map(lambda v: v in (0, 1, True, False)).all():
                raise InvalidInputError(f"pattern {name!r} has non-boolean values")
            specs.append(base)
        elif kind == "categorical":
            classes = sorted({str(v) for v in series.dropna()}, key=_class_order)
            if not classes:
                raise InvalidInputError(f"target {name!r} has no values in the train split")
            specs.append(replace(base, classes=tuple(classes)))
        else:
            log = name in logs
            spec = replace(base, log10=log, log_floor=float(logs.get(name, 1e-8)))
            if task == "accuracy" and bounded_accuracy:
                specs.append(replace(spec, bounded=True))
                continue
            x = spec.to_metric_space(series.to_numpy(dtype=np.float64, na_value=np.nan))
            x = x[np.isfinite(x)]
            if len(x) == 0:
                raise InvalidInputError(f"target {name!r} has no values in the train split")
            std = float(x.std()) if len(x) > 1 else 0.0
            specs.append(replace(spec, mean=float(x.mean()), std=std if std > 1e-12 else 1.0))
    return TaskSpec(task, tuple(specs))


def check_loss_weights(
    loss_weights: Mapping[str, Any] | None, names: Sequence[str], dropped: Mapping[str, str] | None = None
) -> dict[str, float]:
    """`loss_weights` checked against the task's targets `names`: known targets only, finite and >= 0, not
    all 0. A `ConfigError` says which weight is wrong and lists the targets."""
    weights = dict(loss_weights or {})
    for name, value in weights.items():
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0:
            raise ConfigError(
                f"loss_weights[{name!r}] is {value!r}: a loss weight must be a finite number >= 0 (0 ignores "
                "the target)"
            )
    unknown = sorted(set(weights) - set(names))
    if unknown:
        left_out = [n for n in unknown if n in (dropped or {})]
        note = f"; left out for this zoo: {left_out}" if left_out else ""
        raise ConfigError(
            f"loss_weights name(s) {unknown} that are not targets of this task; its targets: "
            f"{list(names)}{note}"
        )
    if names and all(float(weights.get(n, 1.0)) == 0 for n in names):
        raise ConfigError("loss_weights: every target's weight is 0, so nothing would be trained")
    return {k: float(v) for k, v in weights.items()}


def _class_order(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def target_arrays(spec: TaskSpec, meta: pd.DataFrame) -> TargetArrays:
    """Targets of the rows of `meta` in model space (see `TargetArrays`)."""
    out: dict[str, np.ndarray] = {}
    for t in spec.targets:
        if t.name not in meta.columns:
            out[t.name] = (
                np.full(len(meta), -1, dtype=np.int64)
                if t.kind == "categorical"
                else np.full(len(meta), np.nan)
            )
            continue
        col = meta[t.name]
        if t.kind == "categorical":
            lookup = {c: i for i, c in enumerate(t.classes)}
            out[t.name] = np.array(
                [lookup.get(str(v), -1) if not _missing(v) else -1 for v in col], dtype=np.int64
            )
        elif t.kind == "binary":
            out[t.name] = np.array([np.nan if _missing(v) else float(bool(v)) for v in col])
        else:
            raw = col.to_numpy(dtype=np.float64, na_value=np.nan)
            out[t.name] = t.to_model_space(raw)
    return TargetArrays(out)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def count_missing(spec: TaskSpec, arrays: TargetArrays) -> dict[str, int]:
    """Missing (or unseen-class) entries per target."""
    counts = {}
    for t in spec.targets:
        v = arrays.values[t.name]
        counts[t.name] = int((v < 0).sum()) if t.kind == "categorical" else int(np.isnan(v).sum())
    return counts


__all__ = [
    "NOT_TARGETS",
    "TASKS",
    "TargetArrays",
    "TargetSelection",
    "TargetSpec",
    "TaskSpec",
    "build_task_spec",
    "check_loss_weights",
    "count_missing",
    "default_targets",
    "resolve_targets",
    "target_arrays",
    "valid_targets",
]
