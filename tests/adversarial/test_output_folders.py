"""Output folders: zooprobe never deletes or overwrites a user's files, validates before it writes, and
cleans up only its own leftovers (`zooprobe.core.outputs`)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from harness import assert_unchanged, run_cli, snapshot

from zooprobe.core.outputs import MARKER

TINY = ("--preset", "tiny", "--n_models", "4", "--progress", "false")


def _train_args(zoo: Path, encoder: Path, output: Path, *extra: str) -> list[str | Path]:
    return [
        "train",
        "--task",
        "accuracy",
        "--zoo",
        zoo,
        "--encoder",
        encoder,
        "--output",
        output,
        "--optim.epochs",
        "1",
        "--progress",
        "false",
        *extra,
    ]


# ------------------------------------------------------------------------------------------ zoo folders
def test_zoo_build_refuses_a_users_folder_even_with_overwrite(user_folder: Path) -> None:
    before = snapshot(user_folder)
    for extra in ((), ("--overwrite", "true")):
        r = run_cli("zoo", "build", *TINY, "--output", user_folder, *extra)
        r.assert_clear_error("not written by zooprobe", "README.md", "choose another --output")
        assert_unchanged(before, user_folder)


def test_zoo_merge_refuses_a_users_folder(tmp_path: Path, user_folder: Path) -> None:
    shards = [tmp_path / "shard0", tmp_path / "shard1"]
    for i, shard in enumerate(shards):  # 8 models in cohorts of 4: one cohort per shard
        args = ("--preset", "tiny", "--n_models", "8", "--progress", "false", "--shard", f"{i}/2")
        assert run_cli("zoo", "build", *args, "--output", shard).code == 0
    before, shards_before = snapshot(user_folder), snapshot(tmp_path / "shard0")
    r = run_cli("zoo", "merge", "--output", user_folder, f'["{shards[0]}", "{shards[1]}"]')
    r.assert_clear_error("not written by zooprobe", "data/train.csv")
    assert_unchanged(before, user_folder)
    assert_unchanged(shards_before, shards[0])
    r = run_cli("zoo", "merge", "--output", tmp_path / "merged", f'["{shards[0]}"]')
    r.assert_clear_error("in none of the shard folders", "build the missing shards")
    assert not (tmp_path / "merged").exists()


def test_zoo_overwrite_names_foreign_files_and_keeps_them(tmp_path: Path) -> None:
    out = tmp_path / "zoo"
    assert run_cli("zoo", "build", *TINY, "--output", out).code == 0
    (out / "data" / "my_notes.txt").write_text("mine\n")
    before = snapshot(out)
    r = run_cli("zoo", "build", *TINY, "--output", out, "--overwrite", "true")
    r.assert_clear_error("files it did not write", "data/my_notes.txt")
    assert_unchanged(before, out)
    (out / "data" / "my_notes.txt").unlink()
    r = run_cli("zoo", "build", *TINY, "--output", out, "--overwrite", "true")
    assert r.code == 0, r.err
    assert (out / MARKER).is_file() and (out / "zooprobe_manifest.json").is_file()


def test_output_that_is_a_file_or_under_a_file(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep me\n")
    r = run_cli("zoo", "build", *TINY, "--output", target)
    r.assert_clear_error("exists and is a file")
    r = run_cli("zoo", "build", *TINY, "--output", target / "zoo")
    r.assert_clear_error("is a file, so the folder cannot be created")
    assert target.read_text() == "keep me\n"


def test_unwritable_output_is_refused_before_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    r = run_cli("zoo", "build", *TINY, "--output", locked / "zoo")
    r.assert_clear_error("cannot write into", "permission denied")
    assert not any(locked.iterdir())


def test_interrupted_zoo_write_is_finished_not_looped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill after the manifest is written but before the writing marker is removed leaves both: the next
    build finishes the zoo (it neither says "written" while `load_zoo` says "interrupted", nor loops)."""
    from zooprobe.zoo import build as build_module
    from zooprobe.zoo.store import MANIFEST, WRITING

    out = tmp_path / "zoo"
    real_finish = build_module.finish_zoo_write

    def killed(root: Path, *args: object, **kwargs: object) -> None:
        real_finish(root, *args, **kwargs)  # type: ignore[arg-type]
        (Path(root) / WRITING).touch()  # the marker is still there, as after a kill
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "finish_zoo_write", killed)
    assert run_cli("zoo", "build", *TINY, "--output", out).code == 130
    assert (out / WRITING).exists() and (out / MANIFEST).exists()
    r = run_cli("zoo", "summary", out)
    r.assert_clear_error("interrupted", "run the command that wrote it again")
    monkeypatch.setattr(build_module, "finish_zoo_write", real_finish)
    r = run_cli("zoo", "build", *TINY, "--output", out)
    assert r.code == 0 and "zoo written to" in r.out, r.err
    assert not (out / WRITING).exists() and not (out / ".parts").exists()
    assert run_cli("zoo", "summary", out).code == 0


def test_rerun_removes_own_leftovers_only(tmp_path: Path) -> None:
    out = tmp_path / "zoo"
    assert run_cli("zoo", "build", *TINY, "--output", out).code == 0
    (out / ".parts").mkdir()  # a kill after the zoo was written, before its parts folder was removed
    (out / ".zooprobe_manifest.json.x1y2z3.tmp").write_text("{")  # an atomic write cut short
    (out / "notes.txt").write_text("mine\n")
    r = run_cli("zoo", "build", *TINY, "--output", out)
    assert r.code == 0, r.err
    assert not (out / ".parts").exists() and not (out / ".zooprobe_manifest.json.x1y2z3.tmp").exists()
    assert (out / "notes.txt").read_text() == "mine\n"


