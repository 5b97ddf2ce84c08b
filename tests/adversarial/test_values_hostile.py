"""Values and tables that lie (issue 28): NaN/inf weights and targets, zero-size tensors, 1-parameter models,
negative sizes, duplicated ids, wrong types in CSV/JSON/YAML, unknown keys.

A user expects: a value zooprobe cannot use is a one-line error (exit code 2, no traceback) naming the
file, the row or tensor and the fix, and the user's files are unchanged; what zooprobe reads as missing (a
NaN target) is stored as missing, never as a number; a network outside what the head knows (one parameter)
is predicted only with the out-of-domain warning; never a silently wrong result.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from harness import assert_one_line_error, assert_unchanged, run_cli, snapshot
from safetensors.torch import save_file

from files import TORCH_LAYOUT, WIDTH, metadata_rows, write_csv
from zooprobe.api import load_zoo

QUIET = ("--progress", "false")


# ---------------------------------------------------------------------------------------------- helpers
def _linear(seed: int, sizes: tuple[int, ...] = (3, 2)) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in torch.nn.Linear(*sizes).state_dict().items()}


def _mlp(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _save(path: Path, state: dict[str, torch.Tensor]) -> Path:
    if path.suffix == ".pt":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


def _folder(
    tmp_path: Path, states: list[dict[str, torch.Tensor]], accuracies: list[object]
) -> tuple[Path, Path]:
    """A checkpoint folder (one safetensors file per state) and its metadata CSV."""
    folder = tmp_path / "ckpts"
    folder.mkdir()
    rows = []
    for i, (state, acc) in enumerate(zip(states, accuracies, strict=True)):
        _save(folder / f"m{i}.safetensors", state)
        rows.append({"file": f"m{i}.safetensors", "test_accuracy": acc})
    return folder, write_csv(tmp_path / "meta.csv", rows)


def _import_folder(folder: Path, meta: Path, out: Path) -> object:
    return run_cli("zoo", "import-folder", folder, "--metadata", meta, "--output", out, *QUIET)


def _layout(entries: list[dict[str, object]] | None = None) -> list[dict[str, object]]:
    items, offset = [], 0
    for name, shape in TORCH_LAYOUT:
        items.append({"name": name, "shape": list(shape), "offset": offset})
        offset += math.prod(shape)
    return items if entries is None else entries


def _flat(
    tmp_path: Path,
    weights: np.ndarray | None = None,
    rows: list[dict[str, object]] | None = None,
    layout: object = None,
) -> tuple[Path, object]:
    """``zoo import-flat`` of 3 runs x 2 checkpoints (final ones imported); the inputs' folder and result."""
    root = tmp_path / "in"
    root.mkdir()
    rows = rows if rows is not None else [{**r, "test_accuracy": 0.5} for r in metadata_rows(3)]
    if weights is None:
        weights = np.random.default_rng(0).normal(size=(len(rows), WIDTH)).astype(np.float32)
    np.save(root / "w.npy", weights)
    (root / "layout.json").write_text(json.dumps({"layout": layout if layout is not None else _layout()}))
    meta = write_csv(root / "meta.csv", rows)
    before = snapshot(root)
    r = run_cli("zoo", "import-flat", root / "w.npy", "--layout", root / "layout.json", "--metadata", meta,
                "--output", tmp_path / "zoo", *QUIET)  # fmt: skip
    assert_unchanged(before, root)
    return root, r


