"""kill -9 and Ctrl-C (issue 28): resume gives the identical result, and nothing half-written looks complete.

The kill is real: a small driver (`harness.signalled_after`) runs the command line in a subprocess with one of
zooprobe's write steps wrapped so that the process signals itself right after that step (``SIGKILL``: no
handler, no cleanup; ``SIGINT``: what Ctrl-C sends). Train and pretrain get a real ``SIGINT`` in this process
(the signal is raised from inside an epoch), which is what the command line sees from a terminal.

A user expects: after kill -9, running the same command again finishes the work and gives exactly what an
uninterrupted run gives; after Ctrl-C, one line saying it was interrupted, exit code 130, no traceback, and
no output that looks finished (no zoo manifest, no ``metrics.json``, an encoder marked unfinished).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from harness import run_cli, signalled_after

from zooprobe.api import load_zoo
from zooprobe.zoo.store import MANIFEST

INTERRUPTED = "zooprobe: interrupted; finished work is saved, run the same command again to resume"


@pytest.fixture(autouse=True)
def _ctrl_c_is_delivered() -> Any:
    """SIGINT raises KeyboardInterrupt in this process, as in a terminal's foreground process. A test run
    started in the background by a shell without job control (``cmd &``, CI runners) inherits SIGINT
    ignored, and the signal would then be dropped, not delivered: the runs would finish with exit 0."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _hashes(root: Path) -> list[tuple[str, str]]:
    zoo = load_zoo(root)
    ids = zoo.metadata()["model_id"].astype(str).tolist()
    return sorted((ids[i], zoo.content_hash(i)) for i in range(len(zoo)))


def test_kill_9_during_zoo_build_then_resume_is_identical(tiny_zoo: Path, tmp_path: Path) -> None:
    """``zoo build`` killed (SIGKILL) right after its first cohort part is written: no manifest (nothing
    looks finished), and the same command again resumes and writes a zoo identical, model for model, to an
    uninterrupted build (the session's tiny zoo)."""
    out = tmp_path / "zoo"
    args = ("zoo", "build", "--preset", "tiny", "--output", out, "--progress", "false")
    killed = signalled_after("zooprobe.zoo.build:_write_part", 1, signal.SIGKILL, *args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / MANIFEST).exists()
    assert len(list((out / ".parts").glob("cohort-*.parquet"))) >= 1
    r = run_cli(*args)
    assert r.code == 0 and not r.traceback, r.err
    assert (out / MANIFEST).is_file() and not (out / ".parts").exists()
    assert _hashes(out) == _hashes(tiny_zoo)


def test_ctrl_c_during_zoo_build_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """Ctrl-C (a real SIGINT) during ``zoo build``: one line, exit code 130, no traceback, no manifest."""
    out = tmp_path / "zoo"
    args = ("zoo", "build", "--preset", "tiny", "--output", out, "--progress", "false")
    r = signalled_after("zooprobe.zoo.build:_write_part", 1, signal.SIGINT, *args)
    assert r.returncode == 130, r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("zooprobe:")] == [INTERRUPTED], r.stderr
    assert not (out / MANIFEST).exists()


def _sigint(*args: Any, **kwargs: Any) -> None:
    signal.raise_signal(signal.SIGINT)


def test_ctrl_c_during_train_is_one_line_and_leaves_no_metrics(
    head_zoo: Path, head_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during ``zooprobe train`` (SIGINT after the first epoch's checkpoint): exit 130, one line,
    and no ``metrics.json``, so the run does not look finished (predict and report refuse it)."""
    from zooprobe.training import trainer

    real = trainer.save_head

    def save_then_interrupt(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        _sigint()
        return out

    monkeypatch.setattr(trainer, "save_head", save_then_interrupt)
    run = tmp_path / "run"
    r = run_cli("train", "--task", "accuracy", "--zoo", head_zoo, "--encoder", head_encoder, "--output", run,
                "--optim.epochs", "3", "--progress", "false")  # fmt: skip
    assert r.code == 130 and not r.traceback, r.err
    assert [ln for ln in r.err.splitlines() if ln.startswith("zooprobe:")] == [INTERRUPTED], r.err
    assert not (run / "metrics.json").exists()


def test_ctrl_c_during_pretrain_marks_the_encoder_unfinished(
    head_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during ``encoder pretrain`` (SIGINT after the first epoch): exit 130, one line, and the
    folder's config says ``finished: false`` (it does not pass for a finished encoder)."""
    from zooprobe.training import loop as pretrain  # the one pretraining engine writes the state

    real = pretrain.save_state

    def save_then_interrupt(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        _sigint()
        return out

    monkeypatch.setattr(pretrain, "save_state", save_then_interrupt)
    out = tmp_path / "enc"
    r = run_cli("encoder", "pretrain", "--zoo", head_zoo, "--output", out, "--preset", "tiny",
                "--epochs", "3", "--progress", "false")  # fmt: skip
    assert r.code == 130 and not r.traceback, r.err
    assert [ln for ln in r.err.splitlines() if ln.startswith("zooprobe:")] == [INTERRUPTED], r.err
    config = out / "config.json"
    assert not config.exists() or json.loads(config.read_text())["provenance"]["finished"] is False
