"""``zooprobe zoo bench``: population-batched versus one-at-a-time training on the same sampled runs.

Both paths train exactly the same runs (same initialisation, data order, hyperparameters); the batched
path trains each cohort as one population, as ``zoo build`` does (with its worker processes: ``--workers``,
automatic by default; ``--workers 1`` measures population batching alone), the reference path trains each
run alone with ``nn.Module`` + ``torch.optim`` in this process. Printed: models/s of each, the ratio, and
how closely the two agree per run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from zooprobe.zoo.build import train_part
from zooprobe.zoo.data import load_task
from zooprobe.zoo.space import ModelSpec, ZooConfig, sample_cohort
from zooprobe.zoo.train import train_single
from zooprobe.zoo.workers import CohortWorkers, map_cohorts, resolve_workers, threads_per_worker


@dataclass
class BenchResult:
    """Both paths' wall time on the same sampled runs, and the test accuracy they reached."""

    n_models: int
    batched_s: float
    """Seconds of population-batched training."""
    sequential_s: float
    """Seconds of the one-at-a-time loop (nn.Module + torch.optim)."""
    batched_acc: dict[str, float]
    """Run id -> test accuracy, batched."""
    sequential_acc: dict[str, float]
    by_group: dict[str, tuple[int, float, float]] = dataclasses.field(default_factory=dict)
    """task/family -> (runs, batched seconds, one-at-a-time seconds)."""
    workers: int = 1
    """Processes of the batched path (`zooprobe.zoo.workers`)."""
    threads: int = 1
    """Torch threads of each batched process."""
    startup_s: float = 0.0
    """Seconds to start the worker processes (not in `batched_s`)."""

    @property
    def ratio(self) -> float:
        return self.sequential_s / self.batched_s

    def lines(self) -> list[str]:
        ids = sorted(set(self.batched_acc) & set(self.sequential_acc))
        a = np.array([self.batched_acc[i] for i in ids])
        b = np.array([self.sequential_acc[i] for i in ids])
        diff = np.abs(a - b)
        ks = stats.ks_2samp(a, b)
        return [
            f"models: {self.n_models} (same sampled runs on both paths)",
            f"one at a time : {self.sequential_s:8.1f} s  {self.n_models / self.sequential_s:8.2f} models/s",
            f"batched       : {self.batched_s:8.1f} s  {self.n_models / self.batched_s:8.2f} models/s  "
            + (
                f"({self.workers} worker processes x {self.threads} thread(s); starting them took "
                f"{self.startup_s:.1f} s, not counted)"
                if self.workers > 1
                else f"(one process, {self.threads} thread(s))"
            ),
            f"speed-up      : {self.ratio:8.1f}x",
            f"test accuracy : batched mean {a.mean():.3f} (q10 {np.quantile(a, 0.1):.3f}, "
            f"q90 {np.quantile(a, 0.9):.3f}); one-at-a-time mean {b.mean():.3f} "
            f"(q10 {np.quantile(b, 0.1):.3f}, q90 {np.quantile(b, 0.9):.3f})",
            f"per-run |difference|: median {np.median(diff):.4f}, 90th pct {np.quantile(diff, 0.9):.4f}; "
            f"two-sample KS p = {ks.pvalue:.2f}; runs compared {len(ids)}",
        ] + [
            f"  {group:<12} runs {n:4d}: batched {b:6.1f} s, one at a time {s:6.1f} s, speed-up {s / b:5.1f}x"
            for group, (n, b, s) in sorted(self.by_group.items())
        ]


def _say(enabled: bool, text: str) -> None:
    """Progress on stderr without a refresh thread (a background thread slows small torch ops)."""
    if enabled:
        print(text, file=sys.stderr, flush=True)


