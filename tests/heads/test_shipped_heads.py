"""The heads shipped inside the package: loaded by name, used by `predict` without --head, their corpus
reference (nearest corpus models)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import zooprobe
from zooprobe.cli.main import main
from zooprobe.errors import InvalidInputError
from zooprobe.heads.integrity import HeadModifiedError
from zooprobe.heads.shipped import SHIPPED_HEADS, load_reference, shipped_head_folder


def _mlp_file(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def test_every_shipped_head_is_in_the_package_and_loads_by_name() -> None:
    assert zooprobe.list_shipped_heads() == list(SHIPPED_HEADS)
    heads = zooprobe.default_heads()
    assert [h.spec.task for h in heads] == list(SHIPPED_HEADS.values())
    assert len({id(h.model.loaded) for h in heads}) == 1  # one foundation encoder shared by all three
    for head in heads:
        assert head.kind == "gbm" and head.config["encoder"]["source"] == "foundation"
        assert head.trust is not None  # applicability domain and intervals come with it
    hp = heads[1].spec
    assert {"learning_rate", "optimizer", "activation", "scheduler", "normalization"} <= set(hp.names)
    assert zooprobe.load_head("foundation-accuracy").spec.task == "accuracy"


def test_an_unknown_or_changed_shipped_head_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not a shipped head; the shipped heads are foundation-"):
        shipped_head_folder("foundation-dreams")
    copy = tmp_path / "head"
    shutil.copytree(shipped_head_folder("foundation-accuracy"), copy)
    gbm = copy / "gbm.json"
    gbm.write_text(gbm.read_text().replace("leaf_value=", "leaf_value=1", 1))
    with pytest.raises(HeadModifiedError):
        zooprobe.load_head(copy)


def test_predict_without_head_uses_every_shipped_head(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = [_mlp_file(tmp_path / f"net{i}.safetensors", seed=i) for i in range(2)]
    out = tmp_path / "predictions.json"
    assert main(["predict", "--json", str(out), *map(str, files)]) == 0
    stdout = capsys.readouterr().out
    assert all(f"head {name}" in stdout for name in SHIPPED_HEADS)
    doc = json.loads(out.read_text())
    docs = doc["heads"]  # several heads: one document each
    assert [d["task"] for d in docs] == list(SHIPPED_HEADS.values())
    for d in docs:
        assert [p["file"] for p in d["predictions"]] == [str(f) for f in files]
        for p in d["predictions"]:
            assert p["in_domain"] in (True, False)  # every prediction carries the domain flag
    # a 20-feature, 4-class MLP is no task of the corpus: its accuracy is flagged, with the reason
    accuracy = docs[0]["predictions"][0]
    assert accuracy["in_domain"] is False
    assert any("matches no task of the training zoo" in r for r in accuracy["domain"]["reasons"])
    hp = docs[1]["predictions"][0]["targets"]
    assert sum(hp["optimizer"]["probabilities"].values()) == pytest.approx(1.0)
    assert "interval" in json.dumps(hp["learning_rate"])  # a continuous target comes with its interval
    # the same predictions from the API, from the shipped heads as objects
    table = zooprobe.predict(zooprobe.default_heads(), [str(f) for f in files])
    assert len(table) == 2 and any(c.startswith("hyperparameters/") for c in table.columns)


def test_the_corpus_reference_finds_a_corpus_model_as_its_own_nearest() -> None:
    ref = load_reference()
    assert ref is not None and len(ref.metadata) == len(ref.representation) >= 1000
    assert {"model_id", "dataset", "optimizer", "learning_rate", "test_accuracy"} <= set(ref.metadata.columns)
    k = 17
    near = ref.nearest(ref.representation[k], 5)
    assert len(near) == 5 and near["model_id"].iloc[0] == ref.metadata["model_id"].iloc[k]
    assert near["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-3)
    assert np.all(np.diff(near["similarity"].to_numpy()) <= 0)  # most similar first
    with pytest.raises(InvalidInputError, match="another encoder"):
        ref.nearest(np.zeros(3))
