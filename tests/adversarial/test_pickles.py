"""Pickled payloads on every reader (issue 28): no code from a file ever runs.

Each payload is an object whose ``__reduce__`` makes unpickling write a marker file (what an attacker's
``os.system`` would do). It is hidden in every shape a user might be handed one: a zip-format and a legacy
``.pt``, a training-checkpoint container, a ``.pkl``, a torch file renamed ``.safetensors``, a ``.npy``
object array, a Model Zoos ``checkpoints`` file, a head's or an encoder's weights file. Each goes to every
reader that accepts its kind: ``predict``, ``zoo import-folder``, ``import-modelzoos``, ``import-flat``,
``import-cnnzoo``, ``load_head`` (through ``predict --trust``) and ``load_encoder`` (through ``train``).

A user expects, every time: the marker is never written (no code ran), exit code 2 with one line naming the
file, the safe alternative named where there is one (safetensors, a float ``.npy``), and their files as
they were.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import assert_unchanged, run_cli, snapshot
from safetensors.torch import save_file

from files import WIDTH, json_layout, metadata_rows, write_csv
from zooprobe.api import load_zoo
from zooprobe.bench.imports import write_synthetic_cnnzoo

QUIET = ("--progress", "false")


class Payload:
    """Unpickling it writes `marker` (by ``exec``): the file's "code ran" signal."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('code from a file ran')",)


def _weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in torch.nn.Linear(3, 2).state_dict().items()}


def pt_zip(path: Path, marker: Path) -> None:
    torch.save({**_weights(), "extra": Payload(marker)}, path)


def pt_legacy(path: Path, marker: Path) -> None:
    torch.save({**_weights(), "extra": Payload(marker)}, path, _use_new_zipfile_serialization=False)


def pt_container(path: Path, marker: Path) -> None:
    """A training checkpoint: the state dict is clean, the hyperparameters hold the payload."""
    torch.save({"state_dict": _weights(), "hyper_parameters": Payload(marker), "epoch": 3}, path)


def plain_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"weight": np.zeros((2, 3)), "x": Payload(marker)}))


def npy_objects(path: Path, marker: Path) -> None:
    np.save(path, np.array([Payload(marker), 1.0], dtype=object), allow_pickle=True)


#: name -> (suffix, writer, what the error names besides the file)
TORCH_PAYLOADS: dict[str, tuple[str, Callable[[Path, Path], None], tuple[str, ...]]] = {
    "zip .pt": (".pt", pt_zip, ("refused for safety", "weights_only=True", "save_file")),
    "legacy .pt": (".pt", pt_legacy, ("weights_only=True", "save_file")),
    "container .ckpt": (".ckpt", pt_container, ("refused for safety", "save_file")),
    "torch renamed .safetensors": (".safetensors", pt_zip, ("safetensors header", "refused before reading")),
    ".pkl": (".pkl", plain_pickle, ("refused for safety", "unpickling", "save_file")),
    ".pickle": (".pickle", plain_pickle, ("refused for safety", "save_file")),
}


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def _no_code_ran(marker: Path) -> None:
    assert not marker.exists(), "unpickling a file ran its code"


# ------------------------------------------------------------------------------------------ predict
@pytest.mark.parametrize("case", list(TORCH_PAYLOADS))
def test_predict_never_unpickles(case: str, run_dir: Path, tmp_path: Path, marker: Path) -> None:
    """`zooprobe predict --head RUN model.pt` on a hostile file: refused, nothing runs, the file is kept."""
    suffix, write, fragments = TORCH_PAYLOADS[case]
    folder = tmp_path / "mine"
    folder.mkdir()
    path = folder / f"model{suffix}"
    write(path, marker)
    before, run_before = snapshot(folder), snapshot(run_dir)
    r = run_cli("predict", "--head", run_dir, path)
    r.assert_clear_error(str(path), *fragments)
    _no_code_ran(marker)
    assert_unchanged(before, folder)
    assert_unchanged(run_before, run_dir)


# ------------------------------------------------------------------------------------------ import-folder
@pytest.mark.parametrize("case", list(TORCH_PAYLOADS))
def test_import_folder_never_unpickles(case: str, tmp_path: Path, marker: Path) -> None:
    """`zoo import-folder` with a hostile checkpoint among good ones: the row and the file are named, no
    zoo is written, nothing runs."""
    suffix, write, _ = TORCH_PAYLOADS[case]
    folder = tmp_path / "ckpts"
    folder.mkdir()
    save_file(_weights(), str(folder / "good.safetensors"))
    write(folder / f"bad{suffix}", marker)
    meta = write_csv(
        tmp_path / "meta.csv",
        [{"file": "good.safetensors", "test_accuracy": 0.5}, {"file": f"bad{suffix}", "test_accuracy": 0.6}],
    )
    before = snapshot(tmp_path)
    r = run_cli("zoo", "import-folder", folder, "--metadata", meta, "--output", tmp_path / "zoo", *QUIET)
    r.assert_clear_error(f"bad{suffix}", "row 2")
    assert any(w in r.err for w in ("safetensors", ".pt")), r.err  # the safe alternative
    _no_code_ran(marker)
    assert_unchanged(before, tmp_path)


