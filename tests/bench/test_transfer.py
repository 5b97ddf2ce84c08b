"""`zooprobe bench transfer`: leave-one-generator-out folds, the leakage guard, the table and resuming."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import zooprobe.bench.transfer as transfer_module
from files import write_csv
from zooprobe.api import load_zoo
from zooprobe.bench.transfer import (
    Fold,
    FoldLeakError,
    build_folds,
    cell_key,
    check_fold,
    transfer,
)
from zooprobe.zoo.importers import import_checkpoint_folder


@pytest.fixture(scope="module")
def foreign_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """14 plain-PyTorch MLPs (``net.0.weight`` naming, not the generator's) imported with import-folder."""
    root = tmp_path_factory.mktemp("foreign")
    folder = root / "ckpts"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(14):
        torch.manual_seed(i)
        net = nn.Module()
        net.net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))  # type: ignore[assignment]
        sd = {k: v * (1 + i / 7) for k, v in net.state_dict().items()}
        save_file(sd, folder / f"f{i}.safetensors", metadata={"order": json.dumps(list(sd))})
        rows.append(
            {
                "file": f"f{i}.safetensors",
                "split": (["train"] * 8 + ["validation"] * 2 + ["test"] * 4)[i],
                "test_accuracy": f"{rng.uniform(0.3, 0.9):.3f}",
                "optimizer": "adam" if i % 2 else "sgd",
                "learning_rate": f"{10 ** rng.uniform(-4, -1):.6f}",
            }
        )
    meta = write_csv(root / "meta.csv", rows)
    import_checkpoint_folder(folder, meta, root / "zoo")
    return root / "zoo"


def _final_ids(zoo_path: Path) -> set[str]:
    return set(load_zoo(zoo_path).final().metadata()["model_id"].astype(str))


def test_folds_are_disjoint_complete_and_leave_the_attribute_out(head_zoo: Path) -> None:
    corpus = load_zoo(head_zoo)
    meta = corpus.final().metadata()
    folds = build_folds(corpus, str(head_zoo), ("datasets", "families", "recipes"))
    expected = {f"dataset={v}" for v in meta["dataset"].unique()}
    expected |= {f"family={v}" for v in meta["family"].unique()}
    expected |= {f"optimizer={v}" for v in meta["optimizer"].unique()}  # one scheduler: no scheduler folds
    assert {f.name for f in folds} == expected
    everything = _final_ids(head_zoo)
    for fold in folds:
        seen, held = fold.seen_ids(), fold.held_ids()
        assert seen and held and not seen & held, fold.name
        assert seen | held == everything, fold.name  # complete: every run on one side
        assert fold.attribute is not None
        assert not fold.seen.metadata()[fold.attribute].astype(str).isin(fold.values).any()
        assert fold.held.metadata()[fold.attribute].astype(str).isin(fold.values).all()
        # the seen side as a zoo view for a per-fold pretraining: every checkpoint of the seen runs
        view = fold.seen_view(corpus)
        all_meta = corpus.metadata()
        assert len(view) == int(all_meta["model_id"].astype(str).isin(seen).sum())
        check_fold(fold, seen=view)
        with pytest.raises(FoldLeakError):
            check_fold(fold, seen=corpus)  # the whole corpus as the pretraining side leaks


