"""The generic flat-vector importer: a weights matrix (.npy or .safetensors), a layout (CSV or JSON) and a
metadata table, in the torch and keras conventions; splits, renamed columns, and bad layouts and values."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import save_file

from files import WIDTH, json_layout, metadata_rows
from zooprobe.api import load_zoo
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.zoo.flat import import_flat, read_layout


@pytest.fixture
def flat_zoo(tmp_path: Path) -> tuple[Path, Path, Path, np.ndarray]:
    rows = metadata_rows(6)
    weights = np.random.default_rng(0).normal(size=(len(rows), WIDTH)).astype(np.float32)
    save_file({"weights": weights}, str(tmp_path / "w.safetensors"))
    meta = tmp_path / "meta.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "w.safetensors", json_layout(tmp_path / "layout.json"), meta, weights


def test_torch_layout_safetensors_and_jsonl(flat_zoo, tmp_path: Path) -> None:
    weights_file, layout, meta, weights = flat_zoo
    report = import_flat(
        weights_file,
        layout,
        meta,
        tmp_path / "zoo",
        step="all",
        columns={"l2": "weight_decay"},
        progress=False,
    )
    assert report.imported == 12 and report.runs == 6
    zoo = load_zoo(tmp_path / "zoo")
    metadata = zoo.metadata()
    assert dict(zip(metadata["model_id"], metadata["split"], strict=True)) == {
        f"m{r}": ["train", "validation", "test"][r % 3] for r in range(6)
    }
    for i in range(len(zoo)):
        row = metadata.iloc[i]
        vector = torch.from_numpy(weights[int(row["source_row"])])
        sd = zoo.state_dict(i)
        assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
        assert torch.equal(torch.cat([t.flatten() for t in sd.values()]), vector)
        assert row["weight_decay"] == pytest.approx(10.0 ** -int(row["model_id"][1:]))
        assert row["optimizer"] in ("adam", "sgd") and row["note"].startswith("run ")
        assert row["is_final"] == (row["checkpoint_epoch"] == 2)
    assert not metadata["has_conv_layers"].any() and (metadata["num_params"] == WIDTH).all()


def test_keras_convention_and_hash_splits(tmp_path: Path) -> None:
    entries = [
        ("model/dense/kernel:0", (4, 3)),
        ("model/dense/bias:0", (3,)),
        ("model/conv1d/kernel:0", (5, 2, 3)),
    ]
    position, lines = 0, ["name,start,end,shape"]
    for name, shape in entries:
        lines.append(f'{name},{position},{position + math.prod(shape)},"{list(shape)}"')
        position += math.prod(shape)
    (tmp_path / "layout.csv").write_text("\n".join(lines) + "\n")
    weights = np.arange(4 * position, dtype=np.float64).reshape(4, position)
    np.save(tmp_path / "w.npy", weights)
    pd.DataFrame({"test_accuracy": [0.1, 0.2, 0.3, 0.4]}).to_csv(tmp_path / "m.csv", index=False)
    import_flat(
        tmp_path / "w.npy", tmp_path / "layout.csv", tmp_path / "m.csv", tmp_path / "zoo",
        layout_convention="keras", split_fractions=(0.5, 0.0, 0.5), seed=3, progress=False,
    )  # fmt: skip
    zoo = load_zoo(tmp_path / "zoo")
    meta = zoo.metadata()
    assert sorted(meta["model_id"]) == ["row0", "row1", "row2", "row3"]  # no id column: a run per row
    assert set(meta["split"]) <= {"train", "test"}
    for i in range(len(zoo)):
        sd = zoo.state_dict(i)
        vector = weights[int(meta["source_row"].iloc[i])]
        assert list(sd) == ["conv1d.weight", "dense.weight", "dense.bias"]  # PyTorch order, not Keras's
        assert sd["dense.weight"].dtype == torch.float64
        assert torch.equal(sd["dense.weight"], torch.from_numpy(vector[:12].reshape(4, 3).T.copy()))
        conv = vector[15:].reshape(5, 2, 3).transpose(2, 1, 0)  # WIO -> OIW
        assert torch.equal(sd["conv1d.weight"], torch.from_numpy(conv.copy()))
    again = tmp_path / "again"
    import_flat(
        tmp_path / "w.npy", tmp_path / "layout.csv", tmp_path / "m.csv", again,
        layout_convention="keras", split_fractions=(0.5, 0.0, 0.5), seed=3, progress=False,
    )  # fmt: skip
    assert load_zoo(again).metadata()["split"].tolist() == meta["split"].tolist()  # hash: deterministic


@pytest.mark.parametrize(
    "entries, width, message",
    [
        ([("a", (2,), 0, 2), ("b", (3,), 3, 6)], 6, r"values 2..3 of each vector belong to no entry"),
        ([("a", (2,), 0, 2), ("b", (3,), 1, 4)], 4, "inside the entry before it"),
        ([("a", (2, 2), 0, 3)], 3, r"covers values 0..3 \(3 values\) but its shape \(2, 2\) holds 4"),
        ([("a", (2,), 0, 2)], 3, "covers 2 values but each vector in the weights file has 3"),
    ],
)
def test_layouts_that_do_not_fit_are_refused(tmp_path: Path, entries: list, width: int, message: str) -> None:
    lines = ["name,start_idx,end_idx,shape"] + [f'{n},{s},{e},"{shape}"' for n, shape, s, e in entries]
    (tmp_path / "layout.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidInputError, match=message):
        read_layout(tmp_path / "layout.csv", width)


def test_bad_values_name_the_row_and_can_be_skipped(flat_zoo, tmp_path: Path) -> None:
    weights_file, layout, meta, _ = flat_zoo
    rows = metadata_rows(6)
    rows[3]["test_accuracy"] = 1.5
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InvalidInputError, match=r"row 4 \(weights row 3\): field 'test_accuracy': 1.5"):
        import_flat(weights_file, layout, meta, tmp_path / "zoo", step="all", progress=False)
    assert not (tmp_path / "zoo").exists()
    report = import_flat(
        weights_file, layout, meta, tmp_path / "zoo", step="all", skip_invalid=True, progress=False
    )
    assert report.imported == 11 and len(report.skipped) == 1 and "row 4" in report.skipped[0][0]
    with pytest.raises(ConfigError, match="columns: \\['nope'\\] are not columns"):
        import_flat(weights_file, layout, meta, tmp_path / "x", columns={"nope": "seed"}, progress=False)
    with pytest.raises(ConfigError, match="step must be"):
        import_flat(weights_file, layout, meta, tmp_path / "x", step="last", progress=False)
    two = tmp_path / "two.safetensors"
    save_file({"a": np.random.default_rng(1).normal(size=(12, WIDTH)), "b": np.zeros((1, 1))}, str(two))
    with pytest.raises(InvalidInputError, match="holds 2 tensors"):
        import_flat(two, layout, meta, tmp_path / "x", progress=False)
    report = import_flat(
        two, layout, meta, tmp_path / "two", weights_key="a", skip_invalid=True, progress=False
    )
    assert report.imported == 5  # run m1's final checkpoint is the bad row: no earlier one stands in for it


def test_command_line(flat_zoo, tmp_path: Path) -> None:
    weights_file, layout, meta, _ = flat_zoo
    args = ["zoo", "import-flat", str(weights_file), "--layout", str(layout), "--metadata", str(meta)]
    run = [sys.executable, "-m", "zooprobe", *args, "--progress", "false"]
    env = {**os.environ, "COLUMNS": "200"}
    options = ["--output", str(tmp_path / "zoo"), "--columns", '{"l2": "weight_decay"}', "--step", "all"]
    r = subprocess.run([*run, *options], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "Imported 12 checkpoint(s) of 6 run(s)" in r.stdout
    assert load_zoo(tmp_path / "zoo").metadata()["weight_decay"].notna().all()
    layout.write_text(json.dumps([{"name": "0.weight", "shape": [3, 4], "offset": 0}]))
    r = subprocess.run([*run, "--output", str(tmp_path / "x")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "covers 12 values but each vector in the weights file has 23" in r.stderr


def test_copies_across_splits_are_reported(tmp_path: Path) -> None:
    weights = np.random.default_rng(2).normal(size=(4, WIDTH)).astype(np.float32)
    weights[3] = weights[0]  # run m3 (test) is a copy of run m0 (train)
    np.save(tmp_path / "w.npy", weights)
    rows = [{"model_id": f"m{i}", "split": s} for i, s in enumerate(["train", "train", "validation", "test"])]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    with pytest.warns(
        UserWarning, match=r"1 checkpoint\(s\) have identical weights .*'m0' = 'm3' in train/test"
    ):
        import_flat(
            tmp_path / "w.npy", json_layout(tmp_path / "l.json"), tmp_path / "m.csv", tmp_path / "zoo"
        )
    manifest = json.loads((tmp_path / "zoo" / "zooprobe_manifest.json").read_text())
    (leak,) = manifest["split_leaks"]
    assert leak["model_ids"] == ["m0", "m3"] and leak["splits"] == ["train", "test"]
