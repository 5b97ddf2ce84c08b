"""``make demo`` / ``zooprobe demo``: the main job on the built-in default, offline, with nothing pretrained.

1. the demo zoo (built once into the cache: ``zooprobe zoo build --preset demo``, 768 runs, at least 100
   test models);
2. the default encoder: the foundation encoder shipped inside the package (``load_encoder("default")``),
   loaded, never pretrained;
3. one head per task on the frozen encoder (`DEMO_RUNS`: the head kind each task's measurements favour),
   each with its model card;
4. weight statistics + LightGBM (`zooprobe.report.baseline`) trained per task on the same zoo, split and
   targets, and each task's headline metric compared with it (`DemoResult.comparison`: the margin, or by
   how much the head misses);
5. a table of test metrics and an HTML report per run (``RUN/report/index.html``, with the same baseline).
   Run folders go to ``--output`` (default ``runs/demo``); every number is in their ``metrics.json``.

Fine-tuning the foundation encoder is not part of the demo (`FINETUNE_NOTE`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from zooprobe.api import builtin_zoo, load_encoder, train
from zooprobe.core.files import atomic_write_text
from zooprobe.demo_config import DEMO_CONFIG_FILE, DEMO_ZOO, DemoConfig
from zooprobe.errors import ConfigError
from zooprobe.heads.config import HeadConfig
from zooprobe.publish.card import write_run_card
from zooprobe.report import write_report
from zooprobe.report.baseline import BASELINE_NAME, stats_gbm_baseline
from zooprobe.training.config import TrainConfig, preset_config
from zooprobe.zoo.store import Zoo

DEMO_ENCODER = "default"
"""The encoder of every demo run: the shipped foundation encoder."""

#: The heads the demo trains on the frozen encoder, by name: LightGBM on the weight statistics and the
#: encoder's representation (what the shipped heads use), or the MLP head on the representation and the
#: statistics.
HEADS: dict[str, HeadConfig] = {
    "stats+rep+gbm": HeadConfig(kind="gbm", features="stats+rep"),
    "rep+stats mlp": HeadConfig(statistics=True),
}
#: (task, head) of each demo run.
DEMO_RUNS: tuple[tuple[str, str], ...] = (
    ("patterns", "stats+rep+gbm"),
    ("accuracy", "stats+rep+gbm"),
    ("hyperparameters", "stats+rep+gbm"),
)
#: (metric key, label) shown per task in the demo table; the first is the task's headline metric.
DEMO_METRICS = {
    "patterns": [
        ("macro_f1", "macro F1"),
        ("macro_roc_auc", "macro ROC-AUC"),
        ("subset_accuracy", "subset acc."),
    ],
    "accuracy": [("r2", "R²"), ("kendall_tau", "Kendall tau"), ("mae", "MAE")],
    "hyperparameters": [
        ("score", "score (mean R²/acc.)"),
        ("learning_rate/r2", "log10 lr R²"),
        ("optimizer/accuracy", "optimizer acc."),
        ("activation/accuracy", "activation acc."),
    ],
}
FINETUNE_NOTE = (
    "fine-tuning: not in the demo. Fine-tuning the foundation encoder (zooprobe train --mode finetune) has "
    "not been measured against these frozen heads, and it does not fit the demo's 5-minute budget."
)


@dataclass
class Comparison:
    """A task's headline metric: the best demo head against statistics + LightGBM on the same test split."""

    task: str
    metric: str
    head: str
    value: float
    baseline: float

    @property
    def margin(self) -> float:
        """Head minus baseline (higher is better for every headline metric); NaN when either is undefined."""
        return self.value - self.baseline

    @property
    def at_least_baseline(self) -> bool:
        return not math.isnan(self.margin) and self.margin >= 0

    def line(self) -> str:
        label = dict(DEMO_METRICS[self.task])[self.metric]
        text = (
            f"{self.task} ({label}): zooprobe {self.head} {self.value:.3f} vs {BASELINE_NAME} "
            f"{self.baseline:.3f}"
        )
        if math.isnan(self.margin):
            return f"{text}: undefined"
        if self.at_least_baseline:
            return f"{text}: at least as good (+{self.margin:.3f})"
        return f"{text}: misses by {-self.margin:.3f}"


