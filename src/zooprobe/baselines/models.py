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

import time
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from zooprobe.baselines.lightgbm_text import (
    MAX_TREE_LEAVES,
    TreeEnsemble,
    _BoosterModel,
    check_lightgbm_text,
    read_lightgbm_text,
)
from zooprobe.baselines.metadata import MetadataEncoder, metadata_features
from zooprobe.baselines.targets import _check_xy, _log_loss, _r2, _Rows, _target_rows

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


def _check_inputs(
    method: str, kind: str, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The method and kind known, ``(x, y)`` of each split consistent: the feature matrices as floats."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    x_train = _check_xy(*train, "train")
    x_val = _check_xy(*val, "val")
    if x_val.shape[1] != x_train.shape[1] and len(x_val):
        raise ValueError(f"x_val has {x_val.shape[1]} features, x_train {x_train.shape[1]}")
    return x_train, x_val


def _fit_estimator(
    method: str,
    kind: str,
    rows: _Rows,
    seed: int,
    gbm_params: Mapping[str, Any] | None,
    info: dict[str, Any],
) -> tuple[Any, np.ndarray | float | None, bool]:
    """(estimator, constant prediction, whether the training target is constant): a constant for the
    floor or a constant target, else the fitted model (its choices recorded in ``info``)."""
    x_tr, y_tr, x_va, y_va = rows.x_tr, rows.y_tr, rows.x_va, rows.y_va
    estimator: Any = None
    constant: np.ndarray | float | None = None
    if kind != "continuous":
        classes = rows.classes
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
    return estimator, constant, is_constant


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
    start = time.perf_counter()
    x_train, x_val = _check_inputs(method, kind, (x_train, y_train), (x_val, y_val))
    rows = _target_rows(kind, (x_train, y_train), (x_val, y_val), n_classes)
    info: dict[str, Any] = {
        "method": method,
        "kind": kind,
        "seed": seed,
        "n_train": len(rows.y_tr),
        "n_val": len(rows.y_va),
        "n_train_dropped": rows.train_dropped,
        "n_val_dropped": rows.val_dropped,
    }
    estimator, constant, is_constant = _fit_estimator(method, kind, rows, seed, gbm_params, info)
    info["constant"] = is_constant and method != "floor"
    if info["constant"]:
        info["reason"] = "single class in training" if kind != "continuous" else "constant training target"
    baseline = Baseline(
        method, kind, estimator, constant, rows.classes, rows.proba_classes, x_train.shape[1], info
    )
    if len(rows.y_va) == 0:
        info["val_score"] = float("nan")
    elif kind != "continuous":
        info["val_score"] = float(np.mean(baseline.predict(rows.x_va) == rows.y_va))
    else:
        info["val_score"] = _r2(rows.y_va, baseline.predict(rows.x_va))
    info["fit_seconds"] = time.perf_counter() - start
    return baseline


# re-exported: MAX_TREE_LEAVES, TreeEnsemble, check_lightgbm_text, read_lightgbm_text (lightgbm_text);
# MetadataEncoder, metadata_features (metadata)
__all__ = [
    "EARLY_STOPPING_ROUNDS",
    "GBM_DEFAULTS",
    "MAX_TREE_LEAVES",
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
