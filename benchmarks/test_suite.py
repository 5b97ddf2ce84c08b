"""How long the test suite takes: the wall time of ``pytest`` (what ``make test`` runs after ruff and
lint-imports), min and median over ``--runs`` runs, each on a fresh copy of the committed tree with an empty
zooprobe cache (as CI starts), so no run reuses what an earlier one built.

    python benchmarks/test_suite.py --runs 2                 # pytest -n 2, as make test
    python benchmarks/test_suite.py --runs 1 --workers 0     # serially

Run it on an idle machine (two torch processes on 2 cores slow each other up to 10x). Each run's summary
line ("N passed ... in S s") is printed with its wall time; the exit status is pytest's worst.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(workers: int, extra: list[str]) -> tuple[float, int, str]:
    """(wall seconds, pytest's exit status, its summary line) of one run on a fresh checkout of HEAD."""
    with tempfile.TemporaryDirectory(prefix="zooprobe-suite-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), "HEAD"], cwd=REPO, check=True)
        try:
            env = dict(os.environ, ZOOPROBE_CACHE=str(Path(tmp) / "cache"), PYTHONPATH=str(tree / "src"))
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
            if workers:
                cmd += ["-n", str(workers)]
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
            shutil.rmtree(tree, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if " passed" in ln or " failed" in ln or " error" in ln]
    return seconds, proc.returncode, lines[-1] if lines else proc.stdout[-500:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (0: serial)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    a = ap.parse_args()
    if a.runs < 1:
        raise SystemExit("--runs must be >= 1")
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    times, worst = [], 0
    for k in range(a.runs):
        seconds, rc, summary = one_run(a.workers, a.pytest_args)
        times.append(seconds)
        worst = max(worst, rc)
        print(f"run {k + 1}: {seconds:.1f} s wall, exit {rc}: {summary}", flush=True)
    mode = f"-n {a.workers}" if a.workers else "serial"
    median = statistics.median(times)
    print(f"pytest {mode}: min {min(times):.1f} s, median {median:.1f} s over {a.runs} run(s)")
    return worst


if __name__ == "__main__":
    sys.exit(main())
