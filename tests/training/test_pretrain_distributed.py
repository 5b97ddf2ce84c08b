"""Encoder pretraining under torchrun (neuron and token encoders): 2 CPU processes (gloo) match 1; runs resume
across world sizes."""

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


# One torchrun launch (2 gloo processes) runs two CLI pretrainings: a full one, then one that finishes a run a
# single process started and interrupted after epoch 1.
_NEURON_DRIVER = """
import json
import sys

from zooprobe.cli import main

sys.exit(max(main(args) for args in json.loads(sys.argv[1])))
"""


@pytest.mark.e2e
def test_two_processes_match_one_and_resume_across_world_sizes(head_zoo: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    subprocess.run([sys.executable, *_command(head_zoo, single)], check=True, env=_env(), capture_output=True)

    # a single-process run interrupted after epoch 1 (finished by 2 processes below)
    class Killed(Exception):
        pass

    def kill_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise Killed

    mixed = tmp_path / "mixed"
    cfg = PretrainConfig(architecture="neurons", preset="tiny", epochs=3)
    with pytest.raises(Killed):
        pretrain_encoder(cfg, head_zoo, mixed, progress=False, on_epoch_end=kill_after_first)

    ddp = tmp_path / "ddp"
    driver = tmp_path / "driver.py"
    driver.write_text(_NEURON_DRIVER)
    runs = json.dumps([_command(head_zoo, ddp)[2:], _command(head_zoo, mixed)[2:]])  # without "-m zooprobe"
    run = subprocess.run(
        [*TORCHRUN, str(driver), runs], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("encoder written to") == 2  # only rank 0 prints, once a run
    one, two = load_encoder(single), load_encoder(ddp)
    assert one.provenance["world_size"] == 1 and two.provenance["world_size"] == 2
    _assert_same_training(_history(single), _history(ddp))
    zoo = load_zoo(head_zoo)
    diff = (one.encode(zoo) - two.encode(zoo)).abs().max().item()
    assert diff < 1e-3, diff
    _assert_same_training(_history(single), _history(mixed))
    assert load_encoder(mixed).finished


# ------------------------------------------------------------------------------------------ token encoder
# One torchrun launch (2 gloo processes) runs both: the CLI's full run, then a run interrupted after epoch 1
# (both ranks raise in the callback) that a single process finishes afterwards.
_TOKEN_DRIVER = """
import sys

from zooprobe.api import pretrain_encoder
from zooprobe.cli import main
from zooprobe.training.pretrain import PretrainConfig

zoo, full, killed, *options = sys.argv[1:]
rc = main(["encoder", "pretrain", "--zoo", zoo, "--output", full, "--progress", "false", *options])


class Killed(Exception):
    pass


def kill_after_first(epoch, record):
    if epoch == 1:
        raise Killed


try:
    cfg = PretrainConfig(preset="tiny", epochs=3, batch_size=11, dropout=0.0)
    pretrain_encoder(cfg, zoo, killed, progress=False, on_epoch_end=kill_after_first)
except Killed:
    pass
sys.exit(rc)
"""


def _files(folder: Path) -> set[str]:
    return {
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "tensorboard" not in p.parts
    }


def _assert_same_token_training(a: list[dict], b: list[dict]) -> None:
    assert [(r["epoch"], r["step"]) for r in a] == [(r["epoch"], r["step"]) for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ra:
            if key.startswith(("train_", "val_")):
                assert rb[key] == pytest.approx(ra[key], rel=1e-4), (key, ra, rb)


@pytest.mark.e2e
def test_token_encoder_two_processes_match_one_and_resume_with_one(tiny_zoo: Path, tmp_path: Path) -> None:
    # 12 train models, batch size 11: the ranks compute 6 + 5 models, then 1 + 0 (rank 1 has none); views,
    # crops, noise, erasing and masks are drawn for the whole batch on every rank; dropout 0
    from safetensors.torch import load_file

    from zooprobe.training.pretrain import training_history

    cfg = PretrainConfig(preset="tiny", epochs=3, batch_size=11, dropout=0.0)
    single = pretrain_encoder(cfg, tiny_zoo, tmp_path / "single", progress=False)
    driver = tmp_path / "driver.py"
    driver.write_text(_TOKEN_DRIVER)
    ddp, killed = tmp_path / "ddp", tmp_path / "killed"
    options = ["--preset", "tiny", "--epochs", "3", "--batch_size", "11", "--dropout", "0"]
    run = subprocess.run(
        [*TORCHRUN, str(driver), str(tiny_zoo), str(ddp), str(killed), *options],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    # only rank 0 printed and wrote: one report, one log line per epoch, one TensorBoard event file
    assert run.stdout.count("encoder written to") == 1
    assert (ddp / "train.log").read_text().count("pretrain epoch 1/3") == 1
    assert len(list((ddp / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert _files(ddp) == _files(single)
    one, two = load_encoder(single), load_encoder(ddp)
    assert one.provenance["world_size"] == 1 and two.provenance["world_size"] == 2
    _assert_same_token_training(training_history(single), training_history(ddp))
    wa, wb = load_file(str(single / "model.safetensors")), load_file(str(ddp / "model.safetensors"))
    assert wa.keys() == wb.keys()
    # relative difference of all weights (measured 4e-5; most of it is the attention key bias, whose
    # gradient is zero in exact arithmetic, so AdamW turns float noise into steps of up to the lr)
    change = sum(float(((wa[k] - wb[k]) ** 2).sum()) for k in wa) ** 0.5
    assert change / sum(float((wa[k] ** 2).sum()) for k in wa) ** 0.5 < 1e-3
    zoo = load_zoo(tiny_zoo)
    assert (one.encode(zoo) - two.encode(zoo)).abs().max().item() < 1e-3

    # the 2-process run stopped after epoch 1; one process continues it to the end
    assert [r["epoch"] for r in training_history(killed)] == [1]
    pretrain_encoder(cfg, tiny_zoo, killed, progress=False)
    _assert_same_token_training(training_history(single), training_history(killed))
    assert load_encoder(killed).finished