def test_import_folder_skip_invalid_keeps_the_good_rows(tmp_path: Path, marker: Path) -> None:
    """With `--skip_invalid true` the hostile row is skipped and listed, the good one imported."""
    folder = tmp_path / "ckpts"
    folder.mkdir()
    save_file(_weights(), str(folder / "good.safetensors"))
    pt_zip(folder / "bad.pt", marker)
    meta = write_csv(
        tmp_path / "meta.csv",
        [{"file": "good.safetensors", "test_accuracy": 0.5}, {"file": "bad.pt", "test_accuracy": 0.6}],
    )
    r = run_cli("zoo", "import-folder", folder, "--metadata", meta, "--output", tmp_path / "zoo",
                "--skip_invalid", "true", *QUIET)  # fmt: skip
    assert r.code == 0 and not r.traceback, r.err
    assert "bad.pt" in r.out + r.err and "refused for safety" in r.out + r.err
    assert len(load_zoo(tmp_path / "zoo")) == 1
    _no_code_ran(marker)


@pytest.mark.parametrize("suffix", [".pkl", ".pickle"])
def test_import_folder_refuses_a_pickled_metadata_table(suffix: str, tmp_path: Path, marker: Path) -> None:
    """A metadata table given as a pickle (what ``df.to_pickle`` writes) is refused by its type, never
    opened: the supported table formats are named."""
    folder = tmp_path / "ckpts"
    folder.mkdir()
    save_file(_weights(), str(folder / "good.safetensors"))
    meta = tmp_path / f"meta{suffix}"
    plain_pickle(meta, marker)
    r = run_cli("zoo", "import-folder", folder, "--metadata", meta, "--output", tmp_path / "zoo", *QUIET)
    r.assert_clear_error(str(meta), "csv")
    _no_code_ran(marker)
    assert not (tmp_path / "zoo").exists()


# ------------------------------------------------------------------------------------------ import-modelzoos
@pytest.mark.parametrize("write", [pt_zip, pt_legacy, pt_container], ids=["zip", "legacy", "container"])
def test_import_modelzoos_never_unpickles(
    write: Callable[[Path, Path], None], tmp_path: Path, marker: Path
) -> None:
    """A Model Zoos run whose ``checkpoints`` file carries a payload: that run is named, nothing runs."""
    root = tmp_path / "zoos"
    for m in range(2):
        run = root / f"run_{m:03d}"
        (run / "checkpoint_000001").mkdir(parents=True)
        (run / "params.json").write_text(json.dumps({"optim::lr": 1e-3, "seed": m}))
        (run / "result.json").write_text(json.dumps({"training_iteration": 1, "test_acc": 0.5}) + "\n")
        if m == 0:
            torch.save(_weights(), run / "checkpoint_000001" / "checkpoints")
        else:
            write(run / "checkpoint_000001" / "checkpoints", marker)
    before = snapshot(root)
    r = run_cli("zoo", "import-modelzoos", root, "--output", tmp_path / "zoo", *QUIET)
    r.assert_clear_error("run_001", "checkpoints", "weights_only=True")
    _no_code_ran(marker)
    assert_unchanged(before, root)
    assert not (tmp_path / "zoo").exists()


# ------------------------------------------------------------------------------------------ import-flat
def _flat(root: Path) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return json_layout(root / "layout.json"), write_csv(root / "meta.csv", metadata_rows(3))


@pytest.mark.parametrize(
    ("name", "write", "fragments"),
    [
        ("w.npy", npy_objects, ("refused for safety", "Python objects", "np.save")),
        ("w.pkl", plain_pickle, (".npy or .safetensors",)),
        ("w.pickle", plain_pickle, (".npy or .safetensors",)),
    ],
    ids=["npy object array", "pkl", "pickle"],
)
def test_import_flat_never_unpickles_the_weights(
    name: str, write: Callable[[Path, Path], None], fragments: tuple[str, ...], tmp_path: Path, marker: Path
) -> None:
    """`zoo import-flat` on a weights file that needs unpickling: refused, naming the safe format."""
    layout, meta = _flat(tmp_path / "in")
    weights = tmp_path / "in" / name
    write(weights, marker)
    before = snapshot(tmp_path / "in")
    r = run_cli("zoo", "import-flat", weights, "--layout", layout, "--metadata", meta,
                "--output", tmp_path / "zoo", *QUIET)  # fmt: skip
    r.assert_clear_error(str(weights), *fragments)
    _no_code_ran(marker)
    assert_unchanged(before, tmp_path / "in")


