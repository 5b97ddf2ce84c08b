"""kill -9 at every step of the write protocol of ``zoo merge``, the four importers and ``encoder pretrain``
(issue 28), then the same command again.

The kill is real (`harness.signalled_after`): the command runs in its own process, which sends itself
``SIGKILL`` right after one of zooprobe's write steps returns, so no handler, ``finally`` or ``atexit`` runs.
The points are the steps a zoo write goes through (`zooprobe.zoo.writer`): the marker and staging folder
(``begin_zoo_write``), a split's first row group (``SplitWriter.write``), the data files swapped in and the
card written (``atomic_write_text``), the manifest written but the marker not yet removed
(``atomic_write_json``); for the resumable imports also each finished part (``_write_part``); for the
in-memory imports the zoo complete under its temporary name, before the rename.

A user expects: a killed command leaves nothing that loads as a finished zoo, the inputs byte-identical, and
running the same command again finishes with exactly (file for file) what an uninterrupted run writes;
nothing is lost, and no temporary folder stays behind. Training a head under kill -9 is
``tests/training/test_trainer.py::test_sigkill_and_resume_gives_the_same_metrics``; ``zoo build`` is
``test_interrupts.py``.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from harness import assert_killed, assert_unchanged, run_cli, signalled_after, snapshot
from safetensors.torch import load_file

from zooprobe.api import load_zoo
from zooprobe.bench.imports import write_synthetic_cnnzoo
from zooprobe.errors import ZooprobeError
from zooprobe.zoo.store import MANIFEST

QUIET = ("--progress", "false")
WRITER = "zooprobe.zoo.writer"
BEGIN, ROW_GROUP, CARD, MANIFEST_WRITTEN = (  # the steps of a zoo write
    "zooprobe.zoo.build:begin_zoo_write",
    f"{WRITER}:SplitWriter.write",
    f"{WRITER}:atomic_write_text",
    f"{WRITER}:atomic_write_json",
)
PART = "zooprobe.zoo.importers.flat:_write_part"


def _written(root: Path) -> dict[str, bytes]:
    """What a zoo command wrote: the data files, the card and the manifest, by path."""
    names = [*sorted((root / "data").glob("*.parquet")), root / "README.md", root / MANIFEST]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in names}


def _not_finished(root: Path) -> None:
    """`root` (if it exists) does not load as a zoo: a killed write never looks complete."""
    if root.exists():
        with pytest.raises(ZooprobeError):
            load_zoo(root)


def _kill_then_rerun(where: str, after: int, args: tuple[object, ...], out: Path, inputs: list[Path]) -> None:
    """Kill ``zooprobe ARGS --output OUT`` after the `after`-th call of `where`, check that nothing looks
    finished and the inputs are untouched, then run it again to the end."""
    before = [snapshot(p) for p in inputs]
    assert_killed(signalled_after(where, after, signal.SIGKILL, *args, "--output", out))
    _not_finished(out)
    r = run_cli(*args, "--output", out)
    assert r.code == 0 and not r.traceback, r.err
    assert "Traceback" not in r.err
    for path, snap in zip(inputs, before, strict=True):
        assert_unchanged(snap, path)
    assert not list(out.parent.glob(f".{out.name}.importing-*")), "a temporary folder was left behind"


# ---------------------------------------------------------------------------------------------- zoo merge
@pytest.fixture(scope="module")
def merged(tiny_shards: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """What an uninterrupted ``zoo merge`` of the shards writes."""
    out = tmp_path_factory.mktemp("merged") / "zoo"
    r = run_cli("zoo", "merge", "--output", out, *tiny_shards)
    assert r.code == 0, r.err
    return _written(out)


@pytest.mark.parametrize(
    ("where", "after"),
    [(BEGIN, 1), (CARD, 1), (MANIFEST_WRITTEN, 1)],
    ids=["marker", "card", "manifest"],
)
def test_kill_9_during_zoo_merge_then_rerun_is_identical(
    where: str, after: int, tiny_shards: tuple[Path, Path], merged: dict[str, bytes], tmp_path: Path
) -> None:
    """``zoo merge`` killed at a step of its write: the shards are untouched, nothing loads, and the same
    merge again writes exactly what an uninterrupted merge writes."""
    out = tmp_path / "zoo"
    args = ("zoo", "merge", *tiny_shards)
    _kill_then_rerun(where, after, args, out, list(tiny_shards))
    assert _written(out) == merged
    assert len(load_zoo(out)) == 4  # the final checkpoints of the 4 runs: the zoo loads


# ---------------------------------------------------------------------------------------------- importers
def _reference(args: tuple[object, ...], tmp_path: Path) -> dict[str, bytes]:
    out = tmp_path / "reference"
    r = run_cli(*args, "--output", out)
    assert r.code == 0, r.err
    return _written(out)


@pytest.mark.parametrize(
    ("where", "after"),
    [(PART, 1), (ROW_GROUP, 1), (MANIFEST_WRITTEN, 1)],
    ids=["first-part", "row-group", "manifest"],
)
def test_kill_9_during_import_flat_then_rerun_is_identical(
    where: str, after: int, flat_inputs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """``zoo import-flat`` (two parts of whole runs) killed after a part, while writing the zoo, or after the
    manifest: the rerun resumes and writes exactly what an uninterrupted import writes."""
    weights, layout, meta = flat_inputs
    args = ("zoo", "import-flat", weights, "--layout", layout, "--metadata", meta, *QUIET)
    expected = _reference(args, tmp_path)
    out = tmp_path / "zoo"
    _kill_then_rerun(where, after, args, out, [weights.parent])
    assert _written(out) == expected
    assert not (out / ".parts").exists()


@pytest.mark.parametrize(("where", "after"), [(PART, 1)], ids=["part"])
def test_kill_9_during_import_cnnzoo_then_rerun_is_identical(where: str, after: int, tmp_path: Path) -> None:
    """``zoo import-cnnzoo`` killed after its part or while writing the zoo: identical after the rerun."""
    folder = write_synthetic_cnnzoo(tmp_path / "cifar10", n_runs=4, steps=(0, 86))
    args = ("zoo", "import-cnnzoo", folder, "--step", "all", *QUIET)
    expected = _reference(args, tmp_path)
    out = tmp_path / "zoo"
    _kill_then_rerun(where, after, args, out, [folder])
    assert _written(out) == expected


def _checkpoint_folder(root: Path) -> tuple[Path, Path]:
    import torch
    from safetensors.torch import save_file

    from files import write_csv

    folder = root / "ckpts"
    folder.mkdir(parents=True)
    rows = []
    for i in range(6):
        torch.manual_seed(i)
        state = {k: v.detach().contiguous() for k, v in torch.nn.Linear(4, 3).state_dict().items()}
        save_file(state, folder / f"m{i}.safetensors")
        rows.append({"file": f"m{i}.safetensors", "test_accuracy": 0.5 + i / 20})
    return folder, write_csv(root / "meta.csv", rows)


def _model_zoos(root: Path) -> Path:
    import torch

    for m in range(4):
        run = root / f"run_{m:03d}"
        (run / "checkpoint_000001").mkdir(parents=True)
        params = {"model::nlin": "relu", "optim::optimizer": "adam", "optim::lr": 1e-3, "seed": m}
        (run / "params.json").write_text(json.dumps(params))
        result = {"training_iteration": 1, "test_acc": 0.5 + m / 10, "train_acc": 0.5, "test_loss": 1.0}
        (run / "result.json").write_text(json.dumps(result) + "\n")
        torch.manual_seed(m)
        torch.save(torch.nn.Linear(3, 2).state_dict(), run / "checkpoint_000001" / "checkpoints")
    return root


@pytest.mark.parametrize(
    ("importer", "where"),
    [
        ("import-folder", ROW_GROUP),
        ("import-folder", MANIFEST_WRITTEN),
        ("import-modelzoos", MANIFEST_WRITTEN),
    ],
    ids=["folder-row-group", "folder-manifest", "modelzoos-manifest"],
)
def test_kill_9_during_an_in_memory_import_then_rerun_is_identical(
    importer: str, where: str, tmp_path: Path
) -> None:
    """``import-folder`` / ``import-modelzoos`` write the zoo under a temporary name and rename it: killed
    before the rename, there is no output folder; the rerun removes the dead process's temporary folder and
    writes exactly what an uninterrupted import writes."""
    if importer == "import-folder":
        folder, meta = _checkpoint_folder(tmp_path / "in")
        args: tuple[object, ...] = ("zoo", importer, folder, "--metadata", meta, *QUIET)
    else:
        folder = _model_zoos(tmp_path / "in")
        args = ("zoo", importer, folder, *QUIET)
    expected = _reference(args, tmp_path)
    out = tmp_path / "zoo"
    before = snapshot(folder)
    assert_killed(signalled_after(where, 1, signal.SIGKILL, *args, "--output", out))
    assert not out.exists()  # a new folder appears whole or not at all
    assert list(tmp_path.glob(".zoo.importing-*")), "the kill came before the temporary folder existed"
    r = run_cli(*args, "--output", out)
    assert r.code == 0 and not r.traceback, r.err
    assert _written(out) == expected
    assert not list(tmp_path.glob(".zoo.importing-*"))
    assert_unchanged(before, folder)


# ---------------------------------------------------------------------------------------------- pretrain
def test_kill_9_during_pretrain_then_rerun_is_identical(
    head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    """``encoder pretrain`` killed right after its first epoch's training state is saved: the folder does
    not pass for a finished encoder, and the same command again resumes to the very encoder (weights, bit
    for bit) an uninterrupted run gives (the session's `head_encoder`, pretrained with this configuration)."""
    args = ("encoder", "pretrain", "--zoo", head_zoo, "--preset", "tiny", "--summary_tokens", "false", *QUIET)
    out = tmp_path / "enc"
    save_state = "zooprobe.training.loop:save_state"
    assert_killed(signalled_after(save_state, 1, signal.SIGKILL, *args, "--output", out))
    config = out / "config.json"
    assert not config.exists() or json.loads(config.read_text())["provenance"]["finished"] is False
    r = run_cli(*args, "--output", out)
    assert r.code == 0 and not r.traceback, r.err
    assert json.loads(config.read_text())["provenance"]["finished"] is True
    a, b = load_file(head_encoder / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


# ---------------------------------------------------------------------------------------------- adapt
def test_kill_9_during_adapt_then_rerun_is_identical(tiny_zoo: Path, tmp_path: Path) -> None:
    """``encoder adapt`` killed right after its first epoch's training state is saved: the folder does not
    pass for a finished encoder, and the same command again resumes to
    the very encoder (weights, bit for bit) an uninterrupted run gives."""
    args = ("encoder", "adapt", "--zoo", tiny_zoo, "--epochs", "2", "--batch_size", "8", *QUIET)
    reference = tmp_path / "reference"
    r = run_cli(*args, "--output", reference)
    assert r.code == 0 and not r.traceback, r.err
    out = tmp_path / "enc"
    save_state = "zooprobe.training.loop:save_state"
    assert_killed(signalled_after(save_state, 1, signal.SIGKILL, *args, "--output", out))
    config = out / "config.json"
    assert not config.exists() or json.loads(config.read_text())["provenance"]["finished"] is False
    r = run_cli(*args, "--output", out)
    assert r.code == 0 and not r.traceback, r.err
    assert json.loads(config.read_text())["provenance"]["finished"] is True
    a, b = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
