"""What a head knows about its limits: applicability domain, intervals, calibrated probabilities and
per-target reliability, fitted by real training runs on the test zoo and saved with the head."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from trained_heads import TrainedHeads
from zooprobe.api import load_head, load_zoo
from zooprobe.bench.encoder import resnet18_state_dict
from zooprobe.errors import ZooFormatError
from zooprobe.heads.domain import architecture
from zooprobe.heads.head_loader import LoadedHead
from zooprobe.heads.prediction_heads import HeadConfig
from zooprobe.heads.targets import TargetSpec, TaskSpec
from zooprobe.heads.trust import Trust
from zooprobe.heads.uncertainty import (
    conformal_quantile,
    expected_calibration_error,
    fit_calibration,
    interval_coverage,
    reliability,
)
from zooprobe.inference import predict
from zooprobe.training.config import TrainConfig


def foreign_networks() -> dict[str, dict[str, torch.Tensor]]:
    """Networks unlike any of the test zoo (small MLPs and CNNs): the issue's three."""
    torch.manual_seed(0)
    return {
        "resnet18": resnet18_state_dict(),
        "transformer": torch.nn.TransformerEncoderLayer(32, 4, 64).state_dict(),
        "lstm": torch.nn.LSTM(16, 32).state_dict(),
    }


@pytest.fixture(scope="module")
def heads(trained_heads: TrainedHeads) -> dict[str, Path]:
    """One run folder per head kind and task: neural accuracy, patterns and hyperparameters heads, and a
    gradient-boosting hyperparameters head (the session's shared runs, tests/conftest.py)."""
    runs = {name: trained_heads[name] for name in ("accuracy", "patterns", "hyperparameters")}
    return {**runs, "gbm": trained_heads["hyperparameters-gbm"]}


def test_architectures_are_read_off_names_and_shapes() -> None:
    nets = foreign_networks()
    resnet = architecture(nets["resnet18"])
    assert resnet.kinds == ("batchnorm", "conv2d", "linear") and resnet.depth == 21
    assert max(resnet.widths) == 512 and resnet.input_size == 3 * 7 * 7 and resnet.output_size == 1000
    assert resnet.n_params == sum(
        v.numel() for k, v in nets["resnet18"].items() if v.is_floating_point() and "running" not in k
    )
    assert "attention" in architecture(nets["transformer"]).kinds
    assert "norm" in architecture(nets["transformer"]).kinds  # LayerNorm, no running statistics
    assert architecture(nets["lstm"]).kinds == ("recurrent",)


def test_foreign_networks_are_out_of_domain_for_every_head(heads: dict[str, Path], head_zoo: Path) -> None:
    zoo = load_zoo(head_zoo).final().split("test")
    test_models = list(zoo.state_dicts())
    loaded = {name: load_head(run) for name, run in heads.items()}
    assert all(h.trust is not None and h.trust.domain is not None for h in loaded.values())
    both = predict(loaded, [*foreign_networks().values(), *test_models])  # every head, one call
    for name, run in heads.items():
        table = both[[c for c in both if c.startswith(f"{name}/")]].rename(
            columns=lambda c: c.split("/", 1)[1]
        )
        foreign, own = table.iloc[:3], table.iloc[3:]
        assert not foreign["in_domain"].any(), (name, foreign["domain_reasons"].tolist())
        reasons = foreign["domain_reasons"].tolist()
        assert "depth 21 main layers" in reasons[0] and "hidden widths 64-512" in reasons[0]
        assert "layer kind(s) attention never seen" in reasons[1]
        assert "layer kind(s) recurrent never seen" in reasons[2]
        # models drawn like the training zoo's, never trained on, pass: all 9 here (threshold: 99%)
        assert own["in_domain"].all(), (name, own["domain_reasons"].tolist())
        assert (own["domain_reasons"] == "").all()
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["test"]["in_domain"] == 1.0 and metrics["domain"]["quantile"] == 0.99


