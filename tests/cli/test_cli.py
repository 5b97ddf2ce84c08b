"""The command line as a user runs it: real subprocesses, exit codes, messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zooprobe", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_build_summary_and_print_config(tmp_path: Path) -> None:
    out = tmp_path / "zoo"
    r = _run(
        "zoo", "build", "--preset", "tiny", "--n_models", "4", "--output", str(out), "--progress", "false"
    )
    assert r.returncode == 0, r.stderr
    assert "zoo written to" in r.stdout and "test accuracy quantiles" in r.stdout
    r = _run("zoo", "summary", str(out))
    assert r.returncode == 0 and "4 trained models" in r.stdout
    r = _run("zoo", "build", "--preset", "tiny", "--n_models", "4", "--output", str(out), "--print_config")
    cfg = yaml.safe_load(r.stdout)
    assert cfg["preset"] == "tiny" and cfg["n_models"] == 4
    (tmp_path / "c.yaml").write_text(r.stdout)
    r = _run("zoo", "build", "--config", str(tmp_path / "c.yaml"), "--progress", "false")
    assert r.returncode == 0 and "already done" in r.stdout  # same config, same folder: nothing to redo


def test_user_errors_exit_2_with_a_message(tmp_path: Path) -> None:
    r = _run("zoo", "summary", str(tmp_path / "nope"))
    assert r.returncode == 2 and "no such folder" in r.stderr and "Traceback" not in r.stderr
    r = _run("zoo", "build", "--preset", "tiny", "--optimizers", "[lbfgs]", "--output", str(tmp_path / "x"))
    assert r.returncode == 2 and "lbfgs" in r.stderr


def test_import_folder_skips_bad_rows_and_says_why(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    for i in range(3):
        save_file({"fc.weight": torch.randn(2, 3), "fc.bias": torch.randn(2)}, ckpts / f"m{i}.safetensors")
    (ckpts / "m3.safetensors").write_bytes(b"not a checkpoint")
    (tmp_path / "meta.csv").write_text(
        "file,test_accuracy,optimizer\nm0.safetensors,0.5,adam\nm1.safetensors,0.7,sgd\n"
        "m2.safetensors,0.9,adam\nm3.safetensors,0.1,sgd\n"
    )
    args = ["zoo", "import-folder", str(ckpts), "--metadata", str(tmp_path / "meta.csv")]
    r = _run(*args, "--output", str(tmp_path / "zoo"))
    assert r.returncode == 2 and "m3.safetensors" in r.stderr
    assert not (tmp_path / "zoo").exists()  # nothing half-written
    r = _run(*args, "--output", str(tmp_path / "zoo"), "--skip_invalid", "true")
    assert r.returncode == 0, r.stderr
    assert "Imported 3 checkpoint(s)" in r.stdout and "Skipped 1" in r.stdout and "m3.safetensors" in r.stdout
    r = _run("zoo", "summary", str(tmp_path / "zoo"))
    assert r.returncode == 0 and "3 trained models" in r.stdout
