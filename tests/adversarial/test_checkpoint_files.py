"""Hostile checkpoint files given to ``zooprobe predict`` and ``zooprobe zoo import-folder`` (issue 12).

Resource bombs (a stride-0 view, sizes declared far beyond the file, totals beyond ``--max_params``), a FIFO,
running out of memory, a bad ``--json`` location and a head from an unfinished run: each must be a clear
error (exit code 2) before anything large is allocated, with the user's files byte-identical afterwards.
The hostile files are generated here, in tmp_path.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from harness import assert_unchanged, run_cli, run_subprocess, snapshot
from safetensors.torch import save_file
from torch import nn

from zooprobe.api import load_zoo
from zooprobe.inference import load_checkpoint
from zooprobe.inference.assess import _load


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """The user's folder of checkpoints, with a file of notes of theirs next to them."""
    folder = tmp_path / "ckpts"
    folder.mkdir()
    (folder / "NOTES.md").write_text("where these checkpoints came from\n")
    return folder


def small_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """12 modules (names 0..11: natural order differs from text order) ending in a BatchNorm: 145 values,
    584 bytes."""
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(3, 3) for _ in range(11)], nn.BatchNorm1d(3))
    return {k: v.clone() for k, v in model.state_dict().items()}


VALUES, BYTES = 145, 584


