"""The public API a user discovers from `import zooprobe`: the whole pipeline with consistent verbs, labelled
predictions, `Probe`, presets, and save/load of every artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import zooprobe
from zooprobe import OptimConfig, Probe, TrainConfig


def test_import_is_light_and_every_exported_name_resolves() -> None:
    r = subprocess.run(
        [sys.executable, "-c", "import sys, zooprobe; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr  # names load on first use
    for name in zooprobe.__all__:
        assert getattr(zooprobe, name) is not None, name
    for verb in ("build_zoo", "load_zoo", "load_encoder", "save_encoder", "load_head", "save_head"):
        assert callable(getattr(zooprobe, verb))
    for verb in ("pretrain_encoder", "train", "predict", "evaluate"):
        assert callable(getattr(zooprobe, verb))
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        _ = zooprobe.nonsense


def test_list_presets_shows_every_preset_with_values() -> None:
    presets = zooprobe.list_presets()
    assert set(presets) == {"zoo", "encoder", "encoder-neurons", "head"}
    assert (
        presets["encoder-neurons"]["bench"]["epochs"] == 20
        and "window" not in presets["encoder-neurons"]["tiny"]
    )
    assert {"tiny", "small", "bench"} <= set(presets["zoo"]) and presets["zoo"]["small"]["n_models"] == 256
    assert presets["encoder"]["small"]["epochs"] > 0 and "d_model" in presets["encoder"]["bench"]
    assert presets["head"]["frozen"]["optim"]["epochs"] == 200  # the demo's settings


def _trained(head_zoo: Path, head_encoder: Path, out: Path, task: str) -> Path:
    cfg = TrainConfig(task=task, zoo=str(head_zoo), encoder=str(head_encoder), optim=OptimConfig(epochs=3))
    zooprobe.train(cfg, out, progress=False)
    return out


def test_predict_returns_labelled_rows(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    run = _trained(head_zoo, head_encoder, tmp_path / "hp", "hyperparameters")
    head = zooprobe.load_head(run)
    zoo = zooprobe.load_zoo(head_zoo).final().split("test")
    sd = zoo.state_dict(0)
    from safetensors.torch import save_file

    save_file(sd, tmp_path / "m.safetensors", metadata={"order": json.dumps(list(sd))})  # the layer order
    table = zooprobe.predict(head, [sd, tmp_path / "m.safetensors"], show_unpredictable=True)
    assert isinstance(table, pd.DataFrame) and list(table.index) == [
        "model 0",
        str(tmp_path / "m.safetensors"),
    ]
    optimizer = next(t for t in head.spec.targets if t.name == "optimizer")
    assert table["optimizer"].iloc[0] in optimizer.classes  # class names, not indices
    p_cols = [f"P(optimizer={c})" for c in optimizer.classes]
    np.testing.assert_allclose(table[p_cols].sum(axis=1), 1.0, rtol=1e-5)
    lr = table["learning_rate"].to_numpy()  # natural units: 10 ** the log10 prediction
    np.testing.assert_allclose(lr, 10 ** table["learning_rate_log10"].to_numpy())
    assert (lr > 0).all() and (lr < 10).all()
    assert (table["learning_rate_low"] < lr).all() and (lr < table["learning_rate_high"]).all()  # intervals
    assert table["in_domain"].tolist() == [True, True]  # a test model of the training zoo
    numbers = table.select_dtypes("number").to_numpy()  # the same model, as a state dict and as a file
    np.testing.assert_allclose(numbers[0], numbers[1], rtol=1e-6)
    raw = head.predict([sd])
    np.testing.assert_allclose(table["learning_rate_log10"].iloc[0], raw["learning_rate"][0], rtol=1e-6)


def test_save_head_and_load_head_folder_round_trip(
    head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    from zooprobe.heads import load_head_folder, save_head

    run = _trained(head_zoo, head_encoder, tmp_path / "acc", "accuracy")
    head = zooprobe.load_head(run)
    copy = save_head(head.model, head.config, tmp_path / "copy")
    again = load_head_folder(copy, head.model.loaded)
    sds = list(zooprobe.load_zoo(head_zoo).final().split("test").state_dicts())
    np.testing.assert_array_equal(head.predict(sds)["test_accuracy"], again.predict(sds)["test_accuracy"])
    assert zooprobe.save_head is save_head


def test_probe_fits_predicts_and_scores(head_zoo: Path, head_encoder: Path) -> None:
    probe = Probe(task="accuracy", encoder=str(head_encoder), optim=OptimConfig(epochs=5, batch_size=8))
    with pytest.raises(zooprobe.ConfigError, match="not fitted"):
        probe.predict([])
    assert probe.fit(head_zoo) is probe
    sds = list(zooprobe.load_zoo(head_zoo).final().split("test").state_dicts())[:3]
    table = probe.predict(sds)
    assert table.columns[0] == "test_accuracy" and len(table) == 3
    assert {"test_accuracy_reliability", "in_domain", "domain_reasons"} <= set(table.columns)
    assert probe.score() == pytest.approx(probe.evaluate()["r2"])
    assert probe.run_dir.is_dir() and (probe.run_dir / "metrics.json").is_file()
    with pytest.raises(zooprobe.ConfigError, match="unknown TrainConfig field"):
        Probe(task="accuracy", epochs=3)