# ------------------------------------------------------------------------------------ 1. NaN / inf weights
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_import_folder_refuses_non_finite_weights(value: float, tmp_path: Path) -> None:
    """A checkpoint with a NaN or inf weight among good ones: refused, naming the row, file and tensor."""
    bad = _linear(0)
    bad["weight"][1, 2] = value
    folder, meta = _folder(tmp_path, [_linear(1), bad], [0.5, 0.6])
    before = snapshot(tmp_path)
    r = _import_folder(folder, meta, tmp_path / "zoo")
    assert_one_line_error(r, "row 2", "m1.safetensors", "tensor 'weight'", "non-finite")
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_import_flat_drops_runs_with_non_finite_weights_and_lists_them(value: float, tmp_path: Path) -> None:
    """``import-flat``: a run whose final checkpoint holds NaN/inf is dropped, said so and listed in the
    manifest; every imported weight is finite."""
    weights = np.random.default_rng(0).normal(size=(6, WIDTH)).astype(np.float32)
    weights[3, 5] = value  # run m1, its final checkpoint
    _, r = _flat(tmp_path, weights=weights)
    assert r.code == 0 and not r.traceback, r.err
    assert "Dropped 1 run(s) with non-finite weights" in " ".join(r.out.split()) and "'m1'" in r.out
    zoo = load_zoo(tmp_path / "zoo")
    assert sorted(zoo.metadata()["model_id"]) == ["m0", "m2"]
    assert all(bool(torch.isfinite(t).all()) for i in range(len(zoo)) for t in zoo.state_dict(i).values())
    manifest = json.loads((tmp_path / "zoo" / "zooprobe_manifest.json").read_text())
    assert "m1" in json.dumps(manifest)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("value", [float("nan"), float("-inf")], ids=["nan", "-inf"])
def test_predict_refuses_non_finite_weights(value: float, suffix: str, run_dir: Path, tmp_path: Path) -> None:
    """``predict`` on a network with a NaN/inf weight: no prediction, one line naming file and tensor."""
    state = _mlp()
    state["2.bias"][1] = value
    model = _save(tmp_path / f"model{suffix}", state)
    r = run_cli("predict", "--head", run_dir, model)
    assert_one_line_error(r, str(model), "'2.bias'", "non-finite")
    assert "test_accuracy" not in r.out


# ------------------------------------------------------------------------------------ 2. NaN / inf targets
def test_nan_targets_are_stored_as_missing_and_inf_is_refused(tmp_path: Path) -> None:
    """A metadata cell ``nan`` (or empty) is a missing accuracy: stored as null, never as a NaN number; an
    ``inf`` accuracy is an error naming the row."""
    folder, meta = _folder(tmp_path, [_linear(0), _linear(1), _linear(2)], [0.5, "nan", ""])
    r = _import_folder(folder, meta, tmp_path / "zoo")
    assert r.code == 0, r.err
    values = [
        v
        for p in sorted((tmp_path / "zoo" / "data").glob("*.parquet"))
        for v in pq.read_table(p, columns=["test_accuracy"]).column(0).to_pylist()
    ]
    assert sorted(values, key=lambda v: v is None) == [0.5, None, None]
    shutil.rmtree(folder)
    folder, meta = _folder(tmp_path, [_linear(0), _linear(1)], [0.5, "inf"])
    assert_one_line_error(
        _import_folder(folder, meta, tmp_path / "zoo2"), "row 2", "test_accuracy", "infinite"
    )


def test_model_zoos_nan_accuracy_is_missing(tmp_path: Path) -> None:
    """A Model Zoos ``result.json`` with a JSON ``NaN`` accuracy: the checkpoint is imported with the
    accuracy missing (null), not as a number."""
    run = tmp_path / "in" / "run_000"
    (run / "checkpoint_000001").mkdir(parents=True)
    params = {"model::nlin": "relu", "optim::optimizer": "adam", "optim::lr": 1e-3, "seed": 0}
    (run / "params.json").write_text(json.dumps(params))
    (run / "result.json").write_text('{"training_iteration": 1, "test_acc": NaN, "train_acc": 0.5}\n')
    torch.save(torch.nn.Linear(3, 2).state_dict(), run / "checkpoint_000001" / "checkpoints")
    r = run_cli("zoo", "import-modelzoos", tmp_path / "in", "--output", tmp_path / "zoo", *QUIET)
    assert r.code == 0, r.err
    (path,) = sorted((tmp_path / "zoo" / "data").glob("*.parquet"))
    assert pq.read_table(path, columns=["test_accuracy"]).column(0).to_pylist() == [None]


