"""The Small CNN Zoo importer on hand-written fixtures in the released file format.

A fixture is a few runs of the exact 4,970-parameter network written as the zoo ships it (google-research
``dnn_predict_accuracy``): ``weights.npy`` rows (one flat float32 vector per checkpoint, rows of a run not
adjacent), ``layout.csv`` (``varname,start_idx,end_idx,shape``, variables in name order, bias before
kernel, Keras HWIO / (in, out) kernels) and ``metrics.csv.gz`` (``config.*`` columns, ``modeldir``, ``step``,
accuracies, and the pandas index column the released file has). The converted PyTorch models must compute
what the Keras network computes: `keras_forward` is that network written in NumPy on NHWC input with the TF
layouts and Keras's default ``'valid'`` padding (``train_network.build_cnn`` passes no padding).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from zooprobe.api import load_zoo
from zooprobe.core.outputs import OutputFolderError
from zooprobe.errors import InvalidInputError, ZooFormatError
from zooprobe.zoo.cnnzoo import N_PARAMS, SmallCNN
from zooprobe.zoo.flat import import_cnnzoo
from zooprobe.zoo.importers import flat  # the import engine: tests patch its `_write_part`
from zooprobe.zoo.store import encode_weights, payload_hash

LAYOUT = [  # the released order: variables sorted by name (bias before kernel)
    ("sequential/conv2d/bias:0", (16,)),
    ("sequential/conv2d/kernel:0", (3, 3, 1, 16)),
    ("sequential/conv2d_1/bias:0", (16,)),
    ("sequential/conv2d_1/kernel:0", (3, 3, 16, 16)),
    ("sequential/conv2d_2/bias:0", (16,)),
    ("sequential/conv2d_2/kernel:0", (3, 3, 16, 16)),
    ("sequential/dense/bias:0", (10,)),
    ("sequential/dense/kernel:0", (16, 10)),
]
ACTIVATIONS = ("relu", "tanh", "sigmoid", "selu")
STEPS = (0, 20, 86)


def write_layout(path: Path, entries: list[tuple[str, tuple[int, ...]]] = LAYOUT) -> dict[str, Any]:
    """layout.csv as released (shape as a Python tuple text); returns name -> (start, end, shape)."""
    out: dict[str, Any] = {}
    position = 0
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["varname", "start_idx", "end_idx", "shape"])
        for name, shape in entries:
            size = math.prod(shape)
            writer.writerow([name, position, position + size, str(shape)])
            out[name] = (position, position + size, shape)
            position += size
    return out


def run_config(r: int) -> dict[str, Any]:
    return {
        "config.activation": ACTIVATIONS[r % len(ACTIVATIONS)],
        "config.b_init": "zeros",
        "config.dataset": "cifar10",
        "config.dnn_architecture": "cnn",
        "config.dropout": [0.0, 0.05, 0.2][r % 3],
        "config.epochs": 86,
        "config.epochs_between_checkpoints": 20,
        "config.init_std": [0.05, 0.1][r % 2],
        "config.l2reg": [0.0, 1e-4, 3e-3][r % 3],
        "config.learning_rate": 10 ** -(2 + r % 3),
        "config.num_layers": 3,
        "config.num_units": 16,
        "config.optimizer": ["adam", "sgd", "rmsprop"][r % 3],
        "config.random_seed": 42,
        "config.train_fraction": [0.1, 0.25, 0.5, 1.0][r % 4],
        "config.w_init": ["he_normal", "glorot_uniform", "RandomNormal"][r % 3],
        "modeldir": f"/cnn_zoo/cifar10/run_{r:05d}",
    }


def write_zoo(
    folder: Path,
    n_runs: int = 6,
    steps: tuple[int, ...] = STEPS,
    seed: int = 0,
    edit: Any = None,
) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """A Small CNN Zoo folder with every (run, step) in a shuffled row order. ``edit(weights, metrics)``
    may change both before they are written."""
    folder.mkdir(parents=True, exist_ok=True)
    layout = write_layout(folder / "layout.csv")
    rng = np.random.default_rng(seed)
    pairs = [(r, s) for r in range(n_runs) for s in steps]
    random.Random(seed).shuffle(pairs)
    weights = rng.normal(0.0, 0.3, size=(len(pairs), N_PARAMS)).astype(np.float32)
    rows = []
    for r, s in pairs:
        test = float(rng.uniform(0.1, 0.6))
        rows.append(
            {
                **run_config(r),
                "step": s,
                "test_accuracy": test,
                "test_loss": float(rng.uniform(1, 2)),
                "train_accuracy": min(1.0, test + 0.05),
                "train_loss": float(rng.uniform(1, 2)),
            }
        )
    metrics = pd.DataFrame(rows)
    if edit is not None:
        weights, metrics = edit(weights, metrics)
    np.save(folder / "weights.npy", weights)
    metrics.to_csv(folder / "metrics.csv.gz")  # with the index, as the released file ("Unnamed: 0")
    return weights, metrics, layout


def keras_forward(
    vector: np.ndarray, layout: dict[str, Any], x_nhwc: np.ndarray, activation: str
) -> np.ndarray:
    """The Keras network in NumPy (float64): 3 x Conv2D(16, 3, strides=2, padding='valid') with HWIO kernels
    and the activation, GlobalAveragePooling2D, Dense(10) with an (in, out) kernel; logits."""
    act = {
        "relu": lambda z: np.maximum(z, 0.0),
        "tanh": np.tanh,
        "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
        "selu": lambda z: 1.0507009873554805 * np.where(z > 0, z, 1.6732632423543772 * (np.exp(z) - 1.0)),
    }[activation]

    def var(name: str) -> np.ndarray:
        start, end, shape = layout[f"sequential/{name}:0"]
        return vector[start:end].astype(np.float64).reshape(shape)

    h = x_nhwc.astype(np.float64)
    for layer in ("conv2d", "conv2d_1", "conv2d_2"):
        kernel, bias = var(f"{layer}/kernel"), var(f"{layer}/bias")
        n, height, width, _ = h.shape
        out_h, out_w = (height - 3) // 2 + 1, (width - 3) // 2 + 1  # 'valid': no padding, stride 2
        out = np.empty((n, out_h, out_w, kernel.shape[3]))
        for i in range(out_h):
            for j in range(out_w):
                patch = h[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]
                out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, kernel) + bias
        h = act(out)
    return h.mean(axis=(1, 2)) @ var("dense/kernel") + var("dense/bias")


@pytest.fixture
def zoo_dir(tmp_path: Path) -> tuple[Path, np.ndarray, pd.DataFrame, dict[str, Any]]:
    weights, metrics, layout = write_zoo(tmp_path / "cifar10")
    return tmp_path / "cifar10", weights, metrics, layout


def test_converted_models_compute_what_the_keras_network_computes(zoo_dir, tmp_path: Path) -> None:
    folder, weights, metrics, layout = zoo_dir
    report = import_cnnzoo(folder, tmp_path / "zoo", step="all", progress=False)
    assert report.imported == 18 and report.runs == 6 and not report.dropped
    zoo = load_zoo(tmp_path / "zoo")
    meta = zoo.metadata()
    rng = np.random.default_rng(1)
    for i in range(len(zoo)):
        row = int(meta["source_row"].iloc[i])
        state_dict = zoo.state_dict(i)
        assert list(state_dict) == [
            "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
            "conv3.weight", "conv3.bias", "fc.weight", "fc.bias",
        ]  # fmt: skip
        assert zoo.content_hash(i) == payload_hash(encode_weights(state_dict))  # the store's own encoding
        start, end, shape = layout["sequential/conv2d_1/kernel:0"]
        hwio = weights[row, start:end].reshape(shape)
        assert torch.equal(state_dict["conv2.weight"], torch.from_numpy(hwio.transpose(3, 2, 0, 1).copy()))
        model = zoo.model(i)
        assert isinstance(model, SmallCNN) and not model.training
        assert model.activation == metrics["config.activation"].iloc[row]
        for size in (28, 32):  # MNIST / Fashion-MNIST, grayscale CIFAR-10 / SVHN
            x = rng.uniform(-1, 1, size=(3, size, size, 1)).astype(np.float32)
            with torch.no_grad():
                got = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
            want = keras_forward(weights[row], layout, x, model.activation)
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_metadata_round_trips(zoo_dir, tmp_path: Path) -> None:
    folder, _, metrics, _ = zoo_dir
    import_cnnzoo(folder, tmp_path / "zoo", step="all", progress=False)
    zoo = load_zoo(tmp_path / "zoo")
    meta = zoo.metadata()
    assert "Unnamed: 0" not in meta.columns  # the pandas index column of metrics.csv.gz
    for _, got in meta.iterrows():
        want = metrics.iloc[int(got["source_row"])]
        assert got["model_id"] == want["modeldir"]
        assert got["checkpoint_epoch"] == want["step"]
        assert got["is_final"] == (want["step"] == 86)
        assert got["activation"] == want["config.activation"]
        assert got["init"] == want["config.w_init"].lower()
        assert got["optimizer"] == want["config.optimizer"]
        assert got["learning_rate"] == pytest.approx(want["config.learning_rate"])
        assert got["weight_decay"] == pytest.approx(want["config.l2reg"])
        assert got["dropout"] == pytest.approx(want["config.dropout"])
        assert got["has_dropout"] == (want["config.dropout"] > 0)
        assert got["train_fraction"] == pytest.approx(want["config.train_fraction"])
        assert got["init_std"] == pytest.approx(want["config.init_std"])
        assert got["b_init"] == "zeros" and got["dataset"] == "cifar10" and got["family"] == "cnn"
        assert (got["epochs"], got["seed"], got["depth"], got["width"]) == (86, 42, 3, 16)
        assert got["test_accuracy"] == pytest.approx(want["test_accuracy"])
        assert got["train_accuracy"] == pytest.approx(want["train_accuracy"])
        assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-6)
        assert got["generalization_gap"] == pytest.approx(want["train_accuracy"] - want["test_accuracy"])
        assert got["num_params"] == N_PARAMS and got["has_conv_layers"]
    runs = meta.groupby("model_id")["split"].nunique()
    assert (runs == 1).all()  # split by run, never by checkpoint
    manifest = json.loads((tmp_path / "zoo" / "zooprobe_manifest.json").read_text())
    assert manifest["architecture"] == "small_cnn_zoo" and manifest["importer"] == "cnnzoo"
    assert manifest["dropped_nonfinite"] == 0 and manifest["ignored_columns"] == ["Unnamed: 0"]


def test_final_step_by_default_and_max_runs(zoo_dir, tmp_path: Path) -> None:
    folder, _, metrics, _ = zoo_dir
    import_cnnzoo(folder, tmp_path / "final", progress=False)
    meta = load_zoo(tmp_path / "final").metadata()
    assert len(meta) == 6 and set(meta["checkpoint_epoch"]) == {86} and meta["is_final"].all()
    import_cnnzoo(folder, tmp_path / "two", max_runs=2, step=20, progress=False)
    meta = load_zoo(tmp_path / "two").metadata()
    first_two = list(dict.fromkeys(metrics["modeldir"]))[:2]  # runs in order of first appearance
    assert sorted(meta["model_id"]) == sorted(first_two) and set(meta["checkpoint_epoch"]) == {20}
    assert not meta["is_final"].any()


def test_runs_with_non_finite_weights_are_dropped_and_counted(tmp_path: Path) -> None:
    def poison(weights: np.ndarray, metrics: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
        run1_step20 = metrics.index[(metrics["modeldir"].str.endswith("_00001")) & (metrics["step"] == 20)][0]
        run4_final = metrics.index[(metrics["modeldir"].str.endswith("_00004")) & (metrics["step"] == 86)][0]
        weights[run1_step20, 7] = np.nan
        weights[run4_final, 4000] = np.inf
        return weights, metrics

    write_zoo(tmp_path / "z", edit=poison)
    report = import_cnnzoo(tmp_path / "z", tmp_path / "all", step="all", chunk_rows=4, progress=False)
    assert sorted(report.dropped) == ["/cnn_zoo/cifar10/run_00001", "/cnn_zoo/cifar10/run_00004"]
    assert report.imported == 12 and report.runs == 4
    assert "Dropped 2 run(s) with non-finite weights" in report.summary()
    manifest = json.loads((tmp_path / "all" / "zooprobe_manifest.json").read_text())
    assert manifest["dropped_nonfinite"] == 2
    assert {d["checkpoint"] for d in manifest["dropped_runs"]} == {20, 86}
    zoo = load_zoo(tmp_path / "all")
    assert len(zoo) == 12 and not zoo.metadata()["model_id"].str.endswith(("_00001", "_00004")).any()
    report = import_cnnzoo(tmp_path / "z", tmp_path / "final", progress=False)  # step 20 not imported
    assert report.dropped == ["/cnn_zoo/cifar10/run_00004"] and report.imported == 5


def _nfn_reference_splits(order: np.ndarray, metrics: pd.DataFrame) -> dict[str, str]:
    """NFN's ZooDataset (experiments/data_utils.py) written out: reorder, keep step 86, second half test,
    first half shuffled with random.Random(0), 80% train."""
    shuffled = metrics.iloc[order]
    final = shuffled[shuffled["step"] == 86]
    n = len(final)
    test_point = int(0.5 * n)
    trainval = list(range(test_point))
    random.Random(0).shuffle(trainval)
    val_point = int(0.8 * len(trainval))
    out = {}
    for name, positions in (
        ("train", trainval[:val_point]),
        ("validation", trainval[val_point:]),
        ("test", range(test_point, n)),
    ):
        for p in positions:
            out[final["modeldir"].iloc[p]] = name
    return out


def test_nfn_split_file_fixes_the_splits(tmp_path: Path) -> None:
    _, metrics, _ = write_zoo(tmp_path / "z", n_runs=20)
    order = np.random.default_rng(5).permutation(len(metrics))
    split_csv = tmp_path / "cifar10_split.csv"
    pd.DataFrame(order).to_csv(split_csv, index=False)  # as NFN's files: a "0" header line, then the order
    assert split_csv.read_text().split("\n")[0] == "0"
    import_cnnzoo(tmp_path / "z", tmp_path / "zoo", step="all", split_file=split_csv, progress=False)
    meta = load_zoo(tmp_path / "zoo").metadata()
    want = _nfn_reference_splits(order, metrics)
    got = dict(zip(meta["model_id"], meta["split"], strict=True))  # every checkpoint follows its run
    assert got == want and set(want.values()) == {"train", "validation", "test"}
    manifest = json.loads((tmp_path / "zoo" / "zooprobe_manifest.json").read_text())
    assert manifest["split_source"].startswith("split file")

    (tmp_path / "short.csv").write_text("\n".join(map(str, order[:-3])) + "\n")
    with pytest.raises(InvalidInputError, match="lists 57 rows but the weights file has 60"):
        import_cnnzoo(tmp_path / "z", tmp_path / "x", split_file=tmp_path / "short.csv", progress=False)
    twice = order.copy()
    twice[1] = twice[0]
    (tmp_path / "twice.csv").write_text("\n".join(map(str, twice)) + "\n")
    with pytest.raises(InvalidInputError, match=f"row {twice[0]} is listed 2 times"):
        import_cnnzoo(tmp_path / "z", tmp_path / "x", split_file=tmp_path / "twice.csv", progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "problem, message",
    [
        ("no step column", r"no column\(s\) 'step'"),
        ("no modeldir column", "no 'modeldir' column, so the checkpoints of one run cannot be grouped"),
        ("wider vectors", "the layout covers 4970 values but each vector in the weights file has 4971"),
        ("fewer metadata rows", "17 rows but .*weights.npy holds 18 vectors"),
        ("no layout.csv", "missing layout.csv"),
        ("another network", "not the Small CNN Zoo network"),
        ("accuracy out of range", r"row 4 \(weights row 3\): field 'test_accuracy': 1.5 is outside"),
        ("unknown activation", "activation 'mish' is not one the Small CNN Zoo module supports"),
    ],
)
def test_bad_inputs_are_clear_errors(tmp_path: Path, problem: str, message: str) -> None:
    folder = tmp_path / "z"
    write_zoo(folder, n_runs=6)
    metrics = pd.read_csv(folder / "metrics.csv.gz", index_col=0)
    if problem == "no step column":
        metrics.drop(columns=["step"]).to_csv(folder / "metrics.csv.gz")
    elif problem == "no modeldir column":
        metrics.drop(columns=["modeldir"]).to_csv(folder / "metrics.csv.gz")
    elif problem == "wider vectors":
        weights = np.load(folder / "weights.npy")
        np.save(folder / "weights.npy", np.hstack([weights, np.zeros((len(weights), 1), np.float32)]))
    elif problem == "fewer metadata rows":
        metrics.iloc[:-1].to_csv(folder / "metrics.csv.gz")
    elif problem == "no layout.csv":
        (folder / "layout.csv").unlink()
    elif problem == "another network":
        write_layout(folder / "layout.csv", [*LAYOUT[:4], *LAYOUT[6:]])  # two convolutions
    elif problem == "accuracy out of range":
        metrics.loc[3, "test_accuracy"] = 1.5
        metrics.to_csv(folder / "metrics.csv.gz")
    else:
        metrics["config.activation"] = "mish"
        metrics.to_csv(folder / "metrics.csv.gz")
    output = tmp_path / "zoo"
    if problem == "unknown activation":  # imported (a zoo field is any text); rebuilding the module fails
        import_cnnzoo(folder, output, progress=False)
        with pytest.raises(InvalidInputError, match=message):
            load_zoo(output).model(0)
        return
    with pytest.raises((InvalidInputError, ZooFormatError), match=message):
        import_cnnzoo(folder, output, step="all", progress=False)
    assert not output.exists()  # nothing is written before the input has been read


def test_a_killed_import_resumes_and_refuses_other_options(zoo_dir, tmp_path: Path, monkeypatch) -> None:
    folder, *_ = zoo_dir
    write_part = flat._write_part
    calls = []

    def dies_on_the_third_part(*args: Any, **kwargs: Any) -> int:
        calls.append(args[2])  # the span: whole runs, about chunk_rows checkpoints
        if len(calls) == 3:
            raise KeyboardInterrupt
        return write_part(*args, **kwargs)

    monkeypatch.setattr(flat, "_write_part", dies_on_the_third_part)
    output = tmp_path / "zoo"
    with pytest.raises(KeyboardInterrupt):
        import_cnnzoo(folder, output, step="all", chunk_rows=3, progress=False)
    assert all(end - start == 3 for start, end in calls)  # one run of 3 checkpoints per part
    assert len(list((output / ".parts").glob("import-*.parquet"))) == 2
    with pytest.raises(ZooFormatError):
        load_zoo(output)  # an unfinished import is never read as a zoo
    with pytest.raises(OutputFolderError, match="differs in: options"):
        import_cnnzoo(folder, output, step="final", chunk_rows=3, progress=False)
    monkeypatch.setattr(flat, "_write_part", write_part)
    report = import_cnnzoo(folder, output, step="all", chunk_rows=3, progress=False)
    assert report.parts_reused == 2 and report.parts_total == 6
    assert "Resumed: 2 of 6 part(s)" in report.summary()
    assert not (output / ".parts").exists() and not (output / "import_config.json").exists()
    import_cnnzoo(folder, tmp_path / "fresh", step="all", progress=False)
    resumed, fresh = load_zoo(output), load_zoo(tmp_path / "fresh")
    assert resumed.metadata().equals(fresh.metadata())
    assert all(resumed.content_hash(i) == fresh.content_hash(i) for i in range(len(fresh)))
    with pytest.raises(OutputFolderError, match="holds a zoo already"):
        import_cnnzoo(folder, output, step="all", chunk_rows=3, progress=False)
    report = import_cnnzoo(folder, output, overwrite=True, progress=False)
    assert report.imported == 6


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zooprobe", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_command_line(zoo_dir, tmp_path: Path) -> None:
    folder, *_ = zoo_dir
    r = _cli("zoo", "import-cnnzoo", str(folder), "--output", str(tmp_path / "zoo"), "--progress", "false")
    assert r.returncode == 0, r.stderr
    assert "Imported 6 checkpoint(s) of 6 run(s)" in r.stdout and "Dropped 0 runs" in r.stdout
    r = _cli("zoo", "import-cnnzoo", str(tmp_path / "nope"), "--output", str(tmp_path / "x"))
    assert r.returncode == 2 and "Small CNN Zoo folder not found" in r.stderr and "Traceback" not in r.stderr
