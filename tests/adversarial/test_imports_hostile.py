"""Hostile and unusual inputs to the zoo importers (issue 31, and issue 28's Small CNN Zoo without
``modeldir``): a source rewritten under a resumable import, a symbolic link out of the checkpoint folder,
JSON booleans where numbers belong, nested Parquet columns, absurd split-file indices, reserved tensor names,
an option the error message names, an import that keeps nothing, and metrics aligned by row order alone.

Each case is a clear error (exit 2, one line naming the file, row or field and the fix) that leaves the
user's files as they were and no half-made output folder, or, where the input is usable, an import that says
how it read it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from harness import assert_unchanged, run_cli, snapshot
from safetensors.torch import save_file

from files import WIDTH, json_layout, metadata_rows, write_csv
from zooprobe.api import load_zoo
from zooprobe.bench.imports import write_synthetic_cnnzoo
from zooprobe.zoo.importers import flat  # the import engine: tests patch its `_write_part`
from zooprobe.zoo.store import MANIFEST

QUIET = ("--progress", "false")


# ---------------------------------------------------------------------------------------------- helpers
def _flat_zoo(root: Path, n_runs: int = 3, weights: np.ndarray | None = None) -> tuple[Path, Path, Path]:
    """A flat-vector zoo: ``w.npy``, ``layout.json`` and ``meta.csv`` (two checkpoints per run)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = metadata_rows(n_runs)
    if weights is None:
        weights = np.random.default_rng(0).normal(size=(len(rows), WIDTH)).astype(np.float32)
    np.save(root / "w.npy", weights)
    return root / "w.npy", json_layout(root / "layout.json"), write_csv(root / "meta.csv", rows)


def _import_flat(weights: Path, layout: Path, metadata: Path, output: Path, *extra: str) -> Any:
    return run_cli(
        "zoo", "import-flat", weights, "--layout", layout, "--metadata", metadata, "--output", output,
        *QUIET, *extra,
    )  # fmt: skip


def _cnnzoo(folder: Path, n_runs: int = 4, steps: tuple[int, ...] = (0, 86)) -> Path:
    return write_synthetic_cnnzoo(folder, n_runs=n_runs, steps=steps)


# ---------------------------------------------------------------------------------------------- 1. resume
def test_a_resumed_import_refuses_a_weights_file_rewritten_in_place(tmp_path: Path, monkeypatch) -> None:
    """Killed after its first part, the weights rewritten keeping size and mtime: no resume, which would
    mix rows of both files; ``--overwrite true`` starts over."""
    folder = _cnnzoo(tmp_path / "cifar10")
    output = tmp_path / "zoo"
    chunks, write_part = flat._Plan.chunks, flat._write_part
    monkeypatch.setattr(flat._Plan, "chunks", lambda self, target: chunks(self, 2))  # 4 parts of 1 run
    calls: list[int] = []

    def killed_after_the_first_part(*args: Any, **kwargs: Any) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return write_part(*args, **kwargs)

    monkeypatch.setattr(flat, "_write_part", killed_after_the_first_part)
    r = run_cli("zoo", "import-cnnzoo", folder, "--output", output, "--step", "all", *QUIET)
    assert r.code == 130 and not r.traceback  # Ctrl-C: the CLI's interrupted exit
    monkeypatch.setattr(flat, "_write_part", write_part)
    assert len(list((output / ".parts").glob("import-*.parquet"))) == 1

    path = folder / "weights.npy"
    stat = path.stat()
    rewritten = np.lib.format.open_memmap(path, mode="r+")
    rewritten[:] = -rewritten[:]  # in place: same size
    rewritten.flush()
    del rewritten
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same modification time
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    before = snapshot(folder)

    r = run_cli("zoo", "import-cnnzoo", folder, "--output", output, "--step", "all", *QUIET)
    r.assert_clear_error("weights file", "weights.npy", "has changed", "--overwrite true")
    assert "Resumed" not in r.out
    assert_unchanged(before, folder)

    r = run_cli(
        "zoo", "import-cnnzoo", folder, "--output", output, "--step", "all", "--overwrite", "true", *QUIET
    )
    assert r.code == 0, r.err
    assert "Resumed" not in r.out and "Imported 8 checkpoint(s) of 4 run(s)" in r.out
    fresh = tmp_path / "fresh"
    assert run_cli("zoo", "import-cnnzoo", folder, "--output", fresh, "--step", "all", *QUIET).code == 0
    a, b = load_zoo(output), load_zoo(fresh)
    assert all(a.content_hash(i) == b.content_hash(i) for i in range(len(b)))


