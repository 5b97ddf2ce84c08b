"""Head training end to end: run folders, resume after SIGKILL, torchrun (2 processes), CLI, overlap."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from zooprobe.api import load_encoder, load_head, load_zoo, train
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.heads.head_loader import HeadFormatError
from zooprobe.heads.integrity import HeadModifiedError
from zooprobe.training.config import OptimConfig, StopConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _cfg(head_zoo: Path, head_encoder: Path, **kwargs: object) -> TrainConfig:
    optim = kwargs.pop("optim", OptimConfig(epochs=12, batch_size=8, lr=3e-3))
    stop = kwargs.pop("stop", StopConfig(patience=6))
    return TrainConfig(zoo=str(head_zoo), encoder=str(head_encoder), optim=optim, stop=stop, **kwargs)  # type: ignore[arg-type]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _tb_tags(folder: Path) -> set[str]:
    """Scalar tags in tensorboardX event files (TFRecord framing: length, crc, event proto, crc)."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            tags.update(v.tag for v in event.summary.value)
            pos += 12 + length + 4
    return tags


def test_frozen_patterns_run_folder_and_reloaded_head(
    head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = train(_cfg(head_zoo, head_encoder, task="patterns"), out, progress=False)
    # architecture flags that shape the weights are read off perfectly (test split, never trained on)
    assert result.test["roc_auc/has_conv_layers"] == 1.0
    assert result.test["roc_auc/has_batch_norm"] == 1.0
    for name in (
        "config.yaml",
        "metrics.json",
        "head/config.json",
        "head/model.safetensors",
        "predictions/test.json",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_models"] == {"train": 38, "validation": 17, "test": 9}
    assert metrics["overlap"]["checked"] and metrics["overlap"]["model_ids"] == []
    assert metrics["best_epoch"] == result.best_epoch
    assert metrics["test"]["macro_roc_auc"] == pytest.approx(result.test["macro_roc_auc"])
    tags = _tb_tags(out / "tensorboard")
    assert {"train/loss", "validation/loss", "validation/macro_f1", "lr/head", "lr/head_no_decay"} <= tags
    assert "train/loss/has_conv_layers" in tags

    # the saved head, loaded in a fresh object, reproduces the stored test predictions exactly
    head = load_head(out)
    zoo = load_zoo(head_zoo).final().split("test")
    preds = head.predict(zoo.state_dicts())
    stored = json.loads((out / "predictions" / "test.json").read_text())
    for name in head.spec.names:
        np.testing.assert_allclose(preds[name], stored["targets"][name]["predicted"], rtol=1e-6, atol=1e-7)


def test_saved_config_replays_the_run_in_a_fresh_process(
    head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    """`zooprobe train --config RUN/config.yaml` in a new process reproduces the run's metrics."""
    first = tmp_path / "first"
    cfg = _cfg(head_zoo, head_encoder, task="accuracy", optim=OptimConfig(epochs=3, batch_size=8))
    train(cfg, first, progress=False)
    replay = tmp_path / "replay"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "zooprobe",
            "train",
            "--config",
            str(first / "config.yaml"),
            "--output",
            str(replay),
            "--progress",
            "false",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((replay / "config.yaml").read_text()) == yaml.safe_load(
        (first / "config.yaml").read_text()
    )
    a, b = (json.loads((run / "metrics.json").read_text()) for run in (first, replay))
    assert a["best_epoch"] == b["best_epoch"] and a["epochs_run"] == b["epochs_run"]
    for split in ("validation", "test"):
        assert a[split] == pytest.approx(b[split], rel=1e-6, abs=1e-9, nan_ok=True), split


def test_all_three_heads_frozen_and_finetuned(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    optim = OptimConfig(epochs=4, batch_size=8, lr=3e-3)
    hp = train(
        _cfg(head_zoo, head_encoder, task="hyperparameters", optim=optim), tmp_path / "hp", progress=False
    )
    assert hp.test["family/accuracy"] == 1.0  # MLP vs CNN from weights
    assert "learning_rate/r2" in hp.test and "optimizer/macro_f1" in hp.test and "score" in hp.test
    ft = train(
        _cfg(head_zoo, head_encoder, task="accuracy", mode="finetune", augment=True, optim=optim),
        tmp_path / "ft",
        progress=False,
    )
    assert np.isfinite(ft.test["mae"]) and ft.test["mae"] < 0.5
    tensors = load_head(tmp_path / "ft").model.trainable_state_dict()
    base = load_encoder(head_encoder).encoder.state_dict()
    # the fine-tuned encoder's weights travel with the head and differ from the base encoder's
    assert not torch.equal(tensors["encoder.token_embed.weight"], base["token_embed.weight"])


def test_early_stopping_counts_evaluations_and_plateau_lowers_lr(
    head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    cfg = _cfg(
        head_zoo,
        head_encoder,
        optim=OptimConfig(epochs=50, batch_size=8, lr=1e-4, plateau_patience=0, min_lr_ratio=1e-3),
        stop=StopConfig(patience=3, eval_every=2, min_delta=1.0),
    )
    result = train(cfg, tmp_path / "run", progress=False)
    evals = [h for h in result.history if "validation" in h]
    # one first best, then 3 evaluations without a 1.0 improvement; evaluations every 2 epochs
    assert len(evals) == 4 and result.epochs_run == 8
    lrs = [h["lr"]["head"] for h in evals]
    assert lrs[-1] < lrs[0]  # reduced on plateau


def test_bad_monitor_is_a_clear_error(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a validation metric"):
        train(
            _cfg(head_zoo, head_encoder, stop=StopConfig(monitor="accuracyy")), tmp_path / "r", progress=False
        )


def test_changed_config_refuses_to_resume(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    train(
        _cfg(head_zoo, head_encoder, optim=OptimConfig(epochs=1, batch_size=8)),
        tmp_path / "r",
        progress=False,
    )
    with pytest.raises(ConfigError, match="different configuration"):
        train(
            _cfg(head_zoo, head_encoder, optim=OptimConfig(epochs=2, batch_size=8)),
            tmp_path / "r",
            progress=False,
        )


def test_overlap_with_pretraining_models_is_refused_or_marked(
    head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    enc = load_encoder(head_encoder)
    test_zoo = load_zoo(head_zoo).final().split("test")
    leaked = test_zoo.content_hash(0)
    enc.provenance["model_hashes"] = [*enc.provenance["model_hashes"], leaked]
    cfg = _cfg(head_zoo, head_encoder, optim=OptimConfig(epochs=1, batch_size=8))
    with pytest.raises(InvalidInputError, match="used to pretrain the encoder"):
        train(cfg, tmp_path / "refused", encoder=enc, progress=False)
    cfg.allow_overlap = True
    with pytest.warns(UserWarning, match="marked"):
        train(cfg, tmp_path / "marked", encoder=enc, progress=False)
    overlap = json.loads((tmp_path / "marked" / "metrics.json").read_text())["overlap"]
    assert overlap["allowed"] and overlap["model_ids"] == [str(test_zoo.metadata()["model_id"].iloc[0])]


def test_head_loading_is_strict(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_cfg(head_zoo, head_encoder, optim=OptimConfig(epochs=1, batch_size=8)), out, progress=False)
    from safetensors.torch import load_file, save_file

    weights = out / "head" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors.pop(next(iter(tensors)))
    save_file(tensors, str(weights))
    with pytest.raises(HeadModifiedError, match=r"modified after it was saved \(changed: model\.safetensors"):
        load_head(out)  # the content hash sees the edit before anything is read
    with pytest.raises(HeadFormatError, match="does not match"):
        load_head(out, trust=True)
    config = json.loads((out / "head" / "config.json").read_text())
    config["encoder"]["fingerprint"] = "0" * 64
    (out / "head" / "config.json").write_text(json.dumps(config))
    with pytest.raises(HeadFormatError, match="not the one this head was trained with"):
        load_head(out, trust=True)


def _train_command(head_zoo: Path, head_encoder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--task",
        "accuracy",
        "--zoo",
        str(head_zoo),
        "--encoder",
        str(head_encoder),
        "--output",
        str(out),
        "--progress",
        "false",
        "--optim.batch_size",
        "8",
        "--seed",
        "1",
        *extra,
    ]


@pytest.mark.e2e
def test_sigkill_and_resume_gives_the_same_metrics(
    head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    extra = ("--mode", "finetune", "--optim.epochs", "10", "--stop.patience", "20", "--head.dropout", "0.2")
    reference = tmp_path / "reference"
    subprocess.run(
        [sys.executable, "-m", "zooprobe", *_train_command(head_zoo, head_encoder, reference, *extra)],
        check=True,
        env=_env(),
        capture_output=True,
    )
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "zooprobe", *_train_command(head_zoo, head_encoder, killed, *extra)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "checkpoints" / "last.safetensors"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert state.exists() and not (killed / "metrics.json").exists()  # killed mid-run, after >= 1 epoch
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert a["best_epoch"] == b["best_epoch"] and a["epochs_run"] == b["epochs_run"]
    assert a["test"] == b["test"] and a["validation"] == b["validation"]


def test_cli_train_and_evaluate(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    def zooprobe(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "zooprobe", *args], env=_env(), capture_output=True, text=True
        )

    out = tmp_path / "run"
    run = zooprobe(*_train_command(head_zoo, head_encoder, out, "--optim.epochs", "3"))
    assert run.returncode == 0, run.stderr
    assert "test metrics (accuracy, frozen)" in run.stdout and "kendall_tau" in run.stdout
    stored = json.loads((out / "metrics.json").read_text())["test"]
    ev = zooprobe("evaluate", str(out))
    assert ev.returncode == 0, ev.stderr
    assert f"{stored['r2']:.4f}" in ev.stdout  # re-scoring the best checkpoint gives the stored metrics
    bad = zooprobe(*_train_command(head_zoo, head_encoder, tmp_path / "bad", "--optim.lr", "-1"))
    assert bad.returncode == 2 and "optim.lr must be > 0" in bad.stderr


@pytest.mark.e2e
def test_torchrun_two_processes_match_one(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    extra = ("--optim.epochs", "6", "--head.dropout", "0.0", "--stop.patience", "20")
    single = tmp_path / "single"
    subprocess.run(
        [sys.executable, "-m", "zooprobe", *_train_command(head_zoo, head_encoder, single, *extra)],
        check=True,
        env=_env(),
        capture_output=True,
    )
    ddp = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run = subprocess.run(
        [*torchrun, "-m", "zooprobe", *_train_command(head_zoo, head_encoder, ddp, *extra)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((ddp / "metrics.json").read_text())
    assert b["world_size"] == 2 and a["world_size"] == 1
    assert b["n_models"] == a["n_models"]  # gathered predictions: every test model exactly once
    # Equal halves of each batch per rank average to the full-batch gradient: agreement to 1e-4.
    for key in ("loss", "mse", "mae", "r2", "kendall_tau"):
        assert b["test"][key] == pytest.approx(a["test"][key], abs=1e-4), key


def test_head_with_weight_statistics_input(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    from zooprobe.heads.prediction_heads import HeadConfig
    from zooprobe.tokens.statistics import featurize

    out = tmp_path / "run"
    cfg = _cfg(
        head_zoo, head_encoder, head=HeadConfig(statistics=True), optim=OptimConfig(epochs=3, batch_size=8)
    )
    train(cfg, out, progress=False)
    head = load_head(out)
    from zooprobe.symmetry import canonical_state_dicts

    train_feats = featurize(canonical_state_dicts(load_zoo(head_zoo).final().split("train").state_dicts()))
    # the standardization of the statistics was fitted on the train split and travels with the head
    np.testing.assert_allclose(head.model.head.stats_mean.numpy(), train_feats.mean(0), rtol=1e-5, atol=1e-6)
    test_zoo = load_zoo(head_zoo).final().split("test")
    stored = json.loads((out / "predictions" / "test.json").read_text())["targets"]["test_accuracy"][
        "predicted"
    ]
    np.testing.assert_allclose(
        head.predict(test_zoo.state_dicts())["test_accuracy"], stored, rtol=1e-5, atol=1e-6
    )