def test_import_flat_refuses_a_pickled_metadata_table(tmp_path: Path, marker: Path) -> None:
    """``import-flat --metadata meta.pkl``: refused by type (pandas would unpickle it), formats named."""
    layout, _ = _flat(tmp_path / "in")
    weights = tmp_path / "in" / "w.npy"
    np.save(weights, np.zeros((6, WIDTH), dtype=np.float32))
    meta = tmp_path / "in" / "meta.pkl"
    plain_pickle(meta, marker)
    r = run_cli("zoo", "import-flat", weights, "--layout", layout, "--metadata", meta,
                "--output", tmp_path / "zoo", *QUIET)  # fmt: skip
    r.assert_clear_error(str(meta), ".csv", ".parquet")
    _no_code_ran(marker)


# ------------------------------------------------------------------------------------------ import-cnnzoo
def test_import_cnnzoo_never_unpickles_weights_npy(tmp_path: Path, marker: Path) -> None:
    """A Small CNN Zoo folder whose ``weights.npy`` is an object array: refused, the float format named."""
    folder = write_synthetic_cnnzoo(tmp_path / "cifar10", n_runs=2, steps=(0, 86))
    npy_objects(folder / "weights.npy", marker)
    before = snapshot(folder)
    r = run_cli("zoo", "import-cnnzoo", folder, "--output", tmp_path / "zoo", *QUIET)
    r.assert_clear_error("weights.npy", "refused for safety", "np.save")
    _no_code_ran(marker)
    assert_unchanged(before, folder)


# ------------------------------------------------------------------------------------- saved heads, encoders
@pytest.fixture(scope="module")
def good_checkpoint(head_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pickles-ckpt") / "model.safetensors"
    save_file(load_zoo(head_zoo).final().split("test").state_dict(0), str(path))
    return path


@pytest.mark.parametrize("write", [pt_zip, plain_pickle], ids=["torch file", "pickle"])
def test_load_head_never_unpickles_its_weights(
    write: Callable[[Path, Path], None], run_dir: Path, good_checkpoint: Path, tmp_path: Path, marker: Path
) -> None:
    """A head folder whose ``model.safetensors`` was replaced by a pickle, loaded with ``--trust`` (so the
    content hash does not stop it first): the weights file is named and refused, nothing runs."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    weights = run / "head" / "model.safetensors"
    write(weights, marker)
    r = run_cli("predict", "--head", run, "--trust", "true", good_checkpoint)
    r.assert_clear_error("model.safetensors")
    assert r.out == ""  # no prediction at all, not a wrong one
    _no_code_ran(marker)


def test_load_head_without_trust_refuses_a_swapped_weights_file(
    run_dir: Path, good_checkpoint: Path, tmp_path: Path, marker: Path
) -> None:
    """Without ``--trust``: refused by the content hash before the file is opened, naming the weights file
    and saying to restore the head (not to start a training over, which is advice for a training state)."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    pt_zip(run / "head" / "model.safetensors", marker)
    r = run_cli("predict", "--head", run, good_checkpoint)
    r.assert_clear_error("changed: model.safetensors", "restore the original files")
    assert "--overwrite" not in r.err and r.out == ""
    _no_code_ran(marker)


@pytest.mark.parametrize("write", [pt_zip, plain_pickle], ids=["torch file", "pickle"])
def test_load_encoder_never_unpickles_its_weights(
    write: Callable[[Path, Path], None], head_zoo: Path, head_encoder: Path, tmp_path: Path, marker: Path
) -> None:
    """``zooprobe train --encoder FOLDER`` whose ``model.safetensors`` is a pickle: refused, naming the
    file, before any training or writing."""
    encoder = tmp_path / "encoder"
    shutil.copytree(head_encoder, encoder)
    write(encoder / "model.safetensors", marker)
    out = tmp_path / "run"
    r = run_cli("train", "--task", "accuracy", "--zoo", head_zoo, "--encoder", encoder, "--output", out,
                "--optim.epochs", "1", *QUIET)  # fmt: skip
    r.assert_clear_error("model.safetensors")
    _no_code_ran(marker)
    assert not (out / "metrics.json").exists()
