"""What `zooprobe predict` and `zooprobe.predict` tell a user about trust: the applicability domain (with
``--strict``), intervals, reliability, withheld targets, several heads at once, and never a silent NaN."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trained_heads import TrainedHeads
from zooprobe.api import load_head, load_zoo
from zooprobe.baselines.models import fit_baseline
from zooprobe.cli import main
from zooprobe.core.checkpoints import load_checkpoint
from zooprobe.heads.head_loader import LoadedHead, NonFiniteError
from zooprobe.inference import NOT_PREDICTABLE, OutOfDomainError, format_predictions, predict, predict_files
from zooprobe.symmetry import canonical_state_dicts
from zooprobe.tokens.statistics import featurize


@pytest.fixture(scope="module")
def heads(trained_heads: TrainedHeads) -> dict[str, Path]:
    """A neural hyperparameters head and a gradient-boosting accuracy head (the session's shared runs)."""
    return {"hp": trained_heads["hyperparameters"], "acc": trained_heads["accuracy-gbm"]}


def _save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"order": json.dumps(list(sd))})
    return path


@pytest.fixture(scope="module")
def files(head_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trust-files")
    sd = load_zoo(head_zoo).final().split("test").state_dict(0)
    first = next(iter(sd))
    huge = {k: v.clone() for k, v in sd.items()}
    huge[first].view(-1)[0] = 1e20
    tiny = {k: v * 1e-30 if v.is_floating_point() else v for k, v in sd.items()}
    subnormal = {k: torch.full_like(v, 1e-40) if v.is_floating_point() else v for k, v in sd.items()}
    assert subnormal[first][0, 0] != 0 and subnormal[first][0, 0] < torch.finfo(torch.float32).tiny
    torch.manual_seed(0)
    nets = {
        "model": sd,
        "huge": huge,
        "tiny": tiny,
        "subnormal": subnormal,
        "transformer": torch.nn.TransformerEncoderLayer(32, 4, 64).state_dict(),
        "lstm": torch.nn.LSTM(16, 32).state_dict(),
    }
    return {name: _save(net, root / f"{name}.safetensors") for name, net in nets.items()}


def _strict_json(path: Path) -> Any:
    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_strict_exits_non_zero_on_foreign_networks_and_json_flags_them(
    heads: dict[str, Path], files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    both = ["--head", str(heads["hp"]), "--head", str(heads["acc"])]
    out = tmp_path / "in.json"
    assert main(["predict", *both, str(files["model"]), "--strict", "true", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and captured.out.count("in domain: yes") == 2
    doc = _strict_json(out)
    assert [h["task"] for h in doc["heads"]] == ["hyperparameters", "accuracy"]
    assert [h["kind"] for h in doc["heads"]] == ["mlp", "gbm"]
    acc = doc["heads"][1]["predictions"][0]
    assert acc["in_domain"] is True and acc["domain"]["statistics"]["percentile"] <= 100
    entry = acc["targets"]["test_accuracy"]
    assert entry["reliability"]["metric"] == "r2" and entry["predictable"] == (
        entry["reliability"]["test"] >= 0.1
    )

    foreign = [str(files["transformer"]), str(files["lstm"])]
    out = tmp_path / "out.json"
    assert (
        main(["predict", *both, str(files["model"]), *foreign, "--strict", "true", "--json", str(out)]) == 2
    )
    captured = capsys.readouterr()
    assert captured.err.count("lies outside the applicability domain") == 4  # 2 networks x 2 heads
    assert "zooprobe: error: --strict: 4 prediction(s)" in captured.err and "Traceback" not in captured.err
    assert "OUT OF DOMAIN" in captured.out and "attention never seen in the training zoo" in captured.out
    doc = _strict_json(out)  # written before the strict failure
    for h in doc["heads"]:
        flags = [p["in_domain"] for p in h["predictions"]]
        assert flags == [True, False, False]
        assert "recurrent never seen" in " ".join(h["predictions"][2]["domain"]["reasons"])
    # without --strict the same command succeeds, with the warnings
    assert main(["predict", *both, *foreign]) == 0
    assert capsys.readouterr().err.count("lies outside the applicability domain") == 4


def test_no_output_holds_a_nan_for_extreme_weights(
    heads: dict[str, Path], files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extreme = [str(files[n]) for n in ("huge", "tiny", "subnormal")]
    for show in ("false", "true"):
        out = tmp_path / f"extreme-{show}.json"
        args = ["--head", str(heads["hp"]), "--head", str(heads["acc"]), "--show_unpredictable", show]
        assert main(["predict", *args, *extreme, "--json", str(out)]) == 0
        captured = capsys.readouterr()
        text = captured.out + captured.err + out.read_text()
        assert not re.search(r"\b(nan|NaN|-?Infinity|-?inf)\b", text), text
        doc = _strict_json(out)
        for h in doc["heads"]:
            assert h["predictions"][0]["in_domain"] is False  # 1e20: far outside the zoo
    # a head whose weights hold NaN: a clear error naming the file and the cause, exit status 2
    broken = tmp_path / "broken-head"
    shutil.copytree(heads["hp"] / "head", broken)
    with safe_open(str(broken / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    trunk = next(k for k in tensors if "trunk" in k and k.endswith("weight"))
    tensors[trunk] = torch.full_like(tensors[trunk], float("nan"))
    save_file(tensors, str(broken / "model.safetensors"), metadata=meta)
    assert main(["predict", "--head", str(broken), str(files["model"])]) == 2
    assert "changed: model.safetensors" in capsys.readouterr().err  # the content hash sees the edit
    assert main(["predict", "--head", str(broken), "--trust", "true", str(files["model"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"zooprobe: error: {files['model']}: the head's output for") and "not finite" in err
    with pytest.raises(NonFiniteError, match="model 0: the head's output"):
        predict(str(broken), [_load(files)], trust=True)


def _load(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    return load_checkpoint(files["model"])  # in the recorded layer order


def test_unpredictable_targets_are_withheld_and_domains_reported(
    heads: dict[str, Path], files: dict[str, Path]
) -> None:
    head = load_head(heads["hp"])
    assert head.trust is not None
    head.trust.reliability["learning_rate"].predictable = False  # as a zoo that does not determine them
    head.trust.reliability["optimizer"].predictable = False
    head.trust.reliability["family"].predictable = True
    model = _load(files)
    table = predict(head, model)
    assert table["learning_rate"].iloc[0] == NOT_PREDICTABLE and table["optimizer"].iloc[0] == NOT_PREDICTABLE
    assert not any(c.startswith(("learning_rate_log10", "learning_rate_low", "P(optimizer=")) for c in table)
    assert table["family"].iloc[0] in ("mlp", "cnn") and "P(family=mlp)" in table
    assert np.isfinite(table["learning_rate_reliability"].iloc[0]) and table["in_domain"].iloc[0]
    shown = predict(head, model, show_unpredictable=True, level=0.8)
    low, high = shown["learning_rate_low"].iloc[0], shown["learning_rate_high"].iloc[0]
    assert low < shown["learning_rate"].iloc[0] < high and shown.attrs["level"] == 0.8
    wide = predict(head, model, show_unpredictable=True, level=0.9)
    assert wide["learning_rate_low"].iloc[0] <= low and high <= wide["learning_rate_high"].iloc[0]

    result = predict_files(head, [files["model"]])[0]
    lr = result["targets"]["learning_rate"]
    assert lr["predicted"] is None and lr["note"] == NOT_PREDICTABLE and "value" not in lr
    assert result["targets"]["family"]["predicted"] in ("mlp", "cnn")
    lines = format_predictions([result])
    assert any(line.strip().startswith("learning_rate") and NOT_PREDICTABLE in line for line in lines)
    assert any("test R²" in line for line in lines) and any("90% interval" in line for line in lines)

    # several heads in one call: columns prefixed with the labels given
    both = predict({"hp": head, "acc": load_head(heads["acc"])}, [model, files["lstm"]])
    assert {"hp/in_domain", "acc/in_domain", "acc/test_accuracy", "acc/test_accuracy_reliability"} <= set(
        both
    )
    assert both["acc/in_domain"].tolist() == [True, False]

    # strict: foreign networks are an error; a head saved without a domain cannot vouch for anything
    with pytest.raises(OutOfDomainError, match=r"1 of 2 prediction\(s\).*recurrent"):
        predict(head, [model, files["lstm"]], strict=True)
    bare = LoadedHead(head.model, head.config, head.source)
    table = predict(bare, model)
    assert table["in_domain"].iloc[0] is None and "no applicability domain" in table["domain_reasons"].iloc[0]
    with pytest.raises(OutOfDomainError, match="no applicability domain"):
        predict(bare, model, strict=True)


def test_gbm_head_predicts_what_lightgbm_on_weight_statistics_predicts(
    heads: dict[str, Path], head_zoo: Path
) -> None:
    """The head is `fit_baseline("gbm")` on the statistics (of the canonical forms), nothing else: same
    splits, same numbers."""
    zoo = load_zoo(head_zoo).final()
    x, y = {}, {}
    for split in ("train", "validation", "test"):
        part = zoo.split(split)
        canonical = canonical_state_dicts(part.state_dicts())  # the form training reads networks in
        x[split] = featurize(canonical).astype(np.float32).astype(np.float64)  # as the head reads it
        y[split] = part.metadata()["test_accuracy"].to_numpy(dtype=np.float64)
    baseline = fit_baseline("gbm", "continuous", x["train"], y["train"], x["validation"], y["validation"])
    stored = json.loads((heads["acc"] / "predictions" / "test.json").read_text())["targets"]["test_accuracy"]
    np.testing.assert_allclose(stored["predicted"], np.clip(baseline.predict(x["test"]), 0, 1), rtol=1e-6)
    metrics = json.loads((heads["acc"] / "metrics.json").read_text())["test"]
    assert metrics["r2"] == pytest.approx(
        1 - np.sum((y["test"] - stored["predicted"]) ** 2) / np.sum((y["test"] - y["test"].mean()) ** 2)
    )
