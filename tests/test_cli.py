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