@dataclass
class DemoResult:
    runs: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    reports: dict[str, Path] = field(default_factory=dict)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Test metrics of statistics + LightGBM per task, on the same split as the heads."""
    comparison: dict[str, Comparison] = field(default_factory=dict)
    """Per task: the headline metric of its best demo head against the baseline."""


def demo_config(task: str, head: str, zoo: str, encoder: str = DEMO_ENCODER) -> TrainConfig:
    """The demo's run of `task` with the head `head` (a name of `HEADS`) on the frozen encoder: the
    ``frozen`` head-training preset (`HEAD_PRESETS`) with that head."""
    if head not in HEADS:
        raise ConfigError(f"unknown demo head {head!r}; choose one of {', '.join(HEADS)}")
    return dataclasses.replace(
        preset_config("frozen", task=task, zoo=zoo, encoder=encoder), head=dataclasses.replace(HEADS[head])
    )


def _number(metrics: dict[str, Any], key: str) -> float:
    value = metrics.get(key)
    return float(value) if isinstance(value, int | float) and value is not None else math.nan


def compare(result: DemoResult) -> dict[str, Comparison]:
    """Each task's best head (headline metric) against statistics + LightGBM, from `result`'s runs."""
    out: dict[str, Comparison] = {}
    for key, run in result.runs.items():
        task, head = key.split("/")
        metric = DEMO_METRICS[task][0][0]
        value = _number(run.test, metric)
        best = out.get(task)
        if best is None or (not math.isnan(value) and (math.isnan(best.value) or value > best.value)):
            baseline = _number(result.baselines.get(task) or {}, metric)
            out[task] = Comparison(task, metric, head, value, baseline)
    return out


def run_demo(
    preset: str = DEMO_ZOO,
    output: str | Path = "runs/demo",
    console: Console | None = None,
    progress: bool = True,
    runs: Sequence[tuple[str, str]] = DEMO_RUNS,
) -> DemoResult:
    """Run the demo on the built-in zoo `preset` (its runs: `runs`, default `DEMO_RUNS`); the settings go to
    ``OUTPUT/demo_config.yaml`` (``zooprobe demo --config`` reruns them)."""
    settings = DemoConfig(preset=preset, output=str(output)).check()
    console = console or Console()
    result = DemoResult()
    start = time.perf_counter()
    zoo_path = builtin_zoo(preset, progress=progress)  # an unknown preset fails here, before any write
    Path(output).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(output) / DEMO_CONFIG_FILE, yaml.safe_dump(settings.to_dict(), sort_keys=False))
    zoo = Zoo.open(zoo_path)
    result.seconds["zoo"] = time.perf_counter() - start
    sizes = ", ".join(f"{len(zoo.split(s))} {s}" for s in ("train", "validation", "test"))
    console.print(
        f"zoo: built-in '{preset}' at {zoo_path}: {len(zoo)} models ({sizes}; {result.seconds['zoo']:.1f}s)"
    )
    start = time.perf_counter()
    encoder = load_encoder(DEMO_ENCODER, progress=progress)
    result.seconds["encoder"] = time.perf_counter() - start
    console.print(
        f"encoder: {DEMO_ENCODER} = the shipped foundation encoder at {encoder.source} "
        f"({encoder.encoder.num_parameters():,} parameters, loaded in {result.seconds['encoder']:.1f}s, "
        "nothing pretrained)"
    )
    zoo_source = f"builtin:{preset}"
    for task, head in runs:
        cfg = demo_config(task, head, zoo_source)
        start = time.perf_counter()
        run = train(
            cfg,
            Path(output) / f"{task}-{_slug(head)}",
            resume=False,
            encoder=encoder,
            zoo=zoo,
            progress=progress,
        )
        result.seconds[f"{task}/{head}"] = time.perf_counter() - start
        result.runs[f"{task}/{head}"] = run
        write_run_card(run.output)
        if task not in result.baselines:
            start = time.perf_counter()
            result.baselines[task] = stats_gbm_baseline(cfg, zoo=zoo, encoder=encoder) or {}
            result.seconds[f"{task}/baseline"] = time.perf_counter() - start
    _report(result, Path(output), console)
    return result


def _report(result: DemoResult, output: Path, console: Console) -> None:
    """Print the demo's table and comparisons, and write each run's HTML report."""
    result.comparison = compare(result)
    console.print(demo_table(result))
    console.print("zooprobe against statistics + LightGBM (headline metric, test split):")
    for comparison in result.comparison.values():
        console.print(f"  {comparison.line()}")
    console.print(FINETUNE_NOTE)
    console.print(f"run folders (metrics.json, head/): {output.resolve()}")
    for key in result.runs:
        task, head = key.split("/")
        baseline = result.baselines.get(task) or False
        result.reports[key] = write_report(output / f"{task}-{_slug(head)}", baseline=baseline)
    console.print("reports (self-contained HTML):")
    for path in result.reports.values():
        console.print(f"  {path.resolve()}")


def _slug(head: str) -> str:
    """A head name as part of a folder name (``stats+rep+gbm`` -> ``stats-rep-gbm``)."""
    return head.replace("+", "-").replace(" ", "-")


def demo_table(result: DemoResult) -> Table:
    """The demo's table: each run's test metrics, and under each task statistics + LightGBM on the same
    split (``baseline`` rows), so the heads are seen next to the strongest simple predictor."""
    table = Table(title="zooprobe demo: test metrics (frozen foundation encoder)")
    for col in ("task", "head", "metric", "test", "seconds"):
        table.add_column(col, justify="right" if col in ("test", "seconds") else "left")
    rows: list[tuple[str, str, dict[str, Any], float]] = []
    keys = list(result.runs)
    for i, key in enumerate(keys):
        task, head = key.split("/")
        rows.append((task, head, result.runs[key].test, result.seconds[key]))
        last_of_task = not any(k.split("/")[0] == task for k in keys[i + 1 :])
        if last_of_task and result.baselines.get(task):
            rows.append(
                (task, BASELINE_NAME, result.baselines[task], result.seconds.get(f"{task}/baseline", 0.0))
            )
    for task, head, test, seconds in rows:
        for i, (metric, label) in enumerate(DEMO_METRICS[task]):
            value = _number(test, metric)
            shown = "undefined" if math.isnan(value) else f"{value:.3f}"
            extra = f"{seconds:.1f}" if i == 0 else ""
            table.add_row(task if i == 0 else "", head if i == 0 else "", label, shown, extra)
    return table


__all__ = ["DEMO_RUNS", "DEMO_ZOO", "HEADS", "Comparison", "DemoResult", "compare", "demo_config", "run_demo"]
