"""Fixtures of the hostile-input tests; the helpers (`run_cli`, `snapshot`, ...) are in `harness.py`."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import CliResult, assert_unchanged, run_cli, run_subprocess, snapshot


@pytest.fixture(scope="session")
def run_dir(head_zoo: Path, head_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder of a small accuracy head (one epoch: predictions need not be good here);
    shared by every hostile-input test that needs ``zooprobe predict`` (read-only: copy it to edit it)."""
    from zooprobe.api import load_encoder, train
    from zooprobe.heads.prediction_heads import HeadConfig
    from zooprobe.training.config import OptimConfig, TrainConfig

    root = tmp_path_factory.mktemp("adversarial-runs")
    cfg = TrainConfig(
        task="accuracy",
        zoo=str(head_zoo),
        encoder=str(head_encoder),
        head=HeadConfig(hidden_sizes=[16], branch_hidden=8),
        optim=OptimConfig(epochs=1, batch_size=8, lr=3e-3),
    )
    train(cfg, root / "acc", progress=False, encoder=load_encoder(head_encoder))
    return root / "acc"


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