# ---------------------------------------------------------------------------------------------- 2. symlinks
def test_import_folder_refuses_a_symlink_to_a_file_outside_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    save_file({"w": torch.ones(2, 2)}, str(outside / "secret.safetensors"))
    folder = tmp_path / "ckpts"
    folder.mkdir()
    save_file({"w": torch.zeros(2, 2)}, str(folder / "a.safetensors"))
    (folder / "link.safetensors").symlink_to(outside / "secret.safetensors")
    (folder / "inside.safetensors").symlink_to(folder / "a.safetensors")  # a link within the folder is fine
    meta = write_csv(
        tmp_path / "meta.csv",
        [
            {"file": "inside.safetensors", "test_accuracy": 0.5},
            {"file": "link.safetensors", "test_accuracy": 0.6},
        ],
    )
    before = snapshot(tmp_path)
    output = tmp_path / "zoo"
    r = run_cli("zoo", "import-folder", folder, "--metadata", meta, "--output", output, *QUIET)
    r.assert_clear_error("row 2", "link.safetensors", "outside the checkpoint folder", "symbolic link")
    assert not output.exists()
    assert_unchanged(before, tmp_path)
    r = run_cli(
        "zoo", "import-folder", folder, "--metadata", meta, "--output", output, "--skip_invalid", "true"
    )
    assert r.code == 0, r.err
    assert len(load_zoo(output)) == 1


# ---------------------------------------------------------------------------------------------- 3. booleans
@pytest.mark.parametrize("name", ["meta.jsonl", "meta.jsonl.gz"])
def test_a_json_boolean_is_not_a_number(tmp_path: Path, name: str) -> None:
    weights, layout, _ = _flat_zoo(tmp_path)
    rows = metadata_rows(3)
    rows[1]["test_accuracy"] = True  # run m0's final checkpoint (pandas' reader made this 1.0)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    meta = tmp_path / name
    if name.endswith(".gz"):
        import gzip

        meta.write_bytes(gzip.compress(text.encode()))
    else:
        meta.write_text(text)
    r = _import_flat(weights, layout, meta, tmp_path / "zoo")
    r.assert_clear_error(f"{name} row 2", "'test_accuracy'", "true is a boolean, not a number")
    assert not (tmp_path / "zoo").exists()


# ---------------------------------------------------------------------------------------------- 4. tables
def test_a_parquet_list_column_is_named(tmp_path: Path) -> None:
    weights, layout, _ = _flat_zoo(tmp_path)
    table = pd.DataFrame(metadata_rows(3))
    table["history"] = [[0.1, 0.2]] * len(table)
    table.to_parquet(tmp_path / "meta.parquet")
    r = _import_flat(weights, layout, tmp_path / "meta.parquet", tmp_path / "zoo")
    r.assert_clear_error("meta.parquet", "column 'history'", "lists or records", "flatten")
    assert not (tmp_path / "zoo").exists()


@pytest.mark.parametrize("index", ["1" + "0" * 30, "6"])
def test_a_split_file_index_beyond_the_weights_is_named(tmp_path: Path, index: str) -> None:
    weights, layout, meta = _flat_zoo(tmp_path)  # 6 rows
    split = tmp_path / "split.csv"
    split.write_text("\n".join(["0", "1", index, "3", "4", "5"]) + "\n")
    r = _import_flat(weights, layout, meta, tmp_path / "zoo", "--split_file", split)
    r.assert_clear_error("split.csv line 3", "is outside the weights file's 6 rows")
    assert not (tmp_path / "zoo").exists()


# ---------------------------------------------------------------------------------------------- 5. --names
@pytest.mark.parametrize(
    "names, message",
    [
        ('{"0.weight": "__metadata__"}', "'__metadata__' is reserved by the safetensors format"),
        ('{"0.weight": ""}', "a tensor name must be a non-empty string"),
        ('{"0.weight": "  "}', "a tensor name must be a non-empty string"),
    ],
)
def test_names_that_cannot_name_a_tensor_are_refused_before_the_output_exists(
    tmp_path: Path, names: str, message: str
) -> None:
    weights, layout, meta = _flat_zoo(tmp_path)
    r = _import_flat(weights, layout, meta, tmp_path / "zoo", "--names", names)
    r.assert_clear_error("names: '0.weight'", message)
    assert not (tmp_path / "zoo").exists()


def test_a_layout_entry_named_like_the_safetensors_header_is_refused(tmp_path: Path) -> None:
    weights, _, meta = _flat_zoo(tmp_path)
    layout = json_layout(
        tmp_path / "layout.json",
        [("__metadata__", (3, 4)), ("0.bias", (3,)), ("2.weight", (2, 3)), ("2.bias", (2,))],
    )
    r = _import_flat(weights, layout, meta, tmp_path / "zoo")
    r.assert_clear_error("layout.json entry '__metadata__'", "reserved by the safetensors format", "--names")
    assert not (tmp_path / "zoo").exists()


# ---------------------------------------------------------------------------------------------- 6. percent
def test_import_cnnzoo_takes_the_accuracy_percent_option_its_error_names(tmp_path: Path) -> None:
    folder = _cnnzoo(tmp_path / "cifar10", n_runs=3, steps=(86,))
    metrics = pd.read_csv(folder / "metrics.csv.gz", index_col=0)
    for column in ("test_accuracy", "train_accuracy"):
        metrics[column] = metrics[column] * 100
    metrics.to_csv(folder / "metrics.csv.gz")
    r = run_cli("zoo", "import-cnnzoo", folder, "--output", tmp_path / "zoo", *QUIET)
    r.assert_clear_error("'test_accuracy'", "--accuracy_percent true")
    r = run_cli(
        "zoo", "import-cnnzoo", folder, "--output", tmp_path / "zoo", "--accuracy_percent", "true", *QUIET
    )
    assert r.code == 0, r.err
    got = load_zoo(tmp_path / "zoo").metadata().sort_values("source_row")["test_accuracy"].to_numpy()
    assert np.allclose(got, metrics["test_accuracy"].to_numpy() / 100)