def test_train_refuses_an_infinite_target_in_the_zoo(
    head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    """A zoo whose metadata holds an infinite accuracy (written by another tool): ``train`` names the target,
    split and model before training, instead of an infinite loss that blames the learning rate."""
    zoo = tmp_path / "zoo"
    shutil.copytree(head_zoo, zoo)
    (path,) = sorted((zoo / "data").glob("train-*.parquet"))
    table = pq.read_table(path)
    i = table.schema.get_field_index("test_accuracy")
    values = table.column(i).to_pylist()
    values[0] = float("inf")
    pq.write_table(
        table.set_column(i, "test_accuracy", pa.array(values, type=table.schema.field(i).type)), path
    )
    r = run_cli("train", "--zoo", zoo, "--encoder", head_encoder, "--output", tmp_path / "run",
                "--optim.epochs", "1", *QUIET)  # fmt: skip
    assert_one_line_error(r, "test_accuracy", "infinite", "train split")
    assert "learning rate" not in r.err.lower() and not (tmp_path / "run" / "metrics.json").exists()


# ------------------------------------------------------------------------ 3. zero-size and 1-parameter models
def test_import_folder_refuses_a_checkpoint_without_any_value(tmp_path: Path) -> None:
    """A checkpoint whose every tensor has zero elements has no weights: refused at import, naming it."""
    empty = {"weight": torch.zeros(0, 3), "bias": torch.zeros(0)}
    folder, meta = _folder(tmp_path, [_linear(0), empty], [0.5, 0.6])
    assert_one_line_error(_import_folder(folder, meta, tmp_path / "zoo"), "m1.safetensors", "zero elements")
    assert not (tmp_path / "zoo").exists()


@pytest.mark.parametrize(
    ("state", "fragment"),
    [
        ({"weight": torch.zeros(0, 3), "bias": torch.zeros(0)}, "no weights"),
        ({**_mlp(), "extra": torch.zeros(0)}, "'extra'"),
        ({"w": torch.tensor([0.5])}, "'w'"),
    ],
    ids=["all-empty", "one-empty-tensor", "one-bare-value"],
)
def test_predict_refuses_networks_the_encoder_cannot_read(
    state: dict[str, torch.Tensor], fragment: str, run_dir: Path, tmp_path: Path
) -> None:
    """Zero-size tensors and a lone unnamed value: one line naming the file and what cannot be read."""
    model = _save(tmp_path / "model.safetensors", state)
    assert_one_line_error(run_cli("predict", "--head", run_dir, model), str(model), fragment)


def test_a_one_parameter_network_is_predicted_only_as_out_of_domain(run_dir: Path, tmp_path: Path) -> None:
    """A 1-parameter ``Linear(1, 1, bias=False)``: readable, so predicted, but flagged outside the head's
    applicability domain (naming its one parameter), never passed off as an estimate; ``--strict`` refuses."""
    model = _save(tmp_path / "model.safetensors", {"weight": torch.tensor([[0.5]])})
    r = run_cli("predict", "--head", run_dir, model)
    assert r.code == 0 and not r.traceback, r.err
    assert "outside the applicability domain" in r.err and "1 parameters" in r.err
    assert_one_line_error(run_cli("predict", "--head", run_dir, model, "--strict", "true"), "--strict")


# ---------------------------------------------------------------------------------------- 4. negative sizes
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("zoo", "build", "--preset", "tiny", "--n_models", "-1"), "n_models must be >= 1, got -1"),
        (("zoo", "build", "--preset", "tiny", "--n_models", "0"), "n_models must be >= 1, got 0"),
        (("zoo", "build", "--preset", "tiny", "--cohort_size", "-4"), "cohort_size"),
        (
            ("encoder", "pretrain", "--preset", "tiny", "--epochs", "-1", "--zoo", "ZOO"),
            "epochs must be >= 1",
        ),
        (("train", "--zoo", "ZOO", "--optim.epochs", "-2"), "optim.epochs must be >= 1, got -2"),
        (("train", "--zoo", "ZOO", "--optim.batch_size", "0"), "optim.batch_size must be >= 1, got 0"),
    ],
    ids=["n_models", "n_models-0", "cohort_size", "pretrain-epochs", "train-epochs", "batch_size"],
)
def test_negative_sizes_on_the_command_line(args: tuple[str, ...], fragment: str, tmp_path: Path) -> None:
    """A negative (or zero) count is refused before anything is read or written, naming the option."""
    out = tmp_path / "out"
    r = run_cli(*[str(tmp_path) if a == "ZOO" else a for a in args], "--output", out)
    assert_one_line_error(r, fragment)
    assert not out.exists()


