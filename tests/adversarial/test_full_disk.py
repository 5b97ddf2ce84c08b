"""A full disk (issue 28), on a real small file system: a tmpfs of a few dozen KiB mounted in the test's
folder (`small_disk`; skipped with the reason where it cannot be mounted), so every write path meets the
kernel's own ``No space left on device``, not a simulated one.

`flat_inputs` (conftest) is a flat-vector zoo of 100 kB of weights that do not compress.

A user expects: one line saying the disk is full and which file (exit code 2, no traceback); nothing that
looks finished (no zoo manifest, no ``metrics.json``, no predictions file that is cut short); what was on
the disk before (their files, an earlier zoo or predictions) byte-identical; and, once space is freed, the
same command finishes with the result it gives on a roomy disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from harness import assert_one_line_error, assert_unchanged, fill_disk, run_cli, snapshot
from safetensors.torch import save_file

from files import write_csv
from zooprobe.api import load_zoo
from zooprobe.errors import ZooprobeError
from zooprobe.zoo.store import MANIFEST

QUIET = ("--progress", "false")
FULL = "no space left on device"


def _data(root: Path) -> dict[str, bytes]:
    """A zoo's data files, by name (what two runs of one command must write identically)."""
    return {p.name: p.read_bytes() for p in sorted((root / "data").glob("*.parquet"))}


def _refused(root: Path) -> None:
    """`root` does not load as a zoo (it does not look finished)."""
    assert not (root / MANIFEST).exists() or (root / ".zooprobe-writing").exists()
    if root.exists():
        with pytest.raises(ZooprobeError):
            load_zoo(root)


def _on_disk(disk: Path) -> dict[str, bytes | None]:
    """What the user had on the disk (their notes); checked unchanged afterwards."""
    (disk / "notes.txt").write_text("my notes, on the same disk\n")
    return snapshot(disk)


def _checkpoints(folder: Path, n: int) -> tuple[Path, list[dict[str, object]]]:
    """`n` distinct ``Linear(16, 16)`` checkpoints (1 kB each) in `folder`, and their metadata rows."""
    folder.mkdir()
    rows = []
    for i in range(n):
        torch.manual_seed(i)
        state = {k: v.detach().contiguous() for k, v in torch.nn.Linear(16, 16).state_dict().items()}
        save_file(state, folder / f"m{i}.safetensors")
        rows.append({"file": f"m{i}.safetensors", "test_accuracy": 0.5 + i / 100})
    return folder, rows


def test_import_flat_onto_a_full_disk(
    flat_inputs: tuple[Path, Path, Path], small_disk, tmp_path: Path
) -> None:
    """``zoo import-flat`` onto a disk without room: one line naming the disk full, no zoo that loads, the
    user's files kept; after freeing space, the same command resumes to the zoo a roomy disk gets."""
    weights, layout, meta = flat_inputs
    args = ("zoo", "import-flat", weights, "--layout", layout, "--metadata", meta, *QUIET)
    reference = tmp_path / "reference"
    assert run_cli(*args, "--output", reference).code == 0

    disk = small_disk(1024)  # room for the parts and the zoo once the filler is gone
    filler = fill_disk(disk, 24 * 1024)
    before, inputs = _on_disk(disk), snapshot(flat_inputs[0].parent)
    out = disk / "zoo"
    assert_one_line_error(run_cli(*args, "--output", out), FULL)
    _refused(out)
    assert_unchanged(before, disk, allow_new=True)
    assert_unchanged(inputs, flat_inputs[0].parent)

    filler.unlink()  # the user frees space and runs the same command again
    r = run_cli(*args, "--output", out)
    assert r.code == 0 and not r.traceback, r.err
    assert _data(out) == _data(reference)


def test_import_folder_onto_a_full_disk(small_disk, tmp_path: Path) -> None:
    """``zoo import-folder`` (written under a temporary name, then renamed): no output folder and no
    temporary one left on the full disk; after freeing space, the same zoo as on a roomy disk."""
    ckpts, rows = _checkpoints(tmp_path / "ckpts", 40)
    meta = write_csv(tmp_path / "meta.csv", rows)
    args = ("zoo", "import-folder", ckpts, "--metadata", meta, *QUIET)
    reference = tmp_path / "reference"
    assert run_cli(*args, "--output", reference).code == 0

    disk = small_disk(256)
    filler = fill_disk(disk, 16 * 1024)
    before = _on_disk(disk)
    out = disk / "zoo"
    assert_one_line_error(run_cli(*args, "--output", out), FULL)
    assert_unchanged(before, disk)  # no output, no temporary folder: exactly what the user had
    filler.unlink()
    r = run_cli(*args, "--output", out)
    assert r.code == 0 and not r.traceback, r.err
    assert _data(out) == _data(reference)


