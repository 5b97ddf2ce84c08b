"""Weight-statistics features and the gbm / linear / floor baselines (`zooprobe.baselines`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from zooprobe.baselines import MetadataEncoder, fit_baseline, metadata_features
from zooprobe.baselines.models import GBM_DEFAULTS, Baseline
from zooprobe.tokens.statistics import (
    N_FEATURES,
    feature_names,
    featurize,
    weight_statistics_features,
)

# One LightGBM thread in tests: on a small, shared 2-core machine two OpenMP threads were 3-5x slower for
# these few hundred rows (same fitted model); the library default stays GBM_DEFAULTS["n_jobs"].
_TEST_GBM = {"n_jobs": 1}


def _fit(*args: Any, gbm_params: dict[str, Any] | None = None, **kwargs: Any) -> Baseline:
    return fit_baseline(*args, gbm_params={**_TEST_GBM, **(gbm_params or {})}, **kwargs)


def _mlp(hidden: list[int], d_in: int = 10, d_out: int = 3) -> nn.Module:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(d_in, width), nn.ReLU()]
        d_in = width
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


def _cnn_bn(width: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(1, width, 3),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        nn.Conv1d(width, width, 3, bias=False),
        nn.BatchNorm1d(width),
        nn.Flatten(),
        nn.Linear(width * 36, 10),
    )


def _layer_norm_model() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 2))


def _f(x: np.ndarray, name: str) -> float:
    return float(x[feature_names().index(name)])


# ---------------------------------------------------------------------------------------------- features
def test_features_fixed_length_and_finite_across_architectures() -> None:
    torch.manual_seed(0)
    models = [
        *(_mlp([32] * depth) for depth in range(1, 5)),
        _mlp([7, 64, 5]),
        _cnn_bn(4),
        _cnn_bn(9),
        _layer_norm_model(),
    ]
    names = feature_names()
    assert len(names) == N_FEATURES == len(set(names))
    x = featurize([m.state_dict() for m in models])
    assert x.shape == (len(models), N_FEATURES) and x.dtype == np.float64
    assert np.isfinite(x).all()
    assert featurize([]).shape == (0, N_FEATURES)
    assert np.array_equal(featurize(iter([models[0].state_dict()]), progress=True)[0], x[0])
    # depth / conv / norm structure is visible
    assert [_f(row, "n_main_layers") for row in x[:4]] == [2, 3, 4, 5]
    cnn, ln, mlp = x[5], x[7], x[0]
    assert _f(cnn, "n_conv_layers") == 2 and 0 < _f(cnn, "conv_param_fraction") < 1
    assert _f(cnn, "has_norm") == _f(cnn, "has_running_stats") == _f(cnn, "bn.present") == 1
    assert _f(cnn, "n_norm_layers") == 2 and _f(cnn, "bn.running_var.mean") == 1.0
    assert _f(ln, "has_norm") == 1 and _f(ln, "has_running_stats") == 0 and _f(ln, "norm.w.present") == 1
    assert _f(mlp, "has_norm") == 0 and _f(mlp, "norm.w.present") == 0 and _f(mlp, "conv_param_fraction") == 0
    assert _f(cnn, "middle.bias_frac") == 0 and _f(cnn, "first.bias_frac") == 1  # bias-free middle conv


def test_featurize_computes_same_architecture_models_together_with_the_same_numbers() -> None:
    torch.manual_seed(1)
    models = [_mlp([16, 16, 8]) for _ in range(5)] + [_cnn_bn(4) for _ in range(4)] + [_layer_norm_model()]
    sds = [m.state_dict() for m in models]
    diverged = {k: v.clone() for k, v in sds[1].items()}
    diverged["0.weight"][0, :4] = float("nan")  # the batched pass falls back for its group
    sds.insert(2, diverged)
    one_at_a_time = np.stack([weight_statistics_features(sd) for sd in sds])
    together = featurize(sds)
    # bit for bit: the same order statistics and reductions, whatever the grouping or chunking
    assert np.array_equal(together, one_at_a_time)
    assert np.array_equal(featurize(iter(sds), chunk_bytes=1), one_at_a_time)  # one model a chunk
    assert _f(together[2], "nonfinite_fraction") == pytest.approx(4 / sum(t.numel() for t in sds[2].values()))
    assert np.isfinite(together).all() and not np.array_equal(together[1], together[2])


def test_known_tensor_statistics_at_named_positions() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(12, dtype=torch.float32).reshape(3, 4))
        model[2].bias.copy_(torch.tensor([-1.0, 3.0]))
    sd = model.state_dict()
    x = weight_statistics_features(sd)
    w = np.arange(12, dtype=np.float64)
    assert _f(x, "first.w.mean") == pytest.approx(w.mean())
    assert _f(x, "first.w.std") == pytest.approx(w.std())
    for q in (0, 25, 50, 75, 100):
        assert _f(x, f"first.w.q{q}") == pytest.approx(np.percentile(w, q))
    assert _f(x, "first.w.scaled_std") == pytest.approx(w.std() * 2.0)  # fan_in 4
    assert _f(x, "first.w.log_fan_in") == pytest.approx(np.log(4))
    assert _f(x, "last.b.mean") == pytest.approx(1.0) and _f(x, "last.b.std") == pytest.approx(2.0)
    assert _f(x, "last.b.q0") == -1.0 and _f(x, "last.b.q100") == 3.0
    # two layers: no middle block (zeros + indicator), no norm block
    middle = [n for n in feature_names() if n.startswith("middle.")]
    assert all(_f(x, n) == 0 for n in middle) and _f(x, "first.present") == _f(x, "last.present") == 1
    n_values = sum(t.numel() for t in sd.values())
    assert _f(x, "all.log_numel") == pytest.approx(np.log1p(n_values))
    pooled = np.concatenate([t.reshape(-1).double().numpy() for t in sd.values()])
    assert _f(x, "all.mean") == pytest.approx(pooled.mean())


def test_nonfinite_weights_are_dropped_and_counted() -> None:
    sd = _layer_norm_model().state_dict()
    sd["0.weight"][0, :4] = float("nan")
    sd["0.weight"][1, 0] = float("inf")
    x = weight_statistics_features(sd)
    assert np.isfinite(x).all()
    assert _f(x, "nonfinite_fraction") == pytest.approx(5 / sum(t.numel() for t in sd.values()))
    only_ints = weight_statistics_features({"n": torch.tensor(3)})
    assert np.isfinite(only_ints).all() and not only_ints.any()


# ---------------------------------------------------------------------------------------------- models
def _splits(n: int, seed: int = 0) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 6))
    return x, rng


def test_gbm_beats_floor_on_nonlinear_regression_and_early_stops_on_validation() -> None:
    x, rng = _splits(900)
    y = np.sin(3 * x[:, 0]) + x[:, 1] ** 2 + x[:, 2] * x[:, 3] + 0.3 * rng.normal(size=len(x))
    tr, va, te = slice(0, 500), slice(500, 700), slice(700, 900)
    r2, models = {}, {}
    for method in ("gbm", "linear", "floor"):
        model = models[method] = _fit(method, "continuous", x[tr], y[tr], x[va], y[va])
        pred = model.predict(x[te])
        r2[method] = 1 - np.sum((y[te] - pred) ** 2) / np.sum((y[te] - y[te].mean()) ** 2)
        assert model.info["n_train"] == 500 and model.info["n_val"] == 200
    assert r2["floor"] < 0.02 and r2["gbm"] > r2["floor"] + 0.6 and r2["gbm"] > r2["linear"] + 0.2
    gbm = models["gbm"]
    assert gbm.info["early_stopping"] and gbm.info["best_iteration"] < GBM_DEFAULTS["n_estimators"] // 2
    assert models["linear"].info["alpha"] > 0 and models["gbm"].info["val_score"] > 0.6
    # the validation split drives early stopping: noise targets on validation stop it almost at once
    noisy = _fit("gbm", "continuous", x[tr], y[tr], x[va], rng.normal(size=200))
    assert noisy.info["best_iteration"] < min(20, gbm.info["best_iteration"])
    again = _fit("gbm", "continuous", x[tr], y[tr], x[va], y[va])
    assert np.array_equal(gbm.predict(x[te]), again.predict(x[te]))  # deterministic


def test_classification_gbm_beats_majority_and_probabilities_are_aligned() -> None:
    x, _ = _splits(900, seed=1)
    y = np.where(x[:, 0] ** 2 + x[:, 1] ** 2 < 0.5, 2, np.where(x[:, 2] > 0.3, 0, 1))
    tr, va, te = slice(0, 500), slice(500, 700), slice(700, 900)
    floor = _fit("floor", "categorical", x[tr], y[tr], x[va], y[va])
    gbm = _fit("gbm", "categorical", x[tr], y[tr], x[va], y[va], n_classes=4)
    linear = _fit("linear", "categorical", x[tr], y[tr], x[va], y[va])
    acc_floor = np.mean(floor.predict(x[te]) == y[te])
    acc_gbm = np.mean(gbm.predict(x[te]) == y[te])
    assert acc_gbm > acc_floor + 0.3 and acc_gbm > 0.85
    proba = gbm.predict_proba(x[te])
    assert proba.shape == (200, 4) and np.allclose(proba.sum(axis=1), 1) and not proba[:, 3].any()
    assert np.array_equal(np.argmax(proba, axis=1), gbm.predict(x[te]))
    assert gbm.info["best_iteration"] < GBM_DEFAULTS["n_estimators"]
    assert linear.info["C"] in set(np.logspace(-3, 3, 7)) and linear.predict_proba(x[te]).shape == (200, 3)
    np.testing.assert_allclose(floor.predict_proba(x[:1])[0], np.bincount(y[tr]) / 500)

    yb = (x[:, 0] * x[:, 1] > 0).astype(bool)
    binary = _fit("gbm", "binary", x[tr], yb[tr], x[va], yb[va])
    assert binary.predict_proba(x[te]).shape == (200, 2) and np.mean(binary.predict(x[te]) == yb[te]) > 0.8


def test_missing_targets_are_dropped() -> None:
    x, _ = _splits(300, seed=2)
    y = x[:, 0] * 2.0
    y[::5] = np.nan
    fast = {"n_estimators": 100}
    model = _fit("gbm", "continuous", x[:200], y[:200], x[200:], y[200:], gbm_params=fast)
    assert (
        model.info["max_rounds"] == 100
        and model.info["n_train"] == 160
        and model.info["n_train_dropped"] == 40
    )
    assert model.info["n_val"] == 80 and np.isfinite(model.predict(x)).all()
    labels = (x[:, 0] > 0).astype(np.int64)
    labels[::4] = -1
    for method in ("gbm", "linear", "floor"):
        clf = _fit(method, "categorical", x[:200], labels[:200], x[200:], labels[200:], gbm_params=fast)
        assert list(clf.classes_) == [0, 1] and clf.info["n_train"] == 150
        assert set(clf.predict(x)) <= {0, 1}
    as_float = labels.astype(np.float64)
    as_float[1::7] = np.nan
    clf = _fit("floor", "binary", x[:200], as_float[:200], x[200:], as_float[200:])
    assert clf.info["n_train"] == int(np.sum((labels[:200] >= 0) & np.isfinite(as_float[:200])))
    with pytest.raises(ValueError, match="all missing"):
        _fit("gbm", "continuous", x[:10], np.full(10, np.nan), x[10:20], y[10:20])


def test_single_class_and_constant_targets_fall_back_to_constant_predictors() -> None:
    x, _ = _splits(120, seed=3)
    ones = np.ones(120, dtype=np.int64)
    for method in ("gbm", "linear"):
        clf = _fit(method, "binary", x[:80], ones[:80], x[80:], ones[80:])
        assert clf.info["constant"] and (clf.predict(x) == 1).all()
        np.testing.assert_array_equal(clf.predict_proba(x[:2]), [[0.0, 1.0], [0.0, 1.0]])
        reg = _fit(method, "continuous", x[:80], np.full(80, 0.7), x[80:], np.full(40, 0.7))
        assert reg.info["constant"] and np.allclose(reg.predict(x), 0.7)
    # validation labels unseen in training are dropped, not an error
    labels = np.where(x[:, 0] > 0, 1, 0)
    labels[80:90] = 5
    clf = _fit("gbm", "categorical", x[:80], labels[:80], x[80:], labels[80:])
    assert clf.info["n_val"] == 30 and clf.info["n_val_dropped"] == 10


# ---------------------------------------------------------------------------------------------- metadata
def test_metadata_encoder_log_scaling_bools_and_unseen_categories() -> None:
    train = pd.DataFrame(
        {
            "optimizer": ["adam", "sgd", "adam", "adamw"],
            "learning_rate": [1e-3, 1e-2, 1e-1, 1e-3],
            "weight_decay": [0.0, 1e-4, 1e-2, 1e-3],
            "dropout": [0.0, 0.5, 0.0, 0.5],
            "has_batch_norm": [True, False, True, False],
            "epochs": [1, 2, 3, 4],
        }
    )
    enc = MetadataEncoder(list(train.columns)).fit(train)
    names = enc.feature_names_
    assert names[:3] == ["optimizer=adam", "optimizer=adamw", "optimizer=sgd"]
    assert "learning_rate.log10" in names and "weight_decay.nonpositive" in names
    assert "dropout" in names and "dropout.log10" not in names and "epochs" in names
    test = pd.DataFrame(
        {
            "optimizer": ["rmsprop", "sgd"],
            "learning_rate": [1e-4, np.nan],
            "weight_decay": [0.0, 1e-6],
            "dropout": [0.5, 0.0],
            "has_batch_norm": [False, True],
            "epochs": [5, 1],
        }
    )
    m = enc.transform(test)
    assert m.shape == (2, len(names)) and np.isfinite(m).all()
    col = {n: m[:, i] for i, n in enumerate(names)}
    # an unseen category is all zeros in the one-hot block
    assert not m[0, :3].any() and list(m[1, :3]) == [0, 0, 1]
    assert col["learning_rate.log10"][0] == pytest.approx(-4) and col["learning_rate.missing"][1] == 1
    assert col["weight_decay.log10"][0] == pytest.approx(-5) and col["weight_decay.nonpositive"][0] == 1
    assert col["weight_decay.log10"][1] == pytest.approx(-6)
    assert list(col["has_batch_norm"]) == [0, 1] and list(col["epochs"]) == [5, 1]
    np.testing.assert_array_equal(metadata_features(train, list(train.columns)), enc.transform(train))
    with pytest.raises(RuntimeError):
        MetadataEncoder(["optimizer"]).transform(train)


@pytest.mark.parametrize("kind", ["continuous", "binary", "categorical"])
def test_saved_gbm_predicts_in_numpy_exactly_as_lightgbm(kind: str) -> None:
    """A saved LightGBM model is read back into `TreeEnsemble` (no LightGBM import at prediction time); its
    predictions equal LightGBM's own on inputs with zeros, tiny values and NaN (missing-value rules)."""
    import lightgbm as lgb

    from zooprobe.baselines.models import TreeEnsemble

    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 12))
    x[rng.random(x.shape) < 0.1] = 0.0
    y = {
        "continuous": 2 * x[:, 0] + np.sin(3 * x[:, 1]),
        "binary": (x[:, 1] + 0.3 * x[:, 2] > 0).astype(np.int64),
        "categorical": np.digitize(x[:, 2], [-0.7, 0.0, 0.7]),
    }[kind]
    fitted = fit_baseline(
        "gbm", kind, x[:160], y[:160], x[160:], y[160:], 0, n_classes=5 if kind == "categorical" else None
    )  # type: ignore[arg-type]
    record = fitted.to_record()
    loaded = Baseline.from_record(record)
    assert isinstance(loaded._estimator, TreeEnsemble)
    assert Baseline.from_record(loaded.to_record()).to_record() == record  # saved again unchanged
    probe = rng.normal(size=(100, 12))
    probe[rng.random(probe.shape) < 0.2] = np.nan
    probe[rng.random(probe.shape) < 0.1] = 0.0
    probe[:3] = 1e-40
    reference = lgb.Booster(model_str=record["model"]).predict(probe)
    np.testing.assert_allclose(loaded._estimator.predict(probe), reference, rtol=0, atol=1e-12)
    if kind == "continuous":
        np.testing.assert_allclose(loaded.predict(probe), fitted.predict(probe), rtol=0, atol=1e-12)
    else:
        np.testing.assert_allclose(
            loaded.predict_proba(probe), fitted.predict_proba(probe), rtol=0, atol=1e-12
        )
