"""``make demo`` / ``zooprobe demo``: the main job on the built-in default, offline.

1. the default zoo (built once into the cache: ``zooprobe zoo build --preset small``);
2. the default encoder (pretrained once on it into the cache: ``zooprobe encoder pretrain``);
3. the three heads trained in frozen mode on cached representations, plus one fine-tuning run (accuracy);
4. weight statistics + LightGBM (`zooprobe.report.baseline`) trained per task on the same zoo, split and
   targets, so the table shows where the heads stand;
5. a table of test metrics and an HTML report per run (``RUN/report/index.html``, with the same baseline).
   Run folders go to ``--output`` (default ``runs/demo``); every number is in their ``metrics.json``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from zooprobe.api import builtin_zoo, load_encoder, train
from zooprobe.publish.card import write_run_card
from zooprobe.report import write_report
from zooprobe.report.baseline import BASELINE_NAME, stats_gbm_baseline
from zooprobe.training.config import TrainConfig, preset_config
from zooprobe.zoo.store import Zoo

DEMO_RUNS = (
    ("patterns", "frozen"),
    ("accuracy", "frozen"),
    ("hyperparameters", "frozen"),
    ("accuracy", "finetune"),
)
#: (metric key, label) shown per task in the demo table.
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


@dataclass
class DemoResult:
    runs: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    reports: dict[str, Path] = field(default_factory=dict)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Test metrics of statistics + LightGBM per task, on the same split as the heads."""


def demo_config(task: str, mode: str, zoo: str, encoder: str) -> TrainConfig:
    """The demo's run of `task` in `mode`: the head-training preset of that mode (`HEAD_PRESETS`)."""
    return preset_config(mode, task=task, zoo=zoo, encoder=encoder)


def run_demo(
    preset: str = "small",
    output: str | Path = "runs/demo",
    console: Console | None = None,
    progress: bool = True,
) -> DemoResult:

    console = console or Console()
    result = DemoResult()
    start = time.perf_counter()
    zoo_path = builtin_zoo(preset)
    zoo = Zoo.open(zoo_path)
    result.seconds["zoo"] = time.perf_counter() - start
    console.print(f"zoo: built-in '{preset}' at {zoo_path}: {len(zoo)} models ({result.seconds['zoo']:.1f}s)")
    start = time.perf_counter()
    encoder = load_encoder("default")
    result.seconds["encoder"] = time.perf_counter() - start
    console.print(
        f"encoder: default at {encoder.source} ({encoder.encoder.num_parameters():,} parameters, "
        f"{result.seconds['encoder']:.1f}s)"
    )
    zoo_source = f"builtin:{preset}" if preset != "small" else "default"
    for task, mode in DEMO_RUNS:
        cfg = demo_config(task, mode, zoo_source, "default")
        start = time.perf_counter()
        run = train(
            cfg, Path(output) / f"{task}-{mode}", resume=False, encoder=encoder, zoo=zoo, progress=progress
        )
        result.seconds[f"{task}/{mode}"] = time.perf_counter() - start
        result.runs[f"{task}/{mode}"] = run
        write_run_card(run.output)
        if task not in result.baselines:
            start = time.perf_counter()
            result.baselines[task] = stats_gbm_baseline(cfg, zoo=zoo, encoder=encoder) or {}
            result.seconds[f"{task}/baseline"] = time.perf_counter() - start
    console.print(demo_table(result))
    console.print(f"run folders (metrics.json, head/, tensorboard/): {Path(output).resolve()}")

    for key in result.runs:
        task, mode = key.split("/")
        result.reports[key] = write_report(
            Path(output) / f"{task}-{mode}", baseline=result.baselines.get(task) or False
        )
    console.print("reports (self-contained HTML):")
    for path in result.reports.values():
        console.print(f"  {path.resolve()}")
    return result


def demo_table(result: DemoResult) -> Table:
    """The demo's table: each run's test metrics, and under each task statistics + LightGBM on the same
    split (``baseline`` rows), so the heads are seen next to the strongest simple predictor."""
    table = Table(title="zooprobe demo: test metrics (best validation checkpoint)")
    for col in ("task", "mode", "metric", "test", "epochs", "seconds"):
        table.add_column(col, justify="right" if col in ("test", "epochs", "seconds") else "left")
    rows: list[tuple[str, str, dict[str, Any], str, float]] = []
    for key, run in result.runs.items():
        task, mode = key.split("/")
        rows.append((task, mode, run.test, str(run.epochs_run), result.seconds[key]))
        last_of_task = not any(
            k.split("/")[0] == task for k in list(result.runs)[list(result.runs).index(key) + 1 :]
        )
        if last_of_task and result.baselines.get(task):
            rows.append(
                (task, BASELINE_NAME, result.baselines[task], "", result.seconds.get(f"{task}/baseline", 0.0))
            )
    for task, mode, test, epochs, seconds in rows:
        for i, (metric, label) in enumerate(DEMO_METRICS[task]):
            value = test.get(metric, math.nan)
            shown = "undefined" if value is None or math.isnan(value) else f"{value:.3f}"
            extra = (epochs, f"{seconds:.1f}") if i == 0 else ("", "")
            table.add_row(task if i == 0 else "", mode if i == 0 else "", label, shown, *extra)
    return table


__all__ = ["DEMO_RUNS", "DemoResult", "demo_config", "run_demo"]