def test_overwriting_a_zoo_on_a_full_disk_keeps_the_old_zoo_loadable(small_disk, tmp_path: Path) -> None:
    """``--overwrite true`` onto a disk that fills up while the new zoo is written: the zoo already there
    still loads, unchanged (the new data files are staged beside it and swapped in only when complete)."""
    ckpts, rows = _checkpoints(tmp_path / "ckpts", 40)
    disk = small_disk(256)
    out = disk / "zoo"
    first = write_csv(tmp_path / "first.csv", rows[:2])
    assert run_cli("zoo", "import-folder", ckpts, "--metadata", first, "--output", out, *QUIET).code == 0
    fill_disk(disk, 16 * 1024)
    before = snapshot(disk)
    meta = write_csv(tmp_path / "meta.csv", rows)
    r = run_cli(
        "zoo", "import-folder", ckpts, "--metadata", meta, "--output", out, "--overwrite", "true", *QUIET
    )
    assert_one_line_error(r, FULL)
    assert_unchanged(before, disk)
    assert len(load_zoo(out)) == 2


def test_zoo_merge_onto_a_full_disk(tiny_shards: tuple[Path, Path], small_disk, tmp_path: Path) -> None:
    """``zoo merge`` onto a full disk: one line, no zoo that loads, the shards untouched; after freeing
    space the same merge gives what it gives on a roomy disk, file for file."""
    reference = tmp_path / "reference"
    assert run_cli("zoo", "merge", reference, *tiny_shards).code == 0
    disk = small_disk(512)
    filler = fill_disk(disk, 32 * 1024)
    before, shards = _on_disk(disk), [snapshot(s) for s in tiny_shards]
    out = disk / "zoo"
    assert_one_line_error(run_cli("zoo", "merge", out, *tiny_shards), FULL)
    _refused(out)
    assert_unchanged(before, disk, allow_new=True)
    for shard, snap in zip(tiny_shards, shards, strict=True):
        assert_unchanged(snap, shard)
    filler.unlink()
    r = run_cli("zoo", "merge", out, *tiny_shards)
    assert r.code == 0 and not r.traceback, r.err
    assert _data(out) == _data(reference)


def test_train_onto_a_full_disk(head_zoo: Path, head_encoder: Path, small_disk) -> None:
    """``zooprobe train`` into a run folder on a full disk: one line, no ``metrics.json`` (the run does not
    look finished); after freeing space, the same command finishes the run."""
    disk = small_disk(4096)
    filler = fill_disk(disk, 8 * 1024)
    before = _on_disk(disk)
    run = disk / "run"
    args = ("train", "--task", "accuracy", "--zoo", head_zoo, "--encoder", head_encoder, "--output", run,
            "--optim.epochs", "1", *QUIET)  # fmt: skip
    assert_one_line_error(run_cli(*args), FULL)
    assert not (run / "metrics.json").exists()
    assert_unchanged(before, disk, allow_new=True)
    filler.unlink()
    r = run_cli(*args)
    assert r.code == 0 and not r.traceback, r.err
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 1


def test_pretrain_onto_a_full_disk(head_zoo: Path, small_disk) -> None:
    """``encoder pretrain`` onto a full disk: one line; the folder does not pass for a finished encoder."""
    disk = small_disk(256)
    fill_disk(disk, 8 * 1024)
    before = _on_disk(disk)
    out = disk / "enc"
    r = run_cli("encoder", "pretrain", "--zoo", head_zoo, "--output", out, "--preset", "tiny",
                "--epochs", "1", *QUIET)  # fmt: skip
    assert_one_line_error(r, FULL)
    config = out / "config.json"
    assert not config.exists() or json.loads(config.read_text())["provenance"]["finished"] is False
    assert_unchanged(before, disk, allow_new=True)


def test_predict_json_onto_a_full_disk_keeps_the_earlier_predictions(
    run_dir: Path, small_disk, tmp_path: Path
) -> None:
    """``predict --json`` onto a full disk: the predictions are printed, the error says they could not be
    written, and the predictions file written earlier is kept whole (not cut short)."""
    torch.manual_seed(0)
    model = tmp_path / "model.safetensors"
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, model)
    disk = small_disk(64)
    target = disk / "predictions.json"
    assert run_cli("predict", "--head", run_dir, model, "--json", target).code == 0
    (disk / "padding.json").write_text(json.dumps(json.loads(target.read_text()), indent=2))
    fill_disk(disk, 256)
    before = snapshot(disk)
    r = run_cli("predict", "--head", run_dir, model, model, model, "--json", target)
    assert_one_line_error(r, FULL, "--json", "printed above")
    assert str(model) in r.out  # the predictions were shown
    assert_unchanged(before, disk)
    assert json.loads(target.read_text())["predictions"]
