"""`zooprobe bench` (heads vs baselines on identical splits) on a tiny zoo and encoder."""

from __future__ import annotations

import json
import math
from pathlib import Path

from zooprobe.bench.compare import compare
from zooprobe.training import OptimConfig, StopConfig, TrainConfig


def test_compare_scores_every_method_on_the_same_test_split(
    head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    methods = (
        "frozen",
        "finetune",
        "frozen+stats",
        "stats+gbm",
        "stats+rep+gbm",
        "stats+linear",
        "floor",
        "hparams+gbm",
    )
    result = compare(
        str(head_zoo),
        str(head_encoder),
        out,
        tasks=("accuracy", "hyperparameters"),
        methods=methods,
        frozen=TrainConfig(optim=OptimConfig(epochs=15, batch_size=8, lr=3e-3), stop=StopConfig(patience=15)),
        finetune_epochs=1,
        progress=False,
    )
    acc = result.metrics["accuracy"]
    assert set(methods) <= set(acc)
    hp = result.metrics["hyperparameters"]
    assert "hparams+gbm" not in hp  # the hyperparameters-as-input reference is for accuracy only
    # the floor predicts the train mean: Kendall tau of a constant is undefined (NaN), never 0
    assert math.isnan(acc["floor"]["kendall_tau"])
    # MLP vs CNN is visible in the weights' shapes: every weight-reading method gets it right
    for method in ("frozen", "finetune", "stats+gbm", "stats+rep+gbm", "stats+linear"):
        assert hp[method]["family/accuracy"] == 1.0, method
    assert hp["floor"]["family/accuracy"] < 1.0
    # the fine-tuning run started from the frozen head
    config = (out / "runs" / "accuracy-finetune" / "config.yaml").read_text()
    assert "accuracy-frozen" in config
    # outputs: markdown, JSON with every number, plots
    md = (out / "bench.md").read_text()
    assert "| metric | frozen | finetune | frozen+stats | stats+gbm" in md and "wall seconds" in md
    assert "finetune head vs stats+gbm" in md
    # what the representation adds beyond the statistics: its own method and a gain column
    assert "| gain over stats |" in md and "stats+rep+gbm vs stats+gbm" in md
    gain = acc["stats+rep+gbm"]["r2"] - acc["stats+gbm"]["r2"]
    assert "| r2 |" in md and f"{gain:+.3f} |" in md
    doc = json.loads((out / "bench.json").read_text())
    assert doc["metrics"]["accuracy"]["stats+gbm"]["r2"] == acc["stats+gbm"]["r2"]
    assert doc["metrics"]["accuracy"]["floor"]["kendall_tau"] is None  # NaN is written as null
    assert (out / "plots" / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_heads_cache_memory_and_shared_runs(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    from zooprobe.bench.heads import bench_heads

    base = TrainConfig(optim=OptimConfig(epochs=3, batch_size=8), stop=StopConfig(patience=3))
    options = {"base": base, "tasks": ("accuracy",), "finetune_epochs": 1, "progress": False}
    result = bench_heads(str(head_zoo), str(head_encoder), tmp_path, **options)
    # both epochs were measured (with the cache and encoding every model again) and the ratio is reported;
    # which is faster is a benchmark's finding (docs/performance.md), not a unit test's (no timed tests)
    assert result.encode_s > 0 and result.uncached_epoch_s >= result.encode_s  # encoding + one head epoch
    assert result.cached_epoch_s > 0 and math.isfinite(result.cache_ratio)
    # the frozen run reads the representations the measurement cached: every split is a cache hit
    frozen = json.loads((tmp_path / "runs" / "accuracy-frozen" / "metrics.json").read_text())
    assert {split: info["hit"] for split, info in frozen["representation_cache"].items()} == dict.fromkeys(
        ("train", "validation", "test"), True
    )
    # the frozen step keeps (almost) nothing for backward in the encoder; fine-tuning keeps its activations
    assert result.memory["finetune_saved_for_backward"] > 10 * result.memory["frozen_saved_for_backward"]
    assert set(result.runs) == {"accuracy/frozen", "accuracy/finetune"}
    lines = "\n".join(result.lines())
    assert "ratio" in lines and "saved for backward" in lines and "| accuracy | finetune | r2 |" in lines
    # fine-tuning epoch time, the number the throughput issue targets (1 epoch here: no later epochs)
    epochs = result.finetune_epoch_seconds()
    assert len(epochs["first"]) == 1 and epochs["first"][0] > 0 and epochs["later"] == []
    assert "fine-tuning, seconds per epoch" in lines and "later epochs: median -" in lines
    # the runs live where `zooprobe bench` looks for them: a second call re-scores instead of retraining
    assert (tmp_path / "runs" / "accuracy-finetune" / "metrics.json").is_file()
    again = bench_heads(str(head_zoo), str(head_encoder), tmp_path, memory=False, **options)
    assert again.runs["accuracy/finetune"]["test"] == result.runs["accuracy/finetune"]["test"]
