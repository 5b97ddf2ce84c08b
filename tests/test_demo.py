"""`make demo` / `zooprobe demo`: the main job end to end, on the tiny presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

import zooprobe.api as api
from zooprobe.demo import DEMO_RUNS, run_demo


def test_demo_trains_three_heads_and_a_finetune_and_writes_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the real demo pretrains the `small` encoder on the `small` zoo (about 2 min); same path, tiny sizes
    monkeypatch.setattr(api, "DEFAULT_ENCODER_PRESET", "tiny")
    monkeypatch.setattr(api, "DEFAULT_ENCODER_ZOO", "builtin:tiny")
    console = Console(record=True, width=120)
    result = run_demo("tiny", tmp_path / "runs", console=console)
    assert list(result.runs) == [f"{task}/{mode}" for task, mode in DEMO_RUNS]
    text = console.export_text()
    assert "zooprobe demo: test metrics" in text and "Kendall tau" in text and "macro ROC-AUC" in text
    for key, report in result.reports.items():
        task, mode = key.split("/")
        run_dir = tmp_path / "runs" / f"{task}-{mode}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["task"] == task and metrics["mode"] == mode
        assert report.is_file() and str(report) in text.replace("\n", "")
        card = (run_dir / "head" / "README.md").read_text()  # written at train time, not only at push
        assert f"trained on {metrics['n_models']['train']} networks (the train split" in card
    # an honest table: statistics + LightGBM on the same split, under each task
    assert text.count("statistics + LightGBM") == len({task for task, _ in DEMO_RUNS})
    assert set(result.baselines) == {task for task, _ in DEMO_RUNS} and all(result.baselines.values())
