"""Fixtures of the hostile-input tests; the helpers (`run_cli`, `snapshot`, ...) are in `harness.py`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import CliResult, assert_unchanged, run_cli, run_subprocess, snapshot

from trained_heads import TrainedHeads


@pytest.fixture(scope="session")
def run_dir(trained_heads: TrainedHeads) -> Path:
    """A finished run folder of a small neural accuracy head (the session's, tests/conftest.py); shared by
    every hostile-input test that needs ``zooprobe predict`` (read-only: copy it to edit it)."""
    return trained_heads["accuracy"]


__all__ = ["CliResult", "assert_unchanged", "run_cli", "run_subprocess", "snapshot"]


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A folder a user already uses for their own work: notes, data and a checkpoint of theirs."""
    root = tmp_path / "mine"
    (root / "data").mkdir(parents=True)
    (root / "checkpoints").mkdir()
    (root / "README.md").write_text("# my project\n\nmy own notes\n")
    (root / "config.yaml").write_text("lr: 0.1  # my own training config\n")
    (root / "config.json").write_text('{"mine": true}\n')
    (root / "metrics.json").write_text('{"accuracy": 0.93}\n')
    (root / "data" / "train.csv").write_text("x,y\n1,2\n")
    (root / "checkpoints" / "my_model_epoch50.pt").write_bytes(b"\x80\x02my weights" * 100)
    return root


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 4-run tiny-preset zoo built as two shard folders (``--shard 0/2`` and ``1/2``, one cohort of two
    runs each), for ``zoo merge`` (read-only: copy them to edit them)."""
    from zooprobe import ZooConfig, build_zoo

    root = tmp_path_factory.mktemp("shards")
    for k in range(2):
        cfg = ZooConfig(preset="tiny", n_models=4, cohort_size=2)
        report = build_zoo(cfg, root / f"shard{k}", shard=f"{k}/2", progress=False)
        assert not report.finalized
    return root / "shard0", root / "shard1"


@pytest.fixture
def flat_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``zoo import-flat`` inputs: ``w.npy`` (1100 checkpoints of 550 runs, 100 kB of random float32 that do
    not compress: two import parts of whole runs), ``layout.json`` and ``meta.csv``."""
    import numpy as np

    from files import WIDTH, json_layout, metadata_rows, write_csv

    root = tmp_path / "inputs"
    root.mkdir()
    rows = [{**row, "test_accuracy": 0.3 + i / 4000} for i, row in enumerate(metadata_rows(550))]
    np.save(root / "w.npy", np.random.default_rng(0).normal(size=(len(rows), WIDTH)).astype(np.float32))
    return root / "w.npy", json_layout(root / "layout.json"), write_csv(root / "meta.csv", rows)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``small_disk(kib)``: a real file system of `kib` KiB (a tmpfs mounted in the test's folder, unmounted
    afterwards), so a write really meets ``No space left on device``. Skipped, with the reason, where the test
    cannot mount one (not root, no tmpfs, a container without the capability)."""
    mounted: list[Path] = []

    def make(kib: int) -> Path:
        disk = tmp_path / f"disk{len(mounted)}"
        disk.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", str(disk)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({(r.stderr or r.stdout).strip()})")
        mounted.append(disk)
        return disk

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield make
    finally:
        for disk in mounted:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)
