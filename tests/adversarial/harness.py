"""Helpers for the tests of hostile and malformed inputs, as a new user would give them.

Every case asserts three things:

1. the clear error: one line (``zooprobe: error: ...``) that says what is wrong and what to do;
2. the exit code: 2 for every error a user can cause, never a traceback;
3. nothing lost: the user's files are byte-identical afterwards (`snapshot` before, `assert_unchanged` after).

`run_cli` runs the command line in this process (``zooprobe.cli.main``), which is what ``python -m zooprobe``
runs, so each case costs no interpreter start-up. An exception escaping ``main`` is what a user would see as
a traceback: it is caught and reported as ``traceback=True`` with exit code 1, so a test can assert
``r.traceback is False`` rather than crash. Cases that need a real process (a hang, a kill) use
`run_subprocess`.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    code: int
    out: str
    err: str
    traceback: bool = False

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.startswith("zooprobe: error:")]

    def assert_clear_error(self, *fragments: str) -> None:
        """Exit code 2, no traceback, one ``zooprobe: error:`` line (or an argument error) naming each
        fragment (case-insensitive)."""
        assert not self.traceback, f"traceback instead of a message:\n{self.err}"
        assert self.code == 2, f"exit code {self.code}, expected 2\nstdout: {self.out}\nstderr: {self.err}"
        assert "Traceback" not in self.err, self.err
        text = self.err.lower()
        for fragment in fragments:
            assert fragment.lower() in text, f"{fragment!r} not in the error:\n{self.err}"


def run_cli(*args: str | Path) -> CliResult:
    """Run ``zooprobe ARGS`` in this process; exit code, stdout, stderr, and whether it crashed."""
    from zooprobe.cli import main

    out, err = io.StringIO(), io.StringIO()
    code, crashed = 0, False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argument errors (jsonargparse) exit with 2
            code = e.code if isinstance(e.code, int) else 1
        except Exception:  # what a user would see as a traceback
            traceback.print_exc(file=err)
            code, crashed = 1, True
    return CliResult(int(code or 0), out.getvalue(), err.getvalue(), crashed)


def run_subprocess(*args: str | Path, timeout: float = 120, **kwargs: object) -> CliResult:
    """Run ``python -m zooprobe ARGS`` as a real process (for hangs, signals, start-up behaviour)."""
    r = subprocess.run(
        [sys.executable, "-m", "zooprobe", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
        **kwargs,  # type: ignore[arg-type]
    )
    return CliResult(r.returncode, r.stdout, r.stderr, "Traceback (most recent call last)" in r.stderr)


KILL_DRIVER = textwrap.dedent(
    """
    import importlib, os, signal, sys
    import torch
    # Ctrl-C as a terminal delivers it: a shell that started the test run in the background (no job
    # control) leaves SIGINT ignored, and a child inherits that, so the handler is set here explicitly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(int(os.environ["DRIVER_THREADS"]))  # as in the test process: same float sums
    module, name, after, sig = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    owner = importlib.import_module(module)
    *path, attr = name.split(".")  # "function" or "Class.method"
    for part in path:
        owner = getattr(owner, part)
    real, calls = getattr(owner, attr), [0]
    def step(*args, **kwargs):
        out = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == after:
            os.kill(os.getpid(), sig)
        return out
    setattr(owner, attr, step)
    from zooprobe.cli import main
    sys.exit(main(sys.argv[5:]))
    """
)


def signalled_after(
    where: str, after: int, sig: int, *args: str | Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``zooprobe ARGS`` in a real process that sends itself `sig` right after the `after`-th call of
    `where` (``"module:function"`` or ``"module:Class.method"``, one of zooprobe's write steps) returns:
    ``SIGKILL`` is a kill -9 (no handler, no cleanup), ``SIGINT`` what Ctrl-C sends."""
    import torch

    module, name = where.split(":")
    return subprocess.run(
        [sys.executable, "-c", KILL_DRIVER, module, name, str(after), str(int(sig)), *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "COLUMNS": "200", "DRIVER_THREADS": str(torch.get_num_threads())},
    )  # fmt: skip


def assert_killed(r: subprocess.CompletedProcess[str]) -> None:
    """The process died of SIGKILL (the kill point was reached), not of an error of its own."""
    assert r.returncode == -signal.SIGKILL, f"exit code {r.returncode}, not killed:\n{r.stderr[-3000:]}"


def assert_one_line_error(r: CliResult, *fragments: str) -> None:
    """`CliResult.assert_clear_error`, and exactly one ``zooprobe: error:`` line."""
    r.assert_clear_error(*fragments)
    assert len(r.error_lines) == 1, r.err


def snapshot(root: str | Path) -> dict[str, bytes | None]:
    """Every file (content) and folder (None) under `root`, by relative path."""
    root = Path(root)
    if not root.exists():
        return {}
    if root.is_file():
        return {".": root.read_bytes()}
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = None if path.is_dir() else path.read_bytes()
    return out


def assert_unchanged(before: dict[str, bytes | None], root: str | Path, *, allow_new: bool = False) -> None:
    """`root` holds exactly what `before` recorded, byte for byte (``allow_new``: plus files zooprobe added,
    none of the recorded ones changed or lost)."""
    after = snapshot(root)
    lost = sorted(set(before) - set(after))
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    added = sorted(set(after) - set(before))
    assert not lost, f"files lost: {lost}"
    assert not changed, f"files changed: {changed}"
    if not allow_new:
        assert not added, f"files added: {added}"


def fill_disk(disk: Path, leave: int) -> Path:
    """Fill `disk` (a `small_disk`) with a file of the user's until about `leave` bytes are free; the file."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "my-big-file.bin"
    filler.write_bytes(os.urandom(max(0, free - leave)))
    return filler