def test_extreme_weights_are_finite_predictions_outside_the_domain(
    heads: dict[str, Path], head_zoo: Path
) -> None:
    sd = load_zoo(head_zoo).final().split("test").state_dict(0)
    first = next(iter(sd))
    huge = {k: v.clone() for k, v in sd.items()}
    huge[first].view(-1)[0] = 1e20
    float_max = {k: v.clone() for k, v in sd.items()}
    float_max[first].view(-1)[:3] = torch.tensor([3.4e38, -3.4e38, 1e38])
    for name in ("hyperparameters", "gbm"):
        table = predict(load_head(heads[name]), [huge, float_max], show_unpredictable=True)
        numbers = table.select_dtypes("number").to_numpy()
        assert np.isfinite(numbers).all(), name  # no NaN anywhere, although the encoder sees 1e20
        assert not table["in_domain"].any()
        assert all("weight statistics" in r for r in table["domain_reasons"])


def test_calibration_and_reliability_are_fitted_and_saved(heads: dict[str, Path], tmp_path: Path) -> None:
    head = load_head(heads["hyperparameters"])
    trust = head.trust
    assert trust is not None and trust.calibration is not None
    metrics = json.loads((heads["hyperparameters"] / "metrics.json").read_text())
    n_val = metrics["n_models"]["validation"]
    lr = trust.calibration.targets["learning_rate"]
    assert lr.residuals is not None and len(lr.residuals) == n_val == 17
    assert np.all(np.diff(lr.residuals) >= 0)
    # the 90% half-width is the ceil(18 * 0.9) = 17th smallest validation residual
    assert trust.calibration.half_width("learning_rate", 0.9) == lr.residuals[16]
    assert math.isinf(trust.calibration.half_width("learning_rate", 0.95))  # 17 models cannot back 95%
    for t in head.spec.by_kind("categorical"):
        cal = trust.calibration.targets[t.name]
        assert 0.05 <= cal.temperature <= 20 and cal.validation_ece is not None
    test = metrics["test"]
    for key in ("learning_rate/coverage", "learning_rate/interval_width", "optimizer/ece", "family/ece"):
        assert 0 <= test[key] <= (1 if "width" not in key else 20), key
    # reliability: the test score next to each target, and the documented rule
    for name, rel in trust.reliability.items():
        if rel.metric == "r2":
            assert rel.test == pytest.approx(test[f"{name}/r2"])
            assert rel.predictable == (rel.test >= 0.1)
        else:
            assert rel.test == pytest.approx(test[f"{name}/accuracy"])
            assert rel.predictable == (rel.test > rel.majority + 0.02)
    # saved and loaded back exactly; a damaged file is an error naming it
    trust.save(tmp_path)
    again = Trust.load(tmp_path)
    assert again is not None and again.domain is not None
    assert again.calibration is not None
    assert again.calibration.to_record() == trust.calibration.to_record()
    assert again.domain.to_record() == trust.domain.to_record()  # type: ignore[union-attr]
    (tmp_path / "trust.json").write_text(json.dumps({"format_version": 1, "domain": {}, "calibration": None}))
    with pytest.raises(ZooFormatError, match=r"trust\.json.*missing field.*reliability"):
        Trust.load(tmp_path)


def test_calibrated_probabilities_keep_the_predicted_class(heads: dict[str, Path], head_zoo: Path) -> None:
    head = load_head(heads["patterns"])
    raw = LoadedHead(head.model, head.config, head.source)  # the same head without its calibration
    sds = list(load_zoo(head_zoo).final().split("test").state_dicts())
    calibrated, uncalibrated = head.predict(sds), raw.predict(sds)
    for t in head.spec.targets:
        np.testing.assert_array_equal(calibrated[t.name] >= 0.5, uncalibrated[t.name] >= 0.5)


# ------------------------------------------------------------------------------------------ the math
def test_split_conformal_intervals_cover_at_their_level() -> None:
    rng = np.random.default_rng(0)
    t = TargetSpec("y", "continuous")
    spec = TaskSpec("accuracy", (t,))
    coverages = []
    for _ in range(200):  # exchangeable calibration and test data: coverage >= level on average
        noise = rng.standard_t(3, size=100 + 500)
        cal = fit_calibration(spec, {"y": noise[:100]}, {"y": np.zeros(100)})
        low, high = cal.intervals(spec, {"y": np.zeros(500)}, 0.9)["y"]
        coverages.append(interval_coverage(noise[100:], low, high)[0])
    assert 0.9 <= float(np.mean(coverages)) <= 0.92
    assert conformal_quantile(np.arange(1.0, 9.0), 0.9) == math.inf  # n = 8 < 1/0.1 - 1 is not enough
    assert conformal_quantile(np.arange(1.0, 10.0), 0.9) == 9.0
    assert conformal_quantile(np.arange(1.0, 20.0), 0.9) == 18.0  # ceil(20 * 0.9) = 18th smallest