def test_negative_max_runs_and_max_params(run_dir: Path, tmp_path: Path) -> None:
    from zooprobe.bench.imports import write_synthetic_cnnzoo

    folder = write_synthetic_cnnzoo(tmp_path / "cifar10", n_runs=2, steps=(86,))
    r = run_cli("zoo", "import-cnnzoo", folder, "--max_runs", "-3", "--output", tmp_path / "zoo")
    assert_one_line_error(r, "max_runs", "got -3")
    model = _save(tmp_path / "model.safetensors", _mlp())
    assert_one_line_error(run_cli("predict", "--head", run_dir, "--max_params", "-1", model), "max_params")


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (
            {"name": "0.weight", "shape": [-3, 4], "offset": 0},
            "shape [-3, 4] must hold non-negative integers",
        ),
        ({"name": "0.weight", "shape": [3, 4], "offset": -5}, "covers values -5..7"),
    ],
    ids=["negative-shape", "negative-offset"],
)
def test_negative_sizes_in_a_layout(entry: dict[str, object], fragment: str, tmp_path: Path) -> None:
    layout = _layout()
    layout[0] = entry
    _, r = _flat(tmp_path, layout=layout)
    assert_one_line_error(r, "layout.json", "'0.weight'", fragment)
    assert not (tmp_path / "zoo").exists()


def test_a_negative_epoch_in_model_zoos_results(tmp_path: Path) -> None:
    run = tmp_path / "in" / "run_000"
    (run / "checkpoint_000001").mkdir(parents=True)
    params = {"model::nlin": "relu", "optim::optimizer": "adam", "optim::lr": 1e-3, "seed": 0}
    (run / "params.json").write_text(json.dumps(params))
    (run / "result.json").write_text('{"training_iteration": -1, "test_acc": 0.5}\n')
    torch.save(torch.nn.Linear(3, 2).state_dict(), run / "checkpoint_000001" / "checkpoints")
    r = run_cli("zoo", "import-modelzoos", tmp_path / "in", "--output", tmp_path / "zoo", *QUIET)
    assert_one_line_error(r, "result.json line 1", "training_iteration", "-1")


# ---------------------------------------------------------------------------------------- 5. duplicated ids
def test_import_folder_refuses_a_file_listed_twice(tmp_path: Path) -> None:
    """The same checkpoint in two rows (two accuracies for one model): refused, naming both rows."""
    folder, _ = _folder(tmp_path, [_linear(0), _linear(1)], [0.5, 0.6])
    meta = write_csv(
        tmp_path / "dup.csv",
        [
            {"file": "m0.safetensors", "test_accuracy": 0.5},
            {"file": "m0.safetensors", "test_accuracy": 0.9},
            {"file": "m1.safetensors", "test_accuracy": 0.6},
        ],
    )
    assert_one_line_error(_import_folder(folder, meta, tmp_path / "zoo"), "dup.csv row 2", "also in row 1")


def test_import_flat_refuses_a_run_checkpoint_listed_twice(tmp_path: Path) -> None:
    rows = [{**r, "test_accuracy": 0.5} for r in metadata_rows(3)]
    rows[1] = dict(rows[0])  # run m0, checkpoint 1 twice
    _, r = _flat(tmp_path, rows=rows)
    assert_one_line_error(r, "meta.csv row 2", "'m0'", "twice")