def bench_zoo(
    config: ZooConfig | None = None, n_models: int = 256, progress: bool = True, workers: int | None = None
) -> BenchResult:
    """Train ``n_models`` runs of ``config`` (default: the bench preset) both ways and time them.

    The batched path runs as ``zoo build`` does, with ``workers`` processes (`zooprobe.zoo.workers`; ``None``
    or 0: automatic), started before the clock. Its time is one pass over every cohort; each cohort kind is
    then trained again on its own for its line (with workers, a kind's time includes waiting for its
    slowest cohort)."""
    cfg = dataclasses.replace(config or ZooConfig(preset="bench"), n_models=n_models).resolved()
    cohorts = [sample_cohort(cfg, k) for k in range(cfg.n_cohorts)]
    for specs in cohorts:  # data generation is not part of training time
        load_task(specs[0].arch.task)
    groups: dict[str, list[float]] = {}
    n_workers = resolve_workers(workers, len(cohorts), n_models)
    by_kind: dict[str, list[int]] = {}
    for k, specs in enumerate(cohorts):
        by_kind.setdefault(f"{specs[0].arch.task}/{specs[0].arch.family}", []).append(k)
    batched: dict[str, float] = {}
    threads = threads_per_worker(n_workers) if n_workers > 1 else torch.get_num_threads()
    pool = (
        CohortWorkers(n_workers, threads, cfg.to_dict(), {s[0].arch.task for s in cohorts})
        if n_workers > 1
        else None
    )

    def train_all(ks: list[int]) -> float:
        """Train cohorts ``ks`` batched, the longest first (no worker is left alone with one at the end);
        wall seconds."""
        start = time.perf_counter()
        jobs = [
            {"op": "train", "cohort": k, "batched": True}
            for k in sorted(ks, key=lambda k: -_work(cohorts[k]))
        ]
        for answer in map_cohorts(pool, jobs, lambda job: train_part(cfg, job["cohort"])):
            batched.update(answer["test_accuracy"])
        return time.perf_counter() - start

    with pool if pool is not None else contextlib.nullcontext():
        startup_s = pool.startup_s if pool is not None else 0.0
        _say(progress, f"batched: {len(cohorts)} cohorts")
        batched_s = train_all(list(range(len(cohorts))))
        for kind, ks in sorted(by_kind.items()):
            if len(by_kind) > 1:  # each kind again on its own, for its line
                _say(progress, f"batched: {kind}, {len(ks)} cohort(s)")
            groups[kind] = [
                sum(len(cohorts[k]) for k in ks),
                batched_s if len(by_kind) == 1 else train_all(ks),
                0.0,
            ]
    runs = [s for specs in cohorts for s in specs]
    sequential_s, sequential = _one_at_a_time(cfg, runs, groups, progress)
    by_group = {k: (int(v[0]), v[1], v[2]) for k, v in groups.items()}
    return BenchResult(
        len(runs), batched_s, sequential_s, batched, sequential, by_group, n_workers, threads, startup_s
    )


def _one_at_a_time(
    cfg: ZooConfig, runs: list[ModelSpec], groups: dict[str, list[float]], progress: bool
) -> tuple[float, dict[str, float]]:
    """Train `runs` one after another (nn.Module + torch.optim), each kind's seconds added to `groups`;
    the wall seconds and each run's final test accuracy."""
    start = time.perf_counter()
    sequential: dict[str, float] = {}
    for i, spec in enumerate(runs):
        if i % 16 == 0:
            _say(progress, f"one at a time: run {i + 1}/{len(runs)}")
        res = train_single(spec, load_task(spec.arch.task), cfg.max_train_samples)  # type: ignore[arg-type]
        sequential.update(
            {c.spec.model_id: c.metrics["test_accuracy"] for c in res.checkpoints if c.is_final}
        )
        groups.setdefault(f"{spec.arch.task}/{spec.arch.family}", [0, 0.0, 0.0])[2] += res.seconds
    return time.perf_counter() - start, sequential


def _work(specs: list[ModelSpec]) -> float:
    """A cohort's rough cost, to start the longest first: run-epochs times parameters per sample."""
    a = specs[0].arch
    return sum(s.epochs for s in specs) * a.width * a.depth * (4 if a.family == "cnn" else 1)