@contextlib.contextmanager
def memory_cap(extra: int = 2 * 2**30) -> Iterator[None]:
    """At most `extra` more bytes of address space in the block: a regression that tries to allocate
    the bomb's gigabytes fails fast (and the assertions on the message catch it) instead of taking them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    cap = pages * os.sysconf("SC_PAGE_SIZE") + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def write_bomb(path: Path) -> Path:
    """A ~160 kB torch file whose one tensor is a 40000 x 40000 stride-0 view (6.4 GB when copied)."""
    torch.save({"w": torch.zeros(40000).expand(40000, 40000)}, path)
    assert path.stat().st_size < 200_000
    return path


def write_meta(path: Path, files: list[str]) -> Path:
    path.write_text("file,split,test_accuracy\n" + "".join(f"{f},train,0.5\n" for f in files))
    return path


# ------------------------------------------------------------------------------------------ bombs
def test_stride0_bomb_refused_by_predict(run_dir: Path, inputs: Path) -> None:
    bomb = write_bomb(inputs / "bomb.pt")
    before, run_before = snapshot(inputs), snapshot(run_dir)
    with memory_cap():
        r = run_cli("predict", "--head", run_dir, bomb)
    r.assert_clear_error(str(bomb), "tensor 'w'", "broadcast or overlapping view", "6.4 GB", "160.0 kB")
    assert "out of memory" not in r.err and r.out == ""
    assert_unchanged(before, inputs)
    assert_unchanged(run_before, run_dir)


def test_stride0_bomb_refused_by_import_folder(inputs: Path, tmp_path: Path) -> None:
    save_file(small_state_dict(), inputs / "good.safetensors")
    bomb = write_bomb(inputs / "bomb.pt")
    meta = write_meta(tmp_path / "meta.csv", ["good.safetensors", "bomb.pt"])
    before = snapshot(tmp_path)
    with memory_cap():
        r = run_cli("zoo", "import-folder", inputs, "--metadata", meta, "--output", tmp_path / "zoo")
    r.assert_clear_error("row 2", str(bomb), "tensor 'w'", "broadcast or overlapping view", "6.4 GB")
    assert_unchanged(before, tmp_path)  # no zoo folder, no temporary folder


def test_safetensors_declaring_more_than_the_file_holds(run_dir: Path, inputs: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 4 * 10**10]}})
    path = inputs / "huge.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode() + bytes(64))
    before = snapshot(inputs)
    with memory_cap():
        r = run_cli("predict", "--head", run_dir, path)
    r.assert_clear_error(
        str(path), "tensor 'w'", "declares 40.0 GB", "holds only 64 B", "refused before reading"
    )
    assert_unchanged(before, inputs)


def test_torch_storage_larger_than_its_record(run_dir: Path, inputs: Path, tmp_path: Path) -> None:
    torch.save({"a": torch.arange(10.0)}, tmp_path / "small.pt")
    path = inputs / "lying.pt"  # the same archive, its pickle declaring a 2**30-value storage
    with zipfile.ZipFile(tmp_path / "small.pt") as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                numel = b"X\x03\x00\x00\x00cpuq\x06K\n"  # location 'cpu', memo, BININT1 10
                assert numel in data
                data = data.replace(numel, numel[:-2] + b"J" + (2**30).to_bytes(4, "little"))
            dst.writestr(info.filename, data)
    before = snapshot(inputs)
    with memory_cap():
        r = run_cli("predict", "--head", run_dir, path)
    r.assert_clear_error(
        str(path), "tensor 'a'", "storage of 4.3 GB", "its record in the file holds only 40 B"
    )
    assert_unchanged(before, inputs)


@pytest.mark.parametrize("command", ["predict", "import-folder"])
def test_more_values_than_max_params(command: str, run_dir: Path, inputs: Path, tmp_path: Path) -> None:
    save_file(small_state_dict(), inputs / "m.safetensors")
    meta = write_meta(tmp_path / "meta.csv", ["m.safetensors"])
    before = snapshot(tmp_path)
    if command == "predict":
        r = run_cli("predict", "--head", run_dir, inputs / "m.safetensors", "--max_params", 100)
    else:
        out = tmp_path / "zoo"
        r = run_cli("zoo", "import-folder", inputs, "--metadata", meta, "--output", out, "--max_params", 100)
    r.assert_clear_error("m.safetensors", f"holds {VALUES} values", "more than the limit of 100 (max_params)")
    assert f"--max_params {VALUES}" in r.err  # what to do
    assert_unchanged(before, tmp_path)
    assert run_cli("predict", "--head", run_dir, inputs / "m.safetensors", "--max_params", 0).code == 2


@pytest.mark.parametrize("command", ["predict", "import-folder"])
def test_fifo_is_refused_not_read(command: str, run_dir: Path, inputs: Path, tmp_path: Path) -> None:
    fifo = inputs / "model.pt"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: forever
    meta = write_meta(tmp_path / "meta.csv", ["model.pt"])
    before = snapshot(tmp_path / "meta.csv")
    listing = sorted(p.name for p in inputs.iterdir())
    if command == "predict":
        r = run_subprocess("predict", "--head", run_dir, fifo, timeout=90)
        r.assert_clear_error(str(fifo), "FIFO", "not a regular file")
    else:
        r = run_subprocess(
            "zoo", "import-folder", inputs, "--metadata", meta, "--output", tmp_path / "zoo", timeout=90
        )
        r.assert_clear_error("row 1", str(fifo))
    assert sorted(p.name for p in inputs.iterdir()) == listing and not (tmp_path / "zoo").exists()
    assert_unchanged(before, tmp_path / "meta.csv")


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 6400000000 bytes"),
    ],
)
def test_out_of_memory_is_reported_as_such(
    error: BaseException, run_dir: Path, inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zooprobe.core.checkpoints

    path = inputs / "m.pt"
    torch.save(small_state_dict(), path)

    def no_memory(tensor: torch.Tensor) -> torch.Tensor:
        raise error

    monkeypatch.setattr(zooprobe.core.checkpoints, "_materialize", no_memory)  # where values are allocated
    before = snapshot(inputs)
    r = run_cli("predict", "--head", run_dir, path)
    r.assert_clear_error(str(path), "out of memory", f"{VALUES} values", f"need {BYTES} B of memory")
    assert "corrupt" not in r.err.lower().split("file itself looks consistent")[0]
    assert_unchanged(before, inputs)


# ------------------------------------------------------------------------------------------ predict's --json
@pytest.mark.parametrize("where", ["folder", "missing parent", "parent is a file", "read-only folder"])
def test_json_location_checked_before_predicting(
    where: str, run_dir: Path, inputs: Path, tmp_path: Path
) -> None:
    save_file(small_state_dict(), inputs / "m.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    target, fragments = {
        "folder": (out, ("is a folder",)),
        "missing parent": (out / "new" / "p.json", ("does not exist", "create the folder")),
        "parent is a file": (out / "notes.txt" / "p.json", ("is not a folder",)),
        "read-only folder": (out / "p.json", ("cannot write in", "writable location")),
    }[where]
    if where == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        out.chmod(0o500)
    before, input_before = snapshot(out), snapshot(inputs)
    try:
        r = run_cli("predict", "--head", run_dir, inputs / "m.safetensors", "--json", target)
    finally:
        out.chmod(0o700)
    r.assert_clear_error("--json", str(target), *fragments)
    assert r.out == ""  # nothing predicted or printed first
    assert_unchanged(before, out)
    assert_unchanged(input_before, inputs)


# ------------------------------------------------------------------------------------------ unfinished runs
@pytest.mark.parametrize("state", ["no metrics.json", "head not the best epoch"])
def test_predict_on_an_unfinished_run(state: str, run_dir: Path, inputs: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    if state == "no metrics.json":
        (run / "metrics.json").unlink()  # what a run still training (or killed) looks like
        fragments: tuple[str, ...] = ("not a finished training run", "missing metrics.json")
    else:
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["best_epoch"] = 7  # the head on disk is from another epoch: trained again or restarted
        (run / "metrics.json").write_text(json.dumps(metrics))
        fragments = ("best epoch 7", "being trained again")
    save_file(small_state_dict(), inputs / "m.safetensors")
    before, input_before = snapshot(run), snapshot(inputs)

    r = run_cli("predict", "--head", run, inputs / "m.safetensors")
    r.assert_clear_error(str(run), *fragments, "refusing to predict", "--allow_unfinished true")
    assert r.out == "" and "then push" not in r.err

    r = run_cli("predict", "--head", run, inputs / "m.safetensors", "--allow_unfinished", "true")
    assert r.code == 0 and not r.traceback, r.err
    assert "zooprobe: warning:" in r.err and fragments[0] in r.err and "predicting anyway" in r.err
    assert str(inputs / "m.safetensors") in r.out and "test_accuracy" in r.out
    assert_unchanged(before, run)
    assert_unchanged(input_before, inputs)

    head_only = tmp_path / "head-only"  # a head folder (no run around it) is not checked
    shutil.copytree(run / "head", head_only)
    r = run_cli("predict", "--head", head_only, inputs / "m.safetensors")
    assert r.code == 0 and "predicting anyway" not in r.err, r.err  # (its domain may still warn)


# ------------------------------------------------------------------------------------------ one reader
def test_same_file_read_identically_by_import_and_predict(inputs: Path, tmp_path: Path) -> None:
    sd = small_state_dict(1)
    optimizer = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1}]}
    save_file(sd, inputs / "plain.safetensors")  # no recorded order: natural module order
    save_file(sd, inputs / "ordered.safetensors", metadata={"order": json.dumps(list(sd))})
    torch.save({"model_state_dict": {**sd, "_extra_state": None}, "optimizer": optimizer}, inputs / "c.pt")
    torch.save({"module": sd, "epoch": 3}, inputs / "ddp.pth")
    views = {k: v.t() if v.dim() == 2 else v for k, v in sd.items()}  # transposed views: saved strided
    torch.save(views, inputs / "views.ckpt")
    files = ["plain.safetensors", "ordered.safetensors", "c.pt", "ddp.pth", "views.ckpt"]
    meta = write_meta(tmp_path / "meta.csv", files)
    before = snapshot(inputs)

    r = run_cli("zoo", "import-folder", inputs, "--metadata", meta, "--output", tmp_path / "zoo")
    assert r.code == 0 and not r.traceback, r.err
    zoo = load_zoo(tmp_path / "zoo")
    by_file = {name: i for i, name in enumerate(zoo.metadata()["file"])}
    assert set(by_file) == set(files)
    for name in files:
        imported = zoo.state_dict(by_file[name])
        read = load_checkpoint(inputs / name)
        predicted, _ = _load(inputs / name)  # what predict encodes
        assert list(imported) == list(read) == list(predicted) == list(sd), name  # the model's own order
        want = views if name == "views.ckpt" else sd
        for k in sd:
            assert torch.equal(imported[k], want[k]) and torch.equal(read[k], want[k]), (name, k)
            assert torch.equal(predicted[k], want[k]), (name, k)
    assert_unchanged(before, inputs)