def test_the_guard_fails_when_the_fold_builder_leaks(head_zoo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = transfer_module._attribute_fold

    def leaking(*args: Any) -> Fold:
        fold = real(*args)
        corpus = args[3]
        seen_index = np.append(fold.seen_index, fold.held_index[0])  # one held-out run also on the seen side
        return Fold(**{**fold.__dict__, "seen_index": seen_index, "seen": corpus.select(seen_index)})

    monkeypatch.setattr(transfer_module, "_attribute_fold", leaking)
    with pytest.raises(FoldLeakError, match="held-out run"):
        build_folds(load_zoo(head_zoo), str(head_zoo), ("datasets",))


def test_the_guard_catches_a_foreign_zoo_that_is_the_corpus(head_zoo: Path) -> None:
    corpus = load_zoo(head_zoo)
    with pytest.raises(FoldLeakError, match="held-out zoo itself"):
        build_folds(corpus, "corpus", ("foreign",), {"again": load_zoo(head_zoo)})


def test_transfer_end_to_end_with_a_foreign_zoo_and_resume(
    head_zoo: Path, head_encoder: Path, foreign_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "transfer"
    options: dict[str, Any] = {
        "foreign": [str(foreign_zoo)],
        "encoders": [str(head_encoder), "nobody/no-encoder"],  # offline: not loadable, reported, left out
        "groups": ("datasets", "foreign"),
        "output": out,
        "targets": ("accuracy", "optimizer", "patterns"),
        "progress": False,
    }
    doc = transfer(str(head_zoo), **options)
    enc = str(head_encoder)
    assert doc["encoders"]["nobody/no-encoder"]["loaded"] is False and doc["encoders"][enc]["loaded"] is True
    folds = list(doc["folds"])
    assert len(folds) == 3 and f"foreign:{foreign_zoo}" in folds
    n_cells = len(folds) * 6  # 3 encoder methods x 1 loaded encoder + 3 encoder-free methods
    assert len(doc["cells"]) == n_cells

    def value(fold: str, method: str, encoder: str, target: str) -> float | None:
        return doc["cells"][cell_key(fold, method, encoder)]["targets"][target]["value"]

    for method in ("stats+gbm", "zero-shot stats+gbm"):
        values = [value(f, method, "-", "accuracy") for f in folds]
        assert any(v is not None and math.isfinite(v) for v in values), method
    foreign = f"foreign:{foreign_zoo}"
    assert value(foreign, "stats+gbm", "-", "optimizer") is not None
    # the foreign zoo records no activation and no has_* flags worth scoring: n/a, never a crash
    assert doc["cells"][cell_key(foreign, "floor", "-")]["targets"]["patterns"]["value"] is None
    md = (out / "transfer.md").read_text()
    assert "| encoder | method | datasets | foreign |" in md
    assert f"| {enc} | stats+rep+gbm |" in md and f"| {enc} | gain |" in md and "| - | stats+gbm |" in md
    assert "encoder `nobody/no-encoder`: not loadable" in md and "## Per fold" in md
    saved = json.loads((out / "transfer.json").read_text())
    assert set(saved["cells"]) == set(doc["cells"])

    # resume: finished cells are skipped; a removed cell is the only work done
    calls: list[str] = []
    real = transfer_module._baseline_predictions

    def counting(method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        return real(method, *args, **kwargs)

    monkeypatch.setattr(transfer_module, "_baseline_predictions", counting)
    again = transfer(str(head_zoo), **options)
    assert calls == [] and again["cells"] == saved["cells"]
    key = cell_key(folds[0], "stats+gbm", "-")
    del saved["cells"][key]
    (out / "transfer.json").write_text(json.dumps(saved))
    transfer(str(head_zoo), **options)
    scored = [t for t, r in doc["cells"][key]["targets"].items() if "metrics" in r]
    assert calls == ["gbm"] * len(scored)
    # other zoos under the same output: refused, not mixed
    with pytest.raises(Exception, match="other zoos"):
        transfer(str(head_zoo), **{**options, "foreign": []})


def test_cli_bench_transfer(head_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zooprobe.bench.transfer import GROUPS
    from zooprobe.cli import main
    from zooprobe.cli.train import TRANSFER_GROUPS

    assert TRANSFER_GROUPS == GROUPS  # the --help copy stays equal
    out = tmp_path / "cli"
    args = [
        "bench",
        "transfer",
        "--corpus",
        str(head_zoo),
        "--folds",
        "families",
        "--encoders",
        "nobody/no-encoder",
    ]
    code = main([*args, "--targets", "accuracy,log10_lr", "--output", str(out), "--progress", "false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| - | stats+gbm |" in printed and "written:" in printed
    doc = json.loads((out / "transfer.json").read_text())
    assert {c["method"] for c in doc["cells"].values()} == {"stats+gbm", "zero-shot stats+gbm", "floor"}
    assert set(doc["targets"]) == {"accuracy", "log10_lr"}
    assert main([*args, "--folds", "datasets,bogus", "--output", str(out)]) != 0
