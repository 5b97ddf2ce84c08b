"""`make demo` / `zooprobe demo`: the main job end to end, on the tiny zoo (the real demo: the demo zoo)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import zooprobe.api as api
from zooprobe.demo import DEMO_METRICS, DEMO_RUNS, run_demo
from zooprobe.zoo.config import ZooConfig
from zooprobe.zoo.store import Zoo


def test_demo_zoo_has_at_least_100_test_models() -> None:
    cfg = ZooConfig(preset="demo").resolved()
    assert cfg.split_fractions is not None
    assert cfg.n_models * cfg.split_fractions[2] >= 100  # type: ignore[operator]


def test_demo_trains_a_head_per_task_on_the_shipped_encoder_and_compares_with_the_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_zoo: Path
) -> None:
    def no_pretraining(*args: object, **kwargs: object) -> None:
        raise AssertionError("the demo pretrained an encoder")

    monkeypatch.setattr(api, "pretrain", no_pretraining)
    console = Console(record=True, width=400)  # no wrapped lines
    result = run_demo("tiny", tmp_path / "runs", console=console, progress=False)
    assert list(result.runs) == [f"{task}/{head}" for task, head in DEMO_RUNS]
    saved = yaml.safe_load((tmp_path / "runs" / "demo_config.yaml").read_text())  # the settings, to rerun
    assert saved == {"preset": "tiny", "output": str(tmp_path / "runs")}
    assert not (Path(os.environ["ZOOPROBE_CACHE"]) / "encoders").exists()  # nothing pretrained into the cache
    text = console.export_text()
    assert "shipped foundation encoder" in text and "nothing pretrained" in text
    assert f"{len(Zoo.open(tiny_zoo).split('test'))} test" in text
    assert "zooprobe demo: test metrics" in text and "Kendall tau" in text and "macro ROC-AUC" in text
    assert "fine-tuning: not in the demo" in text
    for key, report in result.reports.items():
        task, _ = key.split("/")
        run_dir = report.parent.parent
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["task"] == task and metrics["mode"] == "frozen"
        assert report.is_file() and str(report) in text.replace("\n", "")
        card = (run_dir / "head" / "README.md").read_text()  # written at train time, not only at push
        assert f"trained on {metrics['n_models']['train']} networks (the train split" in card
    # an honest table: statistics + LightGBM on the same split, under each task
    tasks = {task for task, _ in DEMO_RUNS}
    assert text.count("statistics + LightGBM") >= len(tasks)
    assert set(result.baselines) == tasks and all(result.baselines.values())
    # each task's headline metric against the baseline, as measured (its margin or by how much it misses)
    assert set(result.comparison) == tasks
    for task, comparison in result.comparison.items():
        metric = DEMO_METRICS[task][0][0]
        assert comparison.metric == metric
        assert comparison.baseline == pytest.approx(result.baselines[task][metric], nan_ok=True)
        assert comparison.value == pytest.approx(
            result.runs[f"{task}/{comparison.head}"].test[metric], nan_ok=True
        )
        line = comparison.line()
        assert line in text
        if not math.isnan(comparison.margin):
            verdict = "at least as good" if comparison.margin >= 0 else f"misses by {-comparison.margin:.3f}"
            assert verdict in line
