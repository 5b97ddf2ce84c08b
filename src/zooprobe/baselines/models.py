"""Baseline predictors of one target, fit on fixed train / validation splits: gbm, linear, floor.

`fit_baseline` is what a benchmark calls once per target, on *identical* train / validation / test splits
given as numpy arrays (rows = models, split by model, never by checkpoint):

- ``"gbm"``: LightGBM (``LGBMRegressor`` / ``LGBMClassifier``) fit on the train split, early-stopped on
  the **validation** split (Unterthiner et al.'s released notebook early-stops on the test split; this
  never does). Defaults suit a few hundred to a few thousand samples (`GBM_DEFAULTS`).
- ``"linear"``: ``StandardScaler`` + ``RidgeCV`` (alphas 10^-3..10^3, chosen by RidgeCV's efficient
  leave-one-out on the train split) for continuous targets; ``StandardScaler`` + ``LogisticRegression``
  with C chosen on the validation split (highest accuracy, ties broken by lower log loss) for
  classification.
- ``"floor"``: the train mean (continuous) or the train class frequencies, predicting the majority class
  (smallest label on ties).

The validation split is used for early stopping and model selection only, and no model is refit on
train + validation; the test split never enters `fit_baseline`: score it with ``.predict`` /
``.predict_proba`` afterwards.

Targets: continuous ``y`` is float with NaN = missing; categorical / binary ``y`` holds integer labels
(>= 0) with -1 = missing (a float array may also use NaN; a bool array has no missing values). Rows with a
missing target are dropped from fitting and from validation; validation rows whose label never occurs in
training are dropped too (no model can predict them; LightGBM cannot encode them), and ``info`` reports the
counts. A constant continuous training target or a single-class training target gives a constant
predictor (``info["constant"] = True``) for every method: there is nothing to learn and LightGBM's
classifier refuses one class.

Hyperparameters-as-input reference
----------------------------------
The reference "how much do the training hyperparameters alone tell about test accuracy" (R² 0.92-0.935 in
Unterthiner et al.) is ``fit_baseline("gbm", "continuous", ...)`` on a metadata matrix instead of weight
statistics: `MetadataEncoder` (fit on the train split's metadata frame) turns zoo columns such as
``optimizer``, ``activation``, ``init`` (strings -> one-hot over the train vocabulary), ``learning_rate``,
``weight_decay`` (positive floats spread over decades -> log10), ``dropout``, ``batch_size``, ``epochs``
(numbers as they are) and ``has_batch_norm`` (bools -> 0/1) into that matrix.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

Method = Literal["gbm", "linear", "floor"]
Kind = Literal["continuous", "categorical", "binary"]
METHODS: tuple[str, ...] = ("gbm", "linear", "floor")
KINDS: tuple[str, ...] = ("continuous", "categorical", "binary")

GBM_DEFAULTS: dict[str, Any] = {
    "n_estimators": 2000,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 10,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "n_jobs": 1,  # a few thousand rows: a second OpenMP thread was 3-5x slower on this 2-core machine
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
"""LightGBM parameters of ``"gbm"`` (``random_state`` is the ``seed`` argument); ``gbm_params`` overrides."""
EARLY_STOPPING_ROUNDS = 100
"""Rounds without improvement of the validation loss (l2 / log loss) before LightGBM stops."""
NO_VALIDATION_ROUNDS = 200
"""Boosting rounds of ``"gbm"`` when no validation row is usable (no early stopping possible)."""
RIDGE_ALPHAS = np.logspace(-3, 3, 13)
LOGISTIC_CS = np.logspace(-3, 3, 7)


def ridge_pipeline() -> Any:
    """StandardScaler + RidgeCV over `RIDGE_ALPHAS` (leave-one-out choice of the penalty): the linear
    baseline, and the linear probe of the encoder benchmark."""
    from sklearn.linear_model import RidgeCV  # heavy: scikit-learn (SciPy), only to fit
    from sklearn.pipeline import make_pipeline  # heavy: scikit-learn
    from sklearn.preprocessing import StandardScaler  # heavy: scikit-learn

    return make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))


# ---------------------------------------------------------------------------------------------- baseline
class Baseline:
    """A fitted baseline of one target: ``predict``, ``predict_proba`` (classification) and ``info``.

    Attributes:
        method, kind: as given to `fit_baseline`.
        classes_: the labels seen in training, sorted (classification; ``None`` for continuous).
        proba_classes_: the label of each ``predict_proba`` column: ``[0, 1]`` for binary targets,
            ``0..n_classes-1`` for categorical targets fit with ``n_classes``, else ``classes_``.
            Columns of labels never seen in training are 0.
        info: fit details: ``n_train``, ``n_val`` (rows used), ``n_train_dropped``, ``n_val_dropped``,
            ``fit_seconds``, ``constant`` (True when gbm / linear fell back to a constant predictor,
            with ``reason``), ``val_score`` (R² or accuracy on the usable validation rows, NaN when
            undefined) and per method ``best_iteration`` / ``max_rounds`` / ``early_stopping`` (gbm),
            ``alpha`` or ``C`` (linear).
    """

    def __init__(
        self,
        method: str,
        kind: str,
        estimator: Any,
        constant: np.ndarray | float | None,
        classes: np.ndarray | None,
        proba_classes: np.ndarray | None,
        n_features: int,
        info: dict[str, Any],
    ) -> None:
        self.method = method
        self.kind = kind
        self._estimator = estimator
        self._constant = constant
        self.classes_ = classes
        self.proba_classes_ = proba_classes
        self.n_features = n_features
        self.info = info

    def __repr__(self) -> str:
        return f"Baseline(method={self.method!r}, kind={self.kind!r}, constant={self.info.get('constant')})"

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected a [N, {self.n_features}] array, got shape {x.shape}")
        return x

    def _proba_seen(self, x: np.ndarray) -> np.ndarray:
        """Probabilities over ``classes_`` (the training labels)."""
        if self._estimator is None:
            return np.tile(np.asarray(self._constant, dtype=np.float64), (len(x), 1))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return np.asarray(self._estimator.predict_proba(x), dtype=np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Continuous: predicted values (float64). Classification: predicted labels (int64)."""
        x = self._check_x(x)
        if self.kind == "continuous":
            if self._estimator is None:
                return np.full(len(x), float(self._constant))  # type: ignore[arg-type]
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="X does not have valid feature names")
                return np.asarray(self._estimator.predict(x), dtype=np.float64)
        assert self.classes_ is not None
        return self.classes_[np.argmax(self._proba_seen(x), axis=1)].astype(np.int64)

    # ---------------------------------------------------------------- saving (never pickled)
    def to_record(self) -> dict[str, Any]:
        """A JSON-ready record of a fitted ``"gbm"`` or ``"floor"`` baseline (`from_record` restores it): the
        LightGBM model in LightGBM's own text format (``Booster.model_to_string``, the best iteration only)
        and the class bookkeeping. Nothing is pickled."""
        if self.method == "linear":
            raise ValueError(
                "only gbm and floor baselines can be saved (a linear one is an sklearn pipeline)"
            )
        model = None
        if isinstance(self._estimator, TreeEnsemble | _BoosterModel):  # read back from text: that text
            model = self._estimator.text
        elif self._estimator is not None:
            booster = self._estimator.booster_
            model = booster.model_to_string(num_iteration=self.info.get("best_iteration"))
        constant = self._constant
        return {
            "format": "lightgbm-text",
            "method": self.method,
            "kind": self.kind,
            "classes": None if self.classes_ is None else [int(c) for c in self.classes_],
            "proba_classes": None if self.proba_classes_ is None else [int(c) for c in self.proba_classes_],
            "n_features": int(self.n_features),
            "constant": (np.asarray(constant, dtype=np.float64).tolist() if constant is not None else None),
            "info": {k: v for k, v in self.info.items() if isinstance(v, bool | int | float | str | None)},
            "model": model,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Baseline:
        """The baseline `to_record` saved (its LightGBM model read back from text); a malformed record is a
        ``ValueError`` naming the problem."""
        try:
            if record["format"] != "lightgbm-text":
                raise ValueError(f"unknown baseline format {record['format']!r}")
            kind, model, constant = str(record["kind"]), record["model"], record["constant"]
            classes = None if record["classes"] is None else np.asarray(record["classes"], dtype=np.int64)
            proba = record["proba_classes"]
            proba_classes = None if proba is None else np.asarray(proba, dtype=np.int64)
            if (model is None) == (constant is None):
                raise ValueError("a baseline needs exactly one of a model and a constant")
            if constant is not None:
                constant = float(constant) if kind == "continuous" else np.asarray(constant, dtype=np.float64)
            if kind not in ("continuous", "binary", "categorical"):
                raise ValueError(f"unknown target kind {kind!r}")
            n_features = int(record["n_features"])
            if (kind == "continuous") != (classes is None) or (kind != "continuous") != (proba is not None):
                raise ValueError(f"a {kind} model needs classes and proba_classes exactly when it classifies")
            if (
                classes is not None
                and proba_classes is not None
                and (
                    len(classes) < 1
                    or not np.isin(classes, proba_classes).all()
                    or (np.diff(classes) <= 0).any()
                    or (np.diff(proba_classes) <= 0).any()
                )
            ):
                raise ValueError("its classes are not sorted, distinct labels among proba_classes")
            if constant is not None and (
                not np.isfinite(constant).all()
                or (classes is not None and np.shape(constant) != (len(classes),))
            ):
                raise ValueError("its constant prediction is not finite or does not match its classes")
            if model is not None:
                outputs = 1 if classes is None or len(classes) <= 2 else len(classes)
                check_lightgbm_text(model, n_features, outputs)
            estimator = read_lightgbm_text(str(model)) if model is not None else None
            return cls(
                str(record["method"]),
                kind,
                estimator,
                constant,
                classes,
                proba_classes,
                n_features,
                dict(record.get("info") or {}),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a saved baseline record ({type(e).__name__}: {e})") from e

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Classification: ``[N, len(proba_classes_)]`` probabilities (binary: ``[N, 2]``, P(0), P(1))."""
        if self.kind == "continuous":
            raise TypeError("predict_proba is only defined for categorical and binary targets")
        x = self._check_x(x)
        p = self._proba_seen(x)
        assert self.classes_ is not None and self.proba_classes_ is not None
        if np.array_equal(self.classes_, self.proba_classes_):
            return p
        out = np.zeros((len(x), len(self.proba_classes_)))
        out[:, np.searchsorted(self.proba_classes_, self.classes_)] = p
        return out


MAX_TREE_LEAVES = 1 << 17
"""The most leaves a saved tree may declare (LightGBM's own ``num_leaves`` limit)."""
_MAX_MISSING_TYPE = 2  # decision_type bits 2-3: none, zero, NaN


def check_lightgbm_text(text: str, n_features: int, n_outputs: int) -> None:
    """`ValueError` (naming the tree and field) unless `text` is a LightGBM text model that is safe to hand
    to LightGBM's parser and predictor for `n_features` inputs and `n_outputs` outputs per iteration.

    LightGBM trusts its model text: a tree's ``split_feature`` beyond the input reads out of bounds (a
    silently different prediction, or a segmentation fault), a child index out of range or pointing back up
    the tree crashes or loops forever. So before it parses anything: the header declares ``num_class`` and
    ``num_tree_per_iteration`` = `n_outputs` and ``max_feature_idx`` = ``n_features - 1``; every tree has a
    ``num_leaves`` in [1, `MAX_TREE_LEAVES`], no categorical splits or linear leaves (zooprobe writes
    neither), ``num_leaves - 1`` splits whose features lie in ``[0, max_feature_idx]``, finite thresholds and
    leaf values, numerical decision types, and children that form a tree (every node reached exactly once,
    children after their parent); ``tree_sizes`` (byte offsets LightGBM seeks by) match the trees."""
    if not isinstance(text, str) or not text.startswith("tree\n"):
        raise ValueError("not a LightGBM text model (it must start with a 'tree' line)")
    head, sep, rest = text.partition("\nTree=")
    if not sep:
        raise ValueError("a LightGBM text model without trees")
    header = _fields(head.split("\n")[1:], "the header")
    trees_text, end, _ = ("Tree=" + rest).partition("end of trees")
    if not end:
        raise ValueError("the model text has no 'end of trees' line")
    declared = {
        "num_class": n_outputs,
        "num_tree_per_iteration": n_outputs,
        "max_feature_idx": n_features - 1,
    }
    for key, expected in declared.items():
        value = _int(header, key, "the header")
        if value != expected:
            raise ValueError(f"the header declares {key}={value}, expected {expected}")
    starts = [m.start() for m in re.finditer(r"^Tree=", trees_text, flags=re.MULTILINE)]
    blocks = [trees_text[a:b] for a, b in zip(starts, [*starts[1:], len(trees_text)], strict=True)]
    if len(blocks) % n_outputs:
        raise ValueError(f"{len(blocks)} trees is not a multiple of num_tree_per_iteration={n_outputs}")
    if "tree_sizes" in header:  # LightGBM seeks each tree by these byte sizes
        actual = [str(len(b.encode())) for b in blocks]
        if header["tree_sizes"].split() != actual:
            raise ValueError("its tree_sizes do not match its trees (the text was edited)")
    for i, block in enumerate(blocks):
        lines = block.strip("\n").split("\n")
        if lines[0] != f"Tree={i}":
            raise ValueError(f"tree {i} is labelled {lines[0][:40]!r}")
        _check_tree(_fields(lines[1:], f"tree {i}"), n_features - 1, f"tree {i}")


def _fields(lines: Iterable[str], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        if not line or line.startswith("["):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{where}: unreadable line {line[:60]!r}")
        out[key] = value
    return out


def _int(fields: Mapping[str, str], key: str, where: str) -> int:
    try:
        return int(fields[key])
    except KeyError:
        raise ValueError(f"{where} has no {key}") from None
    except ValueError:
        raise ValueError(f"{where}: {key}={fields[key][:40]!r} is not an integer") from None


def _values(fields: Mapping[str, str], key: str, where: str, count: int, kind: type) -> np.ndarray:
    text = fields.get(key)
    if text is None:
        raise ValueError(f"{where} has no {key}")
    try:
        values = np.array([kind(v) for v in text.split()], dtype=np.float64 if kind is float else np.int64)
    except (ValueError, OverflowError):
        raise ValueError(f"{where}: {key} holds values that are not {kind.__name__}s") from None
    if len(values) != count:
        raise ValueError(f"{where}: {key} has {len(values)} values, num_leaves says {count}")
    if kind is float and not np.isfinite(values).all():
        raise ValueError(f"{where}: {key} holds values that are not finite")
    return values


def _check_tree(fields: Mapping[str, str], max_feature: int, where: str) -> None:
    leaves = _int(fields, "num_leaves", where)
    if not 1 <= leaves <= MAX_TREE_LEAVES:
        raise ValueError(f"{where}: num_leaves={leaves} outside [1, {MAX_TREE_LEAVES}]")
    if fields.get("num_cat", "0") != "0":
        raise ValueError(
            f"{where}: categorical splits (num_cat={fields['num_cat'][:20]}), which zooprobe never writes"
        )
    if fields.get("is_linear", "0") != "0":
        raise ValueError(f"{where}: linear leaves (is_linear), which zooprobe never writes")
    _values(fields, "leaf_value", where, leaves, float)
    if "shrinkage" in fields:
        _values(fields, "shrinkage", where, 1, float)
    if leaves == 1:
        return
    splits = leaves - 1
    features = _values(fields, "split_feature", where, splits, int)
    bad = features[(features < 0) | (features > max_feature)]
    if len(bad):
        raise ValueError(
            f"{where}: split_feature {int(bad[0])} outside the model's {max_feature + 1} features "
            f"(max_feature_idx {max_feature})"
        )
    _values(fields, "threshold", where, splits, float)
    decision = _values(fields, "decision_type", where, splits, int)
    if (
        ((decision & 1) != 0).any()
        or ((decision >> 2) & 3 > _MAX_MISSING_TYPE).any()
        or (decision >> 4).any()
    ):
        raise ValueError(
            f"{where}: decision_type holds values zooprobe never writes (categorical or unknown)"
        )
    seen = np.zeros(splits, dtype=bool)
    seen[0] = True  # the root
    leaf_seen = np.zeros(leaves, dtype=bool)
    for side in ("left_child", "right_child"):
        for node, child in enumerate(_values(fields, side, where, splits, int)):
            if child >= 0:
                if not node < child < splits or seen[child]:
                    raise ValueError(f"{where}: {side} of node {node} is {child}, which does not form a tree")
                seen[child] = True
            else:
                leaf = ~int(child)
                if leaf >= leaves or leaf_seen[leaf]:
                    raise ValueError(
                        f"{where}: {side} of node {node} is leaf {leaf}, which does not form a tree"
                    )
                leaf_seen[leaf] = True
    if not (seen.all() and leaf_seen.all()):
        raise ValueError(f"{where}: its children do not reach every node and leaf exactly once")


_ZERO = 1e-35  # LightGBM's kZeroThreshold: |x| at most this is zero (dropped from its dense rows)


def read_lightgbm_text(text: str) -> Any:
    """A LightGBM text model (checked by `check_lightgbm_text`) as an estimator with ``predict`` /
    ``predict_proba``: `TreeEnsemble` (NumPy, no LightGBM import) for the objectives zooprobe writes
    (``regression``, ``binary``, ``multiclass``), LightGBM's own ``Booster`` for any other."""
    ensemble = TreeEnsemble.from_text(text)
    return ensemble if ensemble is not None else _BoosterModel(text)


class TreeEnsemble:
    """LightGBM's prediction of a text model with numerical splits, in NumPy: the same trees, decision
    rules (missing values: none / zero / NaN with the default direction; NaN as 0 unless the split sends
    NaN its own way; |x| <= 1e-35 as 0), tree order of summation and output transform (identity, sigmoid,
    softmax), so predictions equal ``lightgbm.Booster(model_str=text).predict`` to float64 rounding, without
    importing LightGBM (which imports scikit-learn, SciPy and pandas: seconds of start-up per process).

    All trees are evaluated at once: ``[trees, rows]`` node indices advance one level per step."""

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        n_outputs: int,
        transform: str,
        sigmoid: float = 1.0,
    ) -> None:
        self.feature, self.threshold = arrays["feature"], arrays["threshold"]
        self.default_left, self.missing = arrays["default_left"], arrays["missing"]
        self.left, self.right, self.leaf_value = arrays["left"], arrays["right"], arrays["leaf_value"]
        self.n_outputs, self.transform, self.sigmoid = n_outputs, transform, sigmoid
        self.text = ""
        """The model text it was read from (`Baseline.to_record` saves it again)."""

    @classmethod
    def from_text(cls, text: str) -> TreeEnsemble | None:
        """The ensemble of a model text, or None when its objective or options are not the three plain
        ones (then LightGBM itself predicts). The text must have passed `check_lightgbm_text`."""
        head, _, rest = text.partition("\nTree=")
        header = _fields(head.split("\n")[1:], "the header")
        if "average_output" in head.split("\n"):
            return None
        objective = header.get("objective", "").split()
        n_outputs = _int(header, "num_tree_per_iteration", "the header")
        sigmoid = 1.0
        if objective == ["regression"]:
            transform = "identity"
        elif len(objective) == 2 and objective[0] == "binary" and objective[1].startswith("sigmoid:"):
            transform, sigmoid = "sigmoid", float(objective[1].removeprefix("sigmoid:"))
        elif objective == ["multiclass", f"num_class:{n_outputs}"]:
            transform = "softmax"
        else:
            return None
        trees = ("Tree=" + rest).partition("end of trees")[0]
        blocks = [b for b in re.split(r"^Tree=\d+\n", trees, flags=re.MULTILINE) if b.strip()]
        parsed = [_fields(b.strip("\n").split("\n"), f"tree {i}") for i, b in enumerate(blocks)]
        leaves = [_int(f, "num_leaves", f"tree {i}") for i, f in enumerate(parsed)]
        n, width = len(parsed), max(max(leaves) - 1, 1)
        arrays = {
            "feature": np.zeros((n, width), dtype=np.int64),
            "threshold": np.zeros((n, width)),
            "default_left": np.zeros((n, width), dtype=bool),
            "missing": np.zeros((n, width), dtype=np.int64),
            "left": np.full((n, width), -1, dtype=np.int64),  # a one-leaf tree: node 0 -> leaf 0 both ways
            "right": np.full((n, width), -1, dtype=np.int64),
            "leaf_value": np.zeros((n, max(leaves))),
        }
        for i, (fields, count) in enumerate(zip(parsed, leaves, strict=True)):
            where = f"tree {i}"
            arrays["leaf_value"][i, :count] = _values(fields, "leaf_value", where, count, float)
            if count == 1:
                continue
            splits = count - 1
            decision = _values(fields, "decision_type", where, splits, int)
            arrays["feature"][i, :splits] = _values(fields, "split_feature", where, splits, int)
            arrays["threshold"][i, :splits] = _values(fields, "threshold", where, splits, float)
            arrays["default_left"][i, :splits] = (decision & 2) != 0
            arrays["missing"][i, :splits] = (decision >> 2) & 3
            arrays["left"][i, :splits] = _values(fields, "left_child", where, splits, int)
            arrays["right"][i, :splits] = _values(fields, "right_child", where, splits, int)
        ensemble = cls(arrays, n_outputs, transform, sigmoid)
        ensemble.text = text
        return ensemble

    def raw_scores(self, x: np.ndarray) -> np.ndarray:
        """``[N, n_outputs]`` sums of the trees' leaf values (LightGBM's raw scores)."""
        x = np.asarray(x, dtype=np.float64)
        x = np.where(np.abs(x) <= _ZERO, 0.0, x)  # NaN stays NaN
        n_trees = len(self.leaf_value)
        trees = np.arange(n_trees)[:, None]
        rows = np.arange(len(x))[None, :]
        node = np.zeros((n_trees, len(x)), dtype=np.int64)
        while (inner := node >= 0).any():
            at = np.where(inner, node, 0)
            value = x[rows, self.feature[trees, at]]
            missing = self.missing[trees, at]
            nan = np.isnan(value)
            value = np.where(nan & (missing != 2), 0.0, value)
            default = ((missing == 1) & (np.abs(value) <= _ZERO)) | ((missing == 2) & nan)
            go_left = np.where(default, self.default_left[trees, at], value <= self.threshold[trees, at])
            child = np.where(go_left, self.left[trees, at], self.right[trees, at])
            node = np.where(inner, child, node)
        values = self.leaf_value[trees, ~node]  # [trees, N]
        out = np.zeros((len(x), self.n_outputs))
        for t in range(n_trees):  # LightGBM's order of summation: tree after tree
            out[:, t % self.n_outputs] += values[t]
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """What ``Booster.predict`` returns: values ``[N]`` (regression), P(1) ``[N]`` (binary) or class
        probabilities ``[N, K]`` (multiclass)."""
        raw = self.raw_scores(x)
        if self.transform == "softmax":
            e = np.exp(raw - raw.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        if self.transform == "sigmoid":
            return 1.0 / (1.0 + np.exp(-self.sigmoid * raw[:, 0]))
        return raw[:, 0]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.predict(x)
        return np.column_stack([1.0 - p, p]) if p.ndim == 1 else p


class _BoosterModel:
    """A LightGBM model read back from its text format, with the ``predict`` / ``predict_proba`` of the
    scikit-learn estimator it was saved from (probabilities over the training labels, in sorted order)."""

    def __init__(self, text: str) -> None:
        import lightgbm as lgb  # heavy: lightgbm

        self.text = text
        try:
            self.booster = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as e:
            raise ValueError(f"not a LightGBM text model ({e})") from e

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x), dtype=np.float64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.predict(x)
        return np.column_stack([1.0 - p, p]) if p.ndim == 1 else p


# ---------------------------------------------------------------------------------------------- targets
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


# ---------------------------------------------------------------------------------------------- fitting
def _gbm_params(seed: int, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    params = {**GBM_DEFAULTS, "random_state": seed}
    params.update(overrides or {})
    return params


def _fit_gbm(
    classification: bool,
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    seed: int,
    gbm_params: Mapping[str, Any] | None,
    info: dict[str, Any],
) -> Any:
    import lightgbm as lgb  # heavy: lightgbm

    params = _gbm_params(seed, gbm_params)
    use_val = len(y_va) > 0
    if not use_val:
        params["n_estimators"] = min(int(params["n_estimators"]), NO_VALIDATION_ROUNDS)
    model = lgb.LGBMClassifier(**params) if classification else lgb.LGBMRegressor(**params)
    kwargs: dict[str, Any] = {}
    if use_val:
        kwargs["eval_X"], kwargs["eval_y"] = (x_va,), (y_va,)
        kwargs["callbacks"] = [
            lgb.early_stopping(EARLY_STOPPING_ROUNDS, first_metric_only=True, verbose=False)
        ]
    model.fit(x_tr, y_tr, **kwargs)
    best = model.best_iteration_ if use_val and model.best_iteration_ else model.n_estimators
    info.update(
        {"best_iteration": int(best), "max_rounds": int(params["n_estimators"]), "early_stopping": use_val}
    )
    return model


def _fit_linear_classifier(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    classes: np.ndarray,
    info: dict[str, Any],
) -> Any:
    from sklearn.exceptions import ConvergenceWarning  # heavy: scikit-learn (scipy), only to fit
    from sklearn.linear_model import LogisticRegression  # heavy: scikit-learn
    from sklearn.pipeline import make_pipeline  # heavy: scikit-learn
    from sklearn.preprocessing import StandardScaler  # heavy: scikit-learn

    def fit(c: float) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x_tr, y_tr)

    if len(y_va) == 0:
        info.update({"C": 1.0, "C_selected_on": "default (no validation rows)"})
        return fit(1.0)
    best: tuple[float, float] | None = None
    chosen = None
    for c in LOGISTIC_CS:
        model = fit(float(c))
        proba = model.predict_proba(x_va)
        acc = float(np.mean(classes[np.argmax(proba, axis=1)] == y_va))
        key = (-acc, _log_loss(y_va, proba, classes))
        if best is None or key < best:
            best, chosen = key, (float(c), model)
    assert chosen is not None
    info.update({"C": chosen[0], "C_selected_on": "validation accuracy, then log loss"})
    return chosen[1]


def fit_baseline(
    method: Method,
    kind: Kind,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    seed: int = 0,
    *,
    n_classes: int | None = None,
    gbm_params: Mapping[str, Any] | None = None,
) -> Baseline:
    """Fit one baseline of one target on the train split, selecting / early-stopping on the validation split.

    Args:
        method: ``"gbm"``, ``"linear"`` or ``"floor"`` (see the module docs).
        kind: ``"continuous"`` (float ``y``, NaN = missing), ``"categorical"`` (integer labels >= 0,
            -1 = missing) or ``"binary"`` (labels 0/1 or bool, -1 = missing).
        x_train, x_val: ``[N, F]`` feature matrices (finite for ``"linear"``; LightGBM accepts NaN).
        y_train, y_val: the targets of those rows.
        seed: LightGBM's ``random_state`` (bagging and feature subsampling).
        n_classes: categorical only: the number of labels of the target, so that ``predict_proba`` has
            one column per label ``0..n_classes-1`` even for labels absent from training.
        gbm_params: LightGBM parameters overriding `GBM_DEFAULTS`.

    Returns:
        The fitted `Baseline`.

    Raises:
        ValueError: an unknown method or kind, mismatched shapes, invalid labels, or no training row
            with a target.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    start = time.perf_counter()
    x_train = _check_xy(x_train, y_train, "train")
    x_val = _check_xy(x_val, y_val, "val")
    if x_val.shape[1] != x_train.shape[1] and len(x_val):
        raise ValueError(f"x_val has {x_val.shape[1]} features, x_train {x_train.shape[1]}")
    classification = kind != "continuous"
    if classification:
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
    if classification:
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
    x_va, y_va = x_val[keep_va], y_va_all[keep_va]
    info: dict[str, Any] = {
        "method": method,
        "kind": kind,
        "seed": seed,
        "n_train": len(y_tr),
        "n_val": len(y_va),
        "n_train_dropped": int((~keep_tr).sum()),
        "n_val_dropped": int((~keep_va).sum()),
    }

    estimator: Any = None
    constant: np.ndarray | float | None = None
    if classification:
        assert classes is not None
        counts = np.array([(y_tr == c).sum() for c in classes], dtype=np.float64)
        is_constant = len(classes) == 1
        if method == "floor" or is_constant:
            constant = counts / counts.sum()
        elif method == "gbm":
            estimator = _fit_gbm(True, x_tr, y_tr, x_va, y_va, seed, gbm_params, info)
        else:
            estimator = _fit_linear_classifier(x_tr, y_tr, x_va, y_va, classes, info)
    else:
        is_constant = bool(np.ptp(y_tr) == 0)
        if method == "floor" or is_constant:
            constant = float(y_tr.mean())
        elif method == "gbm":
            estimator = _fit_gbm(False, x_tr, y_tr, x_va, y_va, seed, gbm_params, info)
        else:
            estimator = ridge_pipeline().fit(x_tr, y_tr)
            info["alpha"] = float(estimator[-1].alpha_)
    info["constant"] = is_constant and method != "floor"
    if info["constant"]:
        info["reason"] = "single class in training" if classification else "constant training target"

    baseline = Baseline(method, kind, estimator, constant, classes, proba_classes, x_train.shape[1], info)
    if len(y_va) == 0:
        info["val_score"] = float("nan")
    elif classification:
        info["val_score"] = float(np.mean(baseline.predict(x_va) == y_va))
    else:
        info["val_score"] = _r2(y_va, baseline.predict(x_va))
    info["fit_seconds"] = time.perf_counter() - start
    return baseline


# ---------------------------------------------------------------------------------------------- metadata
class MetadataEncoder:
    """Zoo metadata columns -> a numeric matrix with a layout fixed at `fit` (on the train split).

    Column types are decided from the frame given to `fit`:

    - **bool** (bool dtype, or objects that are all bools): ``col`` (0/1) and ``col.missing``.
    - **log** (a float column whose non-missing train values are all >= 0, with positive values spanning
      at least a factor 10, e.g. ``learning_rate``, ``weight_decay``; or any column named in
      ``log_columns``): ``col.log10``, ``col.nonpositive`` and ``col.missing``; a value <= 0 maps to one
      decade below the smallest positive train value.
    - **numeric** (other ints and floats): ``col`` as it is and ``col.missing``.
    - **category** (anything else, compared as ``str``): one-hot ``col=value`` over the sorted train
      vocabulary. A value not seen in training, or a missing value, is all zeros (no column is added at
      transform time, so train and test matrices always align).

    A missing numeric value takes the train median (0 when the train column is all missing) with the
    ``.missing`` indicator set. The output never holds NaN.
    """

    def __init__(self, columns: Sequence[str], log_columns: Iterable[str] | None = None) -> None:
        """``log_columns``: ``None`` decides log scaling automatically (above); a list forces exactly
        those columns to log scale (``[]`` turns it off)."""
        self.columns = list(columns)
        self.log_columns = None if log_columns is None else set(log_columns)
        self.specs_: list[dict[str, Any]] | None = None
        self.feature_names_: list[str] = []

    @staticmethod
    def _is_bool(s: pd.Series) -> bool:
        import pandas as pd  # heavy: pandas (metadata frames only)

        if pd.api.types.is_bool_dtype(s.dtype):
            return True
        if s.dtype == object:
            values = s.dropna()
            return len(values) > 0 and all(isinstance(v, bool | np.bool_) for v in values)
        return False

    def fit(self, df: pd.DataFrame) -> MetadataEncoder:
        """Decide each column's type and vocabulary / fill values from ``df`` (the train split)."""
        import pandas as pd  # heavy: pandas (metadata frames only)

        specs: list[dict[str, Any]] = []
        names: list[str] = []
        for col in self.columns:
            if col not in df.columns:
                raise KeyError(f"metadata column {col!r} not in the frame")
            s = df[col]
            if self._is_bool(s):
                specs.append({"column": col, "type": "bool"})
                names += [col, f"{col}.missing"]
            elif pd.api.types.is_numeric_dtype(s.dtype):
                v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
                v = v[np.isfinite(v)]
                positive = v[v > 0]
                if self.log_columns is None:
                    use_log = (
                        pd.api.types.is_float_dtype(s.dtype)
                        and len(positive) > 0
                        and bool(np.all(v >= 0))
                        and positive.max() / positive.min() >= 10
                    )
                else:
                    use_log = col in self.log_columns
                if use_log:
                    floor = math.log10(positive.min()) - 1 if len(positive) else 0.0
                    logs = np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), floor)
                    fill = float(np.median(logs)) if len(logs) else 0.0
                    specs.append({"column": col, "type": "log", "floor": floor, "fill": fill})
                    names += [f"{col}.log10", f"{col}.nonpositive", f"{col}.missing"]
                else:
                    fill = float(np.median(v)) if len(v) else 0.0
                    specs.append({"column": col, "type": "numeric", "fill": fill})
                    names += [col, f"{col}.missing"]
            else:
                vocab = sorted({str(x) for x in s.dropna()})
                specs.append({"column": col, "type": "category", "vocabulary": vocab})
                names += [f"{col}={v}" for v in vocab]
        self.specs_ = specs
        self.feature_names_ = names
        return self

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """The ``[len(df), len(feature_names_)]`` float64 matrix of ``df`` (any split)."""
        import pandas as pd  # heavy: pandas (metadata frames only)

        if self.specs_ is None:
            raise RuntimeError("MetadataEncoder.transform called before fit")
        blocks: list[np.ndarray] = []
        for spec in self.specs_:
            col = spec["column"]
            if col not in df.columns:
                raise KeyError(f"metadata column {col!r} not in the frame")
            s = df[col]
            missing = s.isna().to_numpy()
            if spec["type"] == "bool":
                v = np.array([0.0 if m else float(bool(x)) for x, m in zip(s, missing, strict=True)])
                blocks.append(np.column_stack([v, missing.astype(np.float64)]))
            elif spec["type"] in ("log", "numeric"):
                v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
                missing = ~np.isfinite(v)
                if spec["type"] == "log":
                    nonpos = ~missing & (v <= 0)
                    safe = np.where(~missing & (v > 0), v, 1.0)
                    logs = np.where(nonpos, spec["floor"], np.log10(safe))
                    logs = np.where(missing, spec["fill"], logs)
                    blocks.append(np.column_stack([logs, nonpos, missing]).astype(np.float64))
                else:
                    v = np.where(missing, spec["fill"], v)
                    blocks.append(np.column_stack([v, missing]).astype(np.float64))
            else:
                vocab = spec["vocabulary"]
                index = {v: i for i, v in enumerate(vocab)}
                onehot = np.zeros((len(df), len(vocab)))
                for row, (x, m) in enumerate(zip(s, missing, strict=True)):
                    j = None if m else index.get(str(x))
                    if j is not None:
                        onehot[row, j] = 1.0
                blocks.append(onehot)
        if not blocks:
            return np.zeros((len(df), 0))
        return np.hstack(blocks).astype(np.float64)

    def fit_transform(self, df: pd.DataFrame) -> np.ndarray:
        """`fit` then `transform` on the same frame."""
        return self.fit(df).transform(df)


def metadata_features(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """``MetadataEncoder(columns).fit_transform(df)``: the vocabulary comes from all rows of ``df``.

    For train / test matrices, fit a `MetadataEncoder` on the train rows and transform every split.
    """
    return MetadataEncoder(columns).fit_transform(df)


__all__ = [
    "EARLY_STOPPING_ROUNDS",
    "GBM_DEFAULTS",
    "Baseline",
    "Kind",
    "MetadataEncoder",
    "Method",
    "TreeEnsemble",
    "check_lightgbm_text",
    "fit_baseline",
    "metadata_features",
    "read_lightgbm_text",
]