# ------------------------------------------------------------------------------------------- 7. nothing kept
@pytest.mark.parametrize("existing", [False, True])
def test_an_import_that_keeps_nothing_leaves_nothing_behind(tmp_path: Path, existing: bool) -> None:
    weights, layout, meta = _flat_zoo(tmp_path, weights=np.full((6, WIDTH), np.nan, dtype=np.float32))
    output = tmp_path / "zoo"
    if existing:
        output.mkdir()  # the user's own empty folder: kept, and left empty
    r = _import_flat(weights, layout, meta, output)
    r.assert_clear_error("no checkpoint to import", "non-finite", "nothing was written")
    assert output.exists() == existing
    if existing:
        assert list(output.iterdir()) == []
    r = _import_flat(weights, layout, meta, output)  # the same answer again, not "an unfinished import"
    r.assert_clear_error("no checkpoint to import")


# -------------------------------------------------------------------------------------------- 8. no modeldir
def test_small_cnn_zoo_without_modeldir_is_aligned_by_row_order(tmp_path: Path) -> None:
    """The format the NFN loader reads: no ``modeldir``; rows of metrics.csv.gz and weights.npy in order.
    Each row at the final step is one run, with the weights and metrics of its own row."""
    folder = _cnnzoo(tmp_path / "cifar10", n_runs=5, steps=(0, 20, 86))
    reference = tmp_path / "with-modeldir"
    assert run_cli("zoo", "import-cnnzoo", folder, "--output", reference, *QUIET).code == 0
    metrics = pd.read_csv(folder / "metrics.csv.gz", index_col=0)
    metrics.drop(columns=["modeldir"]).to_csv(folder / "metrics.csv.gz")
    before = snapshot(folder)
    output = tmp_path / "zoo"
    r = run_cli("zoo", "import-cnnzoo", folder, "--output", output, *QUIET)
    assert r.code == 0, r.err
    assert "Imported 5 checkpoint(s) of 5 run(s)" in r.out
    assert "Rows aligned by row order" in r.out and "no run id column" in r.out and "step 86" in r.out
    manifest = json.loads((output / MANIFEST).read_text())
    assert "by row order" in manifest["alignment"] and "no run id column" in manifest["alignment"]
    assert "runs by column 'modeldir'" in json.loads((reference / MANIFEST).read_text())["alignment"]
    zoo, ref = load_zoo(output), load_zoo(reference)
    meta, ref_meta = zoo.metadata(), ref.metadata()
    assert sorted(meta["source_row"]) == sorted(ref_meta["source_row"])  # the same 5 rows (step 86)
    by_row = {int(s): i for i, s in enumerate(ref_meta["source_row"])}
    for i, row in enumerate(meta["source_row"]):
        j = by_row[int(row)]
        assert zoo.content_hash(i) == ref.content_hash(j)
        assert meta["test_accuracy"].iat[i] == ref_meta["test_accuracy"].iat[j]
        assert bool(meta["is_final"].iat[i]) and meta["checkpoint_epoch"].iat[i] == 86
    assert_unchanged(before, folder)

    r = run_cli("zoo", "import-cnnzoo", folder, "--output", tmp_path / "e20", "--step", "20", *QUIET)
    assert r.code == 0, r.err
    early = load_zoo(tmp_path / "e20").metadata()
    assert len(early) == 5 and not early["is_final"].any()  # epoch 20 is not the end of training


@pytest.mark.parametrize(
    "problem, fragments",
    [
        (
            "one metrics row short",
            ("14 rows but", "weights.npy holds 15 vectors", "matched by their order alone"),
        ),
        ("--step all", ("no 'modeldir' column", "cannot be grouped", "--step final")),
    ],
)
def test_small_cnn_zoo_without_modeldir_refuses_what_row_order_cannot_align(
    tmp_path: Path, problem: str, fragments: tuple[str, ...]
) -> None:
    folder = _cnnzoo(tmp_path / "cifar10", n_runs=5, steps=(0, 20, 86))
    metrics = pd.read_csv(folder / "metrics.csv.gz", index_col=0).drop(columns=["modeldir"])
    extra: tuple[str, ...] = ()
    if problem == "one metrics row short":
        metrics = metrics.iloc[:-1]
    else:
        extra = ("--step", "all")
    metrics.to_csv(folder / "metrics.csv.gz")
    before = snapshot(folder)
    r = run_cli("zoo", "import-cnnzoo", folder, "--output", tmp_path / "zoo", *extra, *QUIET)
    r.assert_clear_error(*fragments)
    assert not (tmp_path / "zoo").exists()
    assert_unchanged(before, folder)