# ------------------------------------------------------------------------------------------ run folders
def test_train_refuses_a_users_folder(head_zoo: Path, head_encoder: Path, user_folder: Path) -> None:
    (user_folder / "config.yaml").unlink()  # "a folder without config.yaml overwrote the user's metrics.json"
    before = snapshot(user_folder)
    for extra in ((), ("--overwrite", "true")):
        r = run_cli(*_train_args(head_zoo, head_encoder, user_folder, *extra))
        r.assert_clear_error("not written by zooprobe", "metrics.json")
        assert_unchanged(before, user_folder)


def test_train_overwrite_keeps_a_users_checkpoint(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_cli(*_train_args(head_zoo, head_encoder, run)).code == 0
    (run / "checkpoints" / "my_model_epoch50.pt").write_bytes(b"precious" * 64)
    before = snapshot(run)
    r = run_cli(*_train_args(head_zoo, head_encoder, run, "--overwrite", "true"))
    r.assert_clear_error("files it did not write", "checkpoints/my_model_epoch50.pt")
    assert_unchanged(before, run)


def test_validation_happens_before_any_write(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = run_cli(*_train_args(tmp_path / "no-such-zoo", head_encoder, run))
    r.assert_clear_error("no such folder")
    assert not run.exists()
    r = run_cli(*_train_args(head_zoo, head_encoder, run, "--stop.patience", "0"))
    r.assert_clear_error("stop.patience")
    assert not run.exists()
    r = run_cli(*_train_args(head_zoo, head_encoder, run))  # the corrected command is not refused
    assert r.code == 0, r.err
    assert (run / MARKER).is_file() and (run / "metrics.json").is_file()


def test_non_finite_loss_stops_with_the_epoch_and_keeps_the_last_state(
    head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    args = _train_args(head_zoo, head_encoder, run, "--optim.lr", "1e30", "--optim.grad_clip", "0")
    r = run_cli(*[a if a != "1" else "3" for a in args])  # 3 epochs
    r.assert_clear_error("training stopped", "non-finite", "epoch", "--optim.lr", "--overwrite true")
    assert len(r.error_lines) == 1
    assert (run / "config.yaml").is_file()
    state = run / "checkpoints" / "last.safetensors"
    if "no epoch finished" not in r.err:
        assert state.is_file()


def test_run_leftovers_are_removed_on_resume(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_cli(*_train_args(head_zoo, head_encoder, run)).code == 0
    empty_events = run / "tensorboard" / "events.out.tfevents.1.killed"
    empty_events.write_bytes(b"")  # a writer killed before its first flush
    (run / ".metrics.json.abc123.tmp").write_text("{")
    assert run_cli(*_train_args(head_zoo, head_encoder, run)).code == 0
    assert not empty_events.exists() and not (run / ".metrics.json.abc123.tmp").exists()


# ------------------------------------------------------------------------------------------ encoder folders
def test_pretrain_refuses_a_users_folder(head_zoo: Path, user_folder: Path) -> None:
    before = snapshot(user_folder)
    r = run_cli(
        "encoder",
        "pretrain",
        "--preset",
        "tiny",
        "--zoo",
        head_zoo,
        "--output",
        user_folder,
        "--progress",
        "false",
    )
    r.assert_clear_error("not written by zooprobe", "config.json")
    assert_unchanged(before, user_folder)


def test_interrupted_pretraining_is_marked_and_train_warns(
    head_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zooprobe.api import load_encoder, pretrain_encoder
    from zooprobe.encoder.encoder_loader import UnfinishedEncoderWarning
    from zooprobe.training.pretrain import PretrainConfig

    out = tmp_path / "enc"
    cfg = PretrainConfig(preset="tiny", summary_tokens=False, epochs=2)

    def stop(epoch: int, record: dict) -> None:
        raise KeyboardInterrupt  # killed after the first epoch

    with pytest.raises(KeyboardInterrupt):
        pretrain_encoder(cfg, head_zoo, out, progress=False, on_epoch_end=stop)
    config = json.loads((out / "config.json").read_text())
    assert config["provenance"]["finished"] is False
    with pytest.warns(UnfinishedEncoderWarning, match="interrupted"):
        assert load_encoder(out).finished is False
    run = tmp_path / "run"
    with pytest.warns(UnfinishedEncoderWarning):
        r = run_cli(*_train_args(head_zoo, out, run))
    assert r.code == 0, r.err
    assert json.loads((run / "metrics.json").read_text())["encoder_finished"] is False

    pretrain_encoder(cfg, head_zoo, out, progress=False)  # finishes the run
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnfinishedEncoderWarning)
        assert load_encoder(out).finished is True


def test_report_refuses_a_users_folder(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_cli(*_train_args(head_zoo, head_encoder, run)).code == 0
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html>my homepage</html>\n")
    before = snapshot(site)
    r = run_cli("report", run, "--output", site)
    r.assert_clear_error("not written by zooprobe", "index.html")
    assert_unchanged(before, site)
    assert run_cli("report", run).code == 0  # the default location inside the run folder is its own
    assert run_cli("report", run).code == 0  # and it can be written again
    shutil.rmtree(run / "report")
