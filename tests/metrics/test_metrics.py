"""Evaluator metrics: hand-computed values, masking of missing targets, NaN for undefined metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kendalltau
from sklearn.metrics import f1_score, r2_score, roc_auc_score

from zooprobe.metrics import (
    classification_metrics,
    hyperparameter_aggregate,
    pattern_metrics,
    regression_metrics,
    undefined_metrics,
)

NAN = float("nan")


def _same(a: dict[str, float], b: dict[str, float]) -> None:
    """Equal keys and values, NaN equal to NaN."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], nan_ok=True), key


def _all_plain_floats(metrics: dict[str, float]) -> bool:
    return all(type(v) is float for v in metrics.values())


# --- regression -------------------------------------------------------------------------------------------


def test_regression_perfect_predictions() -> None:
    y = np.array([0.1, 0.5, 0.3, 0.9, 0.7])
    m = regression_metrics(y, y.copy())
    assert m["n"] == 5.0
    assert m["mse"] == 0.0 and m["mae"] == 0.0 and m["rmse"] == 0.0 and m["relative_error"] == 0.0
    assert m["r2"] == 1.0
    assert m["kendall_tau"] == pytest.approx(1.0)
    assert _all_plain_floats(m)


def test_regression_known_example() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 5.0])  # errors 0.5, 0, -1, 1
    m = regression_metrics(y, p)
    assert set(m) == {"n", "mse", "mae", "rmse", "r2", "relative_error", "kendall_tau"}
    assert m["n"] == 4.0
    assert m["mse"] == pytest.approx(2.25 / 4)
    assert m["mae"] == pytest.approx(2.5 / 4)
    assert m["rmse"] == pytest.approx(0.75)
    assert m["r2"] == pytest.approx(1 - 2.25 / 5.0)  # SS_tot = 2.25 + .25 + .25 + 2.25
    assert m["r2"] == pytest.approx(r2_score(y, p))
    assert m["relative_error"] == pytest.approx((0.5 / 1 + 0 / 2 + 1 / 3 + 1 / 4) / 4)
    # 5 concordant pairs, 0 discordant, one tie in p only: tau-b = 5 / sqrt(6 * 5).
    assert m["kendall_tau"] == pytest.approx(5 / math.sqrt(30))
    assert m["kendall_tau"] == pytest.approx(kendalltau(y, p).statistic)


def test_relative_error_uses_eps_floor() -> None:
    m = regression_metrics(np.array([0.0, 2.0]), np.array([1e-9, 1.0]))
    assert m["relative_error"] == pytest.approx((1e-9 / 1e-8 + 0.5) / 2)


def test_regression_masks_nan_targets() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=20)
    p = y + rng.normal(scale=0.3, size=20)
    y[[1, 4, 9, 15]] = np.nan
    keep = ~np.isnan(y)
    masked = regression_metrics(y, p)
    assert masked["n"] == 16.0
    _same(masked, regression_metrics(y[keep], p[keep]))
    assert not undefined_metrics(masked)


def test_regression_constant_target_gives_nan_r2_and_tau() -> None:
    m = regression_metrics(np.array([2.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    assert math.isnan(m["r2"]) and math.isnan(m["kendall_tau"])
    assert m["mse"] == pytest.approx(2 / 3)
    assert undefined_metrics(m) == ["r2", "kendall_tau"]


def test_regression_single_sample_and_empty() -> None:
    m = regression_metrics(np.array([3.0, NAN]), np.array([2.0, 0.0]))
    assert m["n"] == 1.0 and m["mse"] == 1.0
    assert math.isnan(m["r2"]) and math.isnan(m["kendall_tau"])
    empty = regression_metrics(np.array([NAN, NAN]), np.array([1.0, 2.0]))
    assert empty["n"] == 0.0
    assert sorted(undefined_metrics(empty)) == sorted(k for k in empty if k != "n")


def test_regression_non_finite_predictions_raise() -> None:
    with pytest.raises(ValueError, match="2 non-finite"):
        regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, np.nan, np.inf]))
    with pytest.raises(ValueError, match="equal length"):
        regression_metrics(np.array([1.0, 2.0]), np.array([1.0]))


# --- classification ---------------------------------------------------------------------------------------


def _onehot(pred: list[int], n_classes: int) -> np.ndarray:
    probs = np.full((len(pred), n_classes), 0.1 / max(n_classes - 1, 1))
    probs[np.arange(len(pred)), pred] = 0.9
    return probs


def test_classification_known_example_with_missing_labels() -> None:
    y = np.array([0, 1, 2, -1, 1])
    probs = _onehot([0, 2, 2, 0, 1], 4)  # class 3 never occurs in truth or predictions
    m = classification_metrics(y, probs, n_classes=4)
    assert set(m) == {"n", "accuracy", "macro_f1"}
    assert m["n"] == 4.0
    assert m["accuracy"] == pytest.approx(3 / 4)
    # per-class F1: class 0 -> 1, class 1 -> 2/3, class 2 -> 2/3; class 3 is left out, not counted as 0.
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    keep = y != -1
    _same(m, classification_metrics(y[keep], probs[keep]))
    assert m["macro_f1"] == pytest.approx(
        f1_score(y[keep], probs[keep].argmax(1), labels=[0, 1, 2], average="macro")
    )
    assert _all_plain_floats(m)