def test_temperature_scaling_repairs_overconfidence() -> None:
    rng = np.random.default_rng(1)
    t = TargetSpec("c", "categorical", classes=("a", "b", "c"))
    spec = TaskSpec("hyperparameters", (t,))

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        logits = rng.normal(size=(n, 3)) * 1.5
        labels = np.array([rng.choice(3, p=np.exp(z) / np.exp(z).sum()) for z in logits])
        sharp = np.exp(4 * logits)  # the model's probabilities: 4x too confident
        return sharp / sharp.sum(1, keepdims=True), labels

    val_p, val_y = sample(400)
    test_p, test_y = sample(2000)
    cal = fit_calibration(spec, {"c": val_y}, {"c": val_p})
    assert 3 < cal.targets["c"].temperature < 5.5
    before = expected_calibration_error(t, test_p, test_y)
    after = expected_calibration_error(t, cal.apply(spec, {"c": test_p})["c"], test_y)
    assert after < 0.05 < before
    np.testing.assert_array_equal(cal.apply(spec, {"c": test_p})["c"].argmax(1), test_p.argmax(1))


def test_reliability_rule() -> None:
    spec = TaskSpec(
        "hyperparameters",
        (TargetSpec("x", "continuous"), TargetSpec("c", "categorical", classes=("a", "b"))),
    )
    y = np.linspace(0, 1, 50)
    majority = np.array([0] * 40 + [1] * 10)  # always answering "a" scores 0.8
    guess = np.tile([[0.9, 0.1]], (50, 1))
    rel = reliability(spec, {"x": y, "c": majority}, {"x": y, "c": majority}, {"x": y[::-1], "c": guess})
    assert rel["x"].metric == "r2" and rel["x"].test < 0.1 and rel["x"].predictable is False
    assert rel["c"].test == rel["c"].majority == 0.8 and rel["c"].predictable is False
    good = np.where(majority[:, None] == 0, [[0.9, 0.1]], [[0.1, 0.9]])
    rel = reliability(spec, {"x": y, "c": majority}, {"x": y, "c": majority}, {"x": y, "c": good})
    assert (
        rel["x"].predictable and rel["c"].predictable and rel["c"].describe().startswith("test accuracy 1.00")
    )


def test_gbm_head_files_are_strict(heads: dict[str, Path], tmp_path: Path) -> None:
    from zooprobe.errors import ConfigError
    from zooprobe.heads.head_loader import load_head_folder

    head = load_head(heads["gbm"])
    assert head.kind == "gbm" and (heads["gbm"] / "head" / "gbm.json").is_file()
    folder = tmp_path / "head"
    shutil.copytree(heads["gbm"] / "head", folder)
    doc = json.loads((folder / "gbm.json").read_text())
    doc["features"] = "stats+rep"  # models that read other inputs than config.json says
    (folder / "gbm.json").write_text(json.dumps(doc))
    with pytest.raises(ZooFormatError, match=r"modified after it was saved \(changed: gbm\.json"):
        load_head_folder(folder, head.model.loaded)  # the content hash sees the edit first
    with pytest.raises(ZooFormatError, match=r"gbm\.json: its models .* do not match config\.json"):
        load_head_folder(folder, head.model.loaded, trust=True)
    (folder / "gbm.json").unlink()
    with pytest.raises(ZooFormatError, match=r"no gbm\.json"):
        load_head_folder(folder, head.model.loaded, trust=True)
    with pytest.raises(ConfigError, match=r"head\.kind=gbm .* use mode=frozen"):
        TrainConfig(mode="finetune", head=HeadConfig(kind="gbm")).validate()
