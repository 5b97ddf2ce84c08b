"""``zooprobe zoo bench``: population-batched versus one-at-a-time training on the same sampled runs.

Both paths train exactly the same runs (same initialisation, data order, hyperparameters); the batched
path trains each cohort as one population, the reference path trains each run alone with ``nn.Module`` +
``torch.optim``. Printed: models/s of each, the ratio, and how closely the two agree per run.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

import numpy as np
from scipy import stats

from zooprobe.zoo.data import load_task
from zooprobe.zoo.space import ModelSpec, ZooConfig, sample_cohort
from zooprobe.zoo.train import train_cohort, train_single


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
            f"batched       : {self.batched_s:8.1f} s  {self.n_models / self.batched_s:8.2f} models/s",
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


def bench_zoo(config: ZooConfig | None = None, n_models: int = 256, progress: bool = True) -> BenchResult:
    """Train ``n_models`` runs of ``config`` (default: the bench preset) both ways and time them."""
    cfg = dataclasses.replace(config or ZooConfig(preset="bench"), n_models=n_models).resolved()
    cohorts = [sample_cohort(cfg, k) for k in range(cfg.n_cohorts)]
    for specs in cohorts:  # data generation is not part of training time
        load_task(specs[0].arch.task)
    groups: dict[str, list[float]] = {}

    def group(spec: ModelSpec) -> list[float]:
        return groups.setdefault(f"{spec.arch.task}/{spec.arch.family}", [0, 0.0, 0.0])

    start = time.perf_counter()
    batched: dict[str, float] = {}
    for k, specs in enumerate(cohorts):
        _say(progress, f"batched: cohort {k + 1}/{len(cohorts)}")
        res = train_cohort(specs, load_task(specs[0].arch.task), cfg.max_train_samples)  # type: ignore[arg-type]
        batched.update({c.spec.model_id: c.metrics["test_accuracy"] for c in res.checkpoints if c.is_final})
        g = group(specs[0])
        g[0] += len(specs)
        g[1] += res.seconds
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    sequential: dict[str, float] = {}
    runs = [s for specs in cohorts for s in specs]
    for i, spec in enumerate(runs):
        if i % 16 == 0:
            _say(progress, f"one at a time: run {i + 1}/{len(runs)}")
        res = train_single(spec, load_task(spec.arch.task), cfg.max_train_samples)  # type: ignore[arg-type]
        sequential.update(
            {c.spec.model_id: c.metrics["test_accuracy"] for c in res.checkpoints if c.is_final}
        )
        group(spec)[2] += res.seconds
    sequential_s = time.perf_counter() - start
    by_group = {k: (int(v[0]), v[1], v[2]) for k, v in groups.items()}
    return BenchResult(len(runs), batched_s, sequential_s, batched, sequential, by_group)