# ---------------------------------------------------------------------------------------- 6. wrong types
def test_wrong_types_in_csv_cells(tmp_path: Path) -> None:
    folder, meta = _folder(tmp_path, [_linear(0), _linear(1)], [0.5, "high"])
    assert_one_line_error(_import_folder(folder, meta, tmp_path / "zoo"), "row 2", "'high' is not a number")
    rows = [{**r, "test_accuracy": 0.5} for r in metadata_rows(3)]
    rows[1]["checkpoint_epoch"] = "two"
    (tmp_path / "flat").mkdir()
    _, r = _flat(tmp_path / "flat", rows=rows)
    assert_one_line_error(r, "checkpoint_epoch", "'two' is not an integer")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ("[1, 2]", "must be a JSON object, got list"),
        (json.dumps({"model::nlin": "relu", "optim::lr": "fast", "seed": 0}), "'fast' is not a number"),
        (json.dumps({"model::nlin": "relu", "optim::lr": True, "seed": 0}), "boolean"),
    ],
    ids=["list", "string-lr", "bool-lr"],
)
def test_wrong_types_in_model_zoos_json(params: str, fragment: str, tmp_path: Path) -> None:
    run = tmp_path / "in" / "run_000"
    (run / "checkpoint_000001").mkdir(parents=True)
    (run / "params.json").write_text(params)
    (run / "result.json").write_text('{"training_iteration": 1, "test_acc": 0.5}\n')
    torch.save(torch.nn.Linear(3, 2).state_dict(), run / "checkpoint_000001" / "checkpoints")
    r = run_cli("zoo", "import-modelzoos", tmp_path / "in", "--output", tmp_path / "zoo", *QUIET)
    assert_one_line_error(r, "params.json", fragment)


@pytest.mark.parametrize(
    ("command", "text", "fragments"),
    [
        (("zoo", "build"), "preset: tiny\nn_models: many\n", ("--n_models", "many")),
        (("train", "--zoo", "ZOO"), "task: accuracy\noptim:\n  epochs: three\n", ("--optim.epochs", "three")),
        (("train", "--zoo", "ZOO"), "task: accuracy\noptim:\n  epochz: 3\n", ("optim.epochz",)),
        (("encoder", "pretrain", "--zoo", "ZOO"), "preset: tiny\nepochz: 3\n", ("epochz",)),
    ],
    ids=["zoo-wrong-type", "train-wrong-type", "train-unknown-key", "pretrain-unknown-key"],
)
def test_wrong_types_and_unknown_keys_in_yaml_configs(
    command: tuple[str, ...], text: str, fragments: tuple[str, ...], tmp_path: Path
) -> None:
    """A ``--config`` YAML with a value of the wrong type or a misspelt key: refused naming it, nothing
    written."""
    config = tmp_path / "config.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    args = [str(tmp_path) if a == "ZOO" else a for a in command]
    r = run_cli(*args, "--config", config, "--output", out)
    r.assert_clear_error(*fragments)
    assert not out.exists()


# ---------------------------------------------------------------------------------------- 7. unknown keys
def test_an_unknown_key_in_a_layout_entry_is_named(tmp_path: Path) -> None:
    """A JSON layout entry with a key zooprobe does not read (``dtype``: the user may think it is applied):
    refused, naming the key and the keys an entry has."""
    layout = _layout()
    layout[0] = {**layout[0], "dtype": "float16"}
    _, r = _flat(tmp_path, layout=layout)
    assert_one_line_error(r, "layout.json", "'0.weight'", "unknown key(s) 'dtype'", "offset")
    assert not (tmp_path / "zoo").exists()


# ------------------------------------------------------------------------------ 8. truncated and empty files
@pytest.mark.parametrize("command", ["predict", "import-folder"])
@pytest.mark.parametrize(
    "case",
    ["empty.safetensors", "truncated.safetensors", "empty.pt", "truncated.pt", "header-only.safetensors"],
)
def test_truncated_and_empty_checkpoints(command: str, case: str, run_dir: Path, tmp_path: Path) -> None:
    """A checkpoint cut short by a failed copy (half its bytes, only its header, or nothing): one line naming
    the file, never a traceback; the file is kept as it is."""
    kind, suffix = case.split(".")
    good = _save(tmp_path / f"good.{suffix}", _mlp())
    data = good.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little") if suffix == "safetensors" else 0
    cut = {"empty": b"", "truncated": data[: len(data) // 2], "header-only": data[:header]}[kind]
    folder = tmp_path / "ckpts"
    folder.mkdir()
    bad = folder / f"m0.{suffix}"
    bad.write_bytes(cut)
    before = snapshot(folder)
    if command == "predict":
        r = run_cli("predict", "--head", run_dir, bad)
    else:
        meta = write_csv(tmp_path / "meta.csv", [{"file": bad.name, "test_accuracy": 0.5}])
        r = _import_folder(folder, meta, tmp_path / "zoo")
    assert_one_line_error(r, str(bad))
    assert_unchanged(before, folder)
