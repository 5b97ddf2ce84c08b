"""Fixtures of the hostile-input tests; the helpers (`run_cli`, `snapshot`, ...) are in `harness.py`."""

from __future__ import annotations

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
