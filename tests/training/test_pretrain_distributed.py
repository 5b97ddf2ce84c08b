"""Encoder pretraining under torchrun: 2 CPU processes (gloo) match 1; runs resume across world sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zooprobe.api import load_encoder, load_zoo, pretrain_encoder
from zooprobe.training.pretrain import PretrainConfig

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _command(zoo: Path, out: Path) -> list[str]:
    # tiny preset: dropout 0; batch size 8 split 4 + 4 over the two ranks; weight noise on (each rank draws
    # the whole batch's noise, so it equals the single process's)
    return [
        "-m",
        "zooprobe",
        "encoder",
        "pretrain",
        "--architecture",
        "neurons",
        "--preset",
        "tiny",
        "--epochs",
        "3",
        "--zoo",
        str(zoo),
        "--output",
        str(out),
        "--progress",
        "false",
    ]


def _history(folder: Path) -> list[dict]:
    return json.loads((folder / "config.json").read_text())["provenance"]["history"]


def _assert_same_training(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] and [r["step"] for r in a] == [
        r["step"] for r in b
    ]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4), (key, ra, rb)


def test_two_processes_match_one_and_resume_across_world_sizes(head_zoo: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    subprocess.run([sys.executable, *_command(head_zoo, single)], check=True, env=_env(), capture_output=True)
    ddp = tmp_path / "ddp"
    run = subprocess.run(
        [*TORCHRUN, *_command(head_zoo, ddp)], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("encoder written to") == 1  # only rank 0 prints
    one, two = load_encoder(single), load_encoder(ddp)
    assert one.provenance["world_size"] == 1 and two.provenance["world_size"] == 2
    _assert_same_training(_history(single), _history(ddp))
    zoo = load_zoo(head_zoo)
    diff = (one.encode(zoo) - two.encode(zoo)).abs().max().item()
    assert diff < 1e-3, diff

    # a single-process run interrupted after epoch 1, finished by 2 processes
    class Killed(Exception):
        pass

    def kill_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise Killed

    mixed = tmp_path / "mixed"
    cfg = PretrainConfig(architecture="neurons", preset="tiny", epochs=3)
    with pytest.raises(Killed):
        pretrain_encoder(cfg, head_zoo, mixed, progress=False, on_epoch_end=kill_after_first)
    run = subprocess.run(
        [*TORCHRUN, *_command(head_zoo, mixed)], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    _assert_same_training(_history(single), _history(mixed))
    assert load_encoder(mixed).finished
