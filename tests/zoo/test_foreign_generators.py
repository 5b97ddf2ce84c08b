"""The foreign zoo generators (benchmarks/foreign/): plain PyTorch scripts, resumable and deterministic, whose
output `zooprobe zoo import-folder` imports with documented options only."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file

from zooprobe import load_zoo
from zooprobe.cli.main import main as cli

FOREIGN = Path(__file__).resolve().parents[2] / "benchmarks" / "foreign"
N_MODELS = 6

# script, glob of its checkpoint files, metadata table, import-folder options, run id column, path column
GENERATORS = {
    "tabular": ("tabular_mlps.py", "checkpoints/*", "metadata.csv", [], "model_id", "file"),
    "images": (
        "image_cnns.py",
        "models/*",
        "runs.jsonl",
        ["--file_column", "checkpoint", "--id_column", "run_id"],
        "run_id",
        "checkpoint",
    ),
    "sequences": (
        "sequence_convnets.py",
        "runs/*/*.pth",
        "results.csv",
        ["--file_column", "ckpt_path", "--id_column", "run", "--accuracy_percent", "true"],
        "run",
        "ckpt_path",
    ),
}
OPTIMIZERS = {"sgd", "adam", "adamw", "adagrad", "rmsprop", "nadam"}


def _arguments(out: Path) -> list[str]:
    return ["--n_models", str(N_MODELS), "--output", str(out), "--seed", "3", "--max_epochs", "3"]


def _generate(script: str, out: Path) -> str:
    """Run a generator the way a user does: its own process, zooprobe not on the path."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    command = [sys.executable, str(FOREIGN / script), *_arguments(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _generate_here(
    module: ModuleType, out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """The same command run in this process (saves a torch start-up, several seconds here)."""
    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", [module.__file__, *_arguments(out)])
    capsys.readouterr()
    try:
        module.main()
    finally:
        torch.set_num_threads(threads)  # the scripts train on one thread
    return capsys.readouterr().out


def _table(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _script_module(script: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"foreign_{Path(script).stem}", FOREIGN / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model_for(kind: str, module: ModuleType, row: dict) -> torch.nn.Module:
    """The script's own model for an imported row, built from the zoo's metadata alone."""
    if kind == "tabular":
        return module.build_model(row)
    if kind == "sequences":
        return module.WaveformNet(row)
    return module.SmallConvNet(
        json.loads(row["channels"]),
        row["kernel_size"],
        row["downsample"],
        row["has_batch_norm"],
        row["activation"],
        row["dropout"],
        row["hidden_units"],
        row["n_classes"],
    )


@pytest.mark.parametrize("kind", list(GENERATORS))
def test_foreign_generator_builds_resumes_and_imports(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script, pattern, table_name, options, id_col, path_col = GENERATORS[kind]
    # A user's script: nothing of zooprobe in it, not even its name.
    assert "zooprobe" not in (FOREIGN / script).read_text().lower()

    out = tmp_path / "out"
    assert f"0 run(s) already done, {N_MODELS} to train" in _generate(script, out)
    rows = _table(out / table_name)
    files = sorted(out.glob(pattern))
    assert {r[id_col] for r in rows} and len({r[id_col] for r in rows}) == N_MODELS
    assert sorted(out / r[path_col] for r in rows) == files
    assert not list(out.rglob("*.tmp*"))  # every file was renamed into place
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}

    # Resume after a lost checkpoint: only that run is retrained, to the same bytes; the others are untouched.
    module = _script_module(script)
    first_run = [out / r[path_col] for r in rows if r[id_col] == rows[0][id_col]]
    first_run[-1].unlink()
    resumed = _generate_here(module, out, monkeypatch, capsys)
    assert f"{N_MODELS - 1} run(s) already done, 1 to train" in resumed
    timeless = lambda table: [{k: v for k, v in r.items() if k != "train_time_s"} for r in table]  # noqa: E731
    assert timeless(_table(out / table_name)) == timeless(rows)
    for path, (data, mtime) in before.items():
        assert path.read_bytes() == data, path
        if path not in first_run:
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"

    zoo_dir = tmp_path / "zoo"
    meta_args = ["--metadata", str(out / table_name), "--output", str(zoo_dir), "--progress", "false"]
    assert cli(["zoo", "import-folder", str(out), *meta_args, *options]) == 0
    zoo = load_zoo(zoo_dir)
    meta = zoo.metadata()
    assert len(zoo) == len(rows) and meta["model_id"].nunique() == N_MODELS
    assert meta["test_accuracy"].between(0, 1).all() and meta["test_accuracy"].notna().all()
    assert meta["learning_rate"].gt(0).all()
    assert set(meta["optimizer"]) <= OPTIMIZERS
    assert meta["activation"].notna().all() and meta["epochs"].ge(1).all()
    split_of = {r[id_col]: {"val": "validation"}.get(r["split"], r["split"]) for r in rows}
    assert dict(zip(meta["model_id"], meta["split"], strict=True)) == split_of

    for i, row in meta.iterrows():
        state = zoo.state_dict(i)
        path = out / row[path_col]
        original = load_file(path) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
        original = original.get("model_state_dict", original)  # sequences: a training checkpoint
        assert state.keys() == original.keys()
        assert all(torch.equal(state[k], original[k]) for k in state)
        if path.suffix != ".safetensors":  # torch files keep the model's own order
            assert list(state) == list(original)
        _model_for(kind, module, row.to_dict()).load_state_dict(state, strict=True)
    assert meta["is_final"].sum() == N_MODELS
    names = {k.split(".")[0] for k in zoo.state_dict(0)}
    if kind == "tabular":
        assert all(name.isdigit() for name in names)  # nn.Sequential
    elif kind == "images":
        assert names == {"features", "classifier"}
    else:
        assert names == {"stem", "stages", "out"}
        accuracy = {(r[id_col], int(r["checkpoint_epoch"])): float(r["test_accuracy"]) for r in rows}
        imported = zip(meta["model_id"], meta["checkpoint_epoch"], meta["test_accuracy"], strict=True)
        assert all(abs(100 * acc - accuracy[m, e]) < 1e-3 for m, e, acc in imported)  # percent -> fraction
