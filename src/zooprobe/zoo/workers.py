"""Worker processes for zoo generation: cohorts trained side by side, one process each.

Population batching (`population.py`) makes a cohort's operations larger, but a cohort of small models is
still bound by per-operation overhead, which torch's intra-op threads do not split. Two processes with one
thread each train two cohorts in about the time of one: on 2 cores a zoo builds about 1.5x faster.

`CohortWorkers` starts ``n`` processes (``python -m zooprobe.zoo.cohort_worker``: no re-import of the
caller's ``__main__``, unlike multiprocessing's spawn) and hands them cohorts one at a time over their
stdin, so a slow cohort never holds up a queue of others. Each answer is one JSON line on the worker's
stdout. A worker's stderr goes to a temporary file that is shown if it fails.

Work is a pure function of (configuration, cohort index), so which worker trains a cohort does not matter;
with the same threads per process a build with workers equals one without (tested).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from zooprobe.errors import ConfigError, ZooprobeError

AUTO_MIN_MODELS = 128
"""Automatic worker count: builds of fewer models stay in one process (starting workers takes 2-4 s)."""
AUTO_MAX_WORKERS = 8
WORKER_MODULE = "zooprobe.zoo.cohort_worker"
"""What each worker process runs (``python -m``): reads jobs on stdin, answers on stdout."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_workers(workers: int | None) -> None:
    """Refuse a negative worker count (before anything is written)."""
    if workers is not None and workers < 0:
        raise ConfigError(f"workers must be >= 1 (or 0 for automatic), got {workers}")


def resolve_workers(workers: int | None, n_cohorts: int, n_models: int) -> int:
    """Processes to use for ``n_cohorts`` cohorts of ``n_models`` runs in all.

    ``None`` (or 0) is automatic: one per core (at most `AUTO_MAX_WORKERS`) when there are at least
    `AUTO_MIN_MODELS` runs, else 1. Never more than there are cohorts.
    """
    check_workers(workers)
    if not workers:
        workers = 1 if n_models < AUTO_MIN_MODELS else min(available_cores(), AUTO_MAX_WORKERS)
    return max(1, min(workers, n_cohorts))


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` processes: the parent's threads shared out, at least 1."""
    import torch  # heavy

    return max(1, torch.get_num_threads() // workers)


class CohortWorkers:
    """``n`` worker processes that run jobs (JSON-able dicts, see `cohort_worker.handle`) and answer with
    dicts.

    Use as a context manager; `run` yields answers as they arrive (not in job order). A failed job raises
    `ZooprobeError` with the worker's traceback, and every worker is stopped on exit or on an error.
    """

    def __init__(self, n: int, threads: int, config: dict[str, Any], tasks: Iterable[str] = ()) -> None:
        if n < 1:
            raise ConfigError(f"workers must be >= 1, got {n}")
        self.n, self.threads = n, threads
        self._procs: list[subprocess.Popen[str]] = []
        self._logs: list[IO[bytes]] = []
        self._init = {"op": "init", "config": config, "tasks": sorted(set(tasks)), "threads": threads}
        self.startup_s = 0.0

    def __enter__(self) -> CohortWorkers:
        start = time.perf_counter()
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(self.threads)  # set before torch starts its thread pool
        # the workers import this zooprobe, also when it runs from a checkout put on sys.path by hand
        package_root = Path(__file__).resolve().parents[2]
        if package_root.name not in ("site-packages", "dist-packages"):
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root), env.get("PYTHONPATH")) if p)
        try:
            for _ in range(self.n):
                log = tempfile.TemporaryFile()
                self._logs.append(log)
                proc = subprocess.Popen(
                    [sys.executable, "-m", WORKER_MODULE],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                    text=True,
                    bufsize=1,
                )
                self._procs.append(proc)
                self._send(proc, self._init)
            for proc in self._procs:  # every worker has imported torch and loaded the tasks' data
                self._receive(proc)
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - start
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + 5
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for log in self._logs:
            log.close()
        self._procs, self._logs = [], []

    def run(self, jobs: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Run every job on the first free worker; yield each answer as it arrives."""
        pending = list(jobs)[::-1]
        busy: dict[int, dict[str, Any]] = {}
        with selectors.DefaultSelector() as sel:
            for i, proc in enumerate(self._procs):
                sel.register(proc.stdout, selectors.EVENT_READ, i)  # type: ignore[arg-type]
            for i, proc in enumerate(self._procs):
                if pending:
                    busy[i] = pending.pop()
                    self._send(proc, busy[i])
            while busy:
                for key, _ in sel.select():
                    i = key.data
                    answer = self._receive(self._procs[i])
                    del busy[i]
                    if pending:
                        busy[i] = pending.pop()
                        self._send(self._procs[i], busy[i])
                    yield answer

    def _send(self, proc: subprocess.Popen[str], message: dict[str, Any]) -> None:
        try:
            proc.stdin.write(json.dumps(message) + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            raise self._failure(proc, "") from None

    def _receive(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise self._failure(proc, "")
        try:
            answer = json.loads(line)
        except json.JSONDecodeError:
            raise self._failure(proc, f"it answered {line[:200]!r}, not a JSON line") from None
        if "error" in answer:
            raise self._failure(proc, answer["error"])
        return answer

    def _failure(self, proc: subprocess.Popen[str], error: str) -> ZooprobeError:
        log = self._logs[self._procs.index(proc)]
        log.seek(0)
        stderr = log.read().decode(errors="replace")[-4000:]
        code = proc.poll()
        detail = error or stderr or f"it exited with status {code}"
        return ZooprobeError(f"a zoo worker process failed:\n{detail.rstrip()}")


def map_cohorts(
    workers: CohortWorkers | None,
    jobs: list[dict[str, Any]],
    local: Callable[[dict[str, Any]], dict[str, Any]],
) -> Iterator[dict[str, Any]]:
    """Answers to ``jobs``: from ``workers``, or from ``local`` in this process when there are none."""
    if workers is None:
        for job in jobs:
            yield local(job)
    else:
        yield from workers.run(jobs)