def test_classification_all_missing_and_bad_input() -> None:
    m = classification_metrics(np.array([-1, -1]), _onehot([0, 1], 2))
    assert m["n"] == 0.0 and undefined_metrics(m) == ["accuracy", "macro_f1"]
    with pytest.raises(ValueError, match="n_classes"):
        classification_metrics(np.array([0, 1]), _onehot([0, 1], 2), n_classes=3)
    with pytest.raises(ValueError, match="non-finite"):
        classification_metrics(np.array([0, 1]), np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="must lie in"):
        classification_metrics(np.array([0, 2]), _onehot([0, 1], 2))


# --- patterns ---------------------------------------------------------------------------------------------

NAMES = ["a", "b", "c"]
Y_PAT = np.array(
    [
        [1.0, 0.0, 0.0],
        [0.0, NAN, 0.0],
        [1.0, 1.0, 0.0],
        [0.0, 0.0, 0.0],
    ]
)
P_PAT = np.array(
    [
        [0.9, 0.45, 0.1],  # all right
        [0.4, 0.7, 0.2],  # known entries right; b unknown (would be wrong)
        [0.8, 0.4, 0.3],  # b wrong (false negative)
        [0.3, 0.1, 0.4],  # all right
    ]
)


def test_pattern_known_example() -> None:
    m = pattern_metrics(Y_PAT, P_PAT, NAMES)
    assert m["n"] == 4.0
    assert m["hamming_loss"] == pytest.approx(1 / 11)  # 11 known entries, 1 wrong
    # complete rows are 0, 2, 3; row 1 is ignored (counting it would give 3/4).
    assert m["subset_accuracy"] == pytest.approx(2 / 3)
    assert m["f1/a"] == pytest.approx(1.0) and m["roc_auc/a"] == pytest.approx(1.0)
    assert m["f1/b"] == 0.0  # a positive exists but was missed: a genuine 0, not undefined
    assert m["roc_auc/b"] == pytest.approx(0.5)  # positive 0.4 beats 0.1, loses to 0.45
    assert math.isnan(m["f1/c"]) and math.isnan(m["roc_auc/c"])  # only negatives, none predicted
    assert m["macro_f1"] == pytest.approx(0.5)
    assert m["macro_roc_auc"] == pytest.approx(0.75)
    assert m["n_undefined"] == 2.0
    assert undefined_metrics(m) == ["f1/c", "roc_auc/c"]
    assert _all_plain_floats(m)


def test_pattern_per_label_masking_matches_sklearn() -> None:
    m = pattern_metrics(Y_PAT, P_PAT, NAMES)
    for j, name in enumerate(NAMES[:2]):
        rows = ~np.isnan(Y_PAT[:, j])
        t, s = Y_PAT[rows, j], P_PAT[rows, j]
        assert m[f"f1/{name}"] == pytest.approx(f1_score(t, s >= 0.5))
        assert m[f"roc_auc/{name}"] == pytest.approx(roc_auc_score(t, s))


def test_pattern_single_class_roc_auc_and_all_undefined() -> None:
    y = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    p = np.array([[0.9, 0.1], [0.2, 0.2], [0.4, 0.3]])
    m = pattern_metrics(y, p, ["x", "y"])
    assert math.isnan(m["roc_auc/y"]) and math.isnan(m["f1/y"])
    assert m["roc_auc/x"] == pytest.approx(0.5)  # positive 0.9 beats 0.4, positive 0.2 loses to it
    assert m["macro_roc_auc"] == pytest.approx(0.5)  # nanmean over x only
    assert m["n_undefined"] == 2.0
    none_defined = pattern_metrics(np.zeros((2, 1)), np.full((2, 1), 0.1), ["z"])
    assert math.isnan(none_defined["macro_f1"]) and math.isnan(none_defined["macro_roc_auc"])
    assert none_defined["hamming_loss"] == 0.0 and none_defined["subset_accuracy"] == 1.0


def test_pattern_threshold_and_no_complete_row() -> None:
    y = np.array([[1.0, NAN], [NAN, 0.0]])
    p = np.array([[0.5, 0.9], [0.1, 0.3]])
    m = pattern_metrics(y, p, ["u", "v"])  # 0.5 >= threshold counts as present
    assert m["hamming_loss"] == 0.0
    assert math.isnan(m["subset_accuracy"])
    assert pattern_metrics(y, p, ["u", "v"], threshold=0.6)["hamming_loss"] == pytest.approx(0.5)


def test_pattern_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        pattern_metrics(Y_PAT, np.where(P_PAT > 0.85, np.nan, P_PAT), NAMES)
    with pytest.raises(ValueError, match="names"):
        pattern_metrics(Y_PAT, P_PAT, ["a", "b"])
    with pytest.raises(ValueError, match="0 or 1"):
        pattern_metrics(Y_PAT * 2, P_PAT, NAMES)


# --- aggregate and helpers --------------------------------------------------------------------------------


def test_hyperparameter_aggregate_ignores_nan() -> None:
    agg = hyperparameter_aggregate({"lr": 0.5, "wd": NAN, "dropout": -0.1}, {"optimizer": 0.9, "act": NAN})
    assert agg == pytest.approx((0.5 - 0.1 + 0.9) / 3)
    assert type(agg) is float
    assert math.isnan(hyperparameter_aggregate({"lr": NAN}, {"act": NAN}))
    assert math.isnan(hyperparameter_aggregate({}, {}))


def test_undefined_metrics_lists_nan_entries_in_order() -> None:
    assert undefined_metrics({"a": 1.0, "b": NAN, "c": 0.0, "d": float(np.float64("nan"))}) == ["b", "d"]
    assert undefined_metrics({}) == []
