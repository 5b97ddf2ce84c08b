"""Where a head stands: weight statistics + LightGBM trained on the same zoo, split and targets as a run.

`stats_gbm_baseline(run_dir)` trains that baseline (a ``--head.kind gbm`` run: the 131 weight statistics
of `zooprobe.tokens.statistics`, one LightGBM model per target, early-stopped on the validation split) in a
temporary folder and returns its test metrics, computed by the same evaluator as the run's own. The demo
shows it next to the heads and every report next to the run's metrics: on many targets it is the stronger
predictor, and a first-time user should see that.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from zooprobe.api import train
from zooprobe.errors import ZooprobeError
from zooprobe.heads.config import HeadConfig
from zooprobe.training.config import TrainConfig
from zooprobe.training.run_folder import RunFolder

BASELINE_NAME = "statistics + LightGBM"
"""How tables name the baseline."""


def baseline_config(cfg: TrainConfig) -> TrainConfig | None:
    """The statistics + LightGBM run of `cfg`'s task, zoo, split and targets (None if `cfg` is one)."""
    if cfg.head.kind == "gbm" and cfg.head.features == "stats":
        return None
    return dataclasses.replace(
        cfg,
        mode="frozen",
        head=HeadConfig(kind="gbm", features="stats"),
        init_from=None,
        augment=False,
    )


def stats_gbm_baseline(cfg: TrainConfig, zoo: Any = None, encoder: Any = None) -> dict[str, Any] | None:
    """Test metrics of statistics + LightGBM on `cfg`'s zoo and split (None when `cfg` is that baseline);
    `zoo` / `encoder` may be passed already loaded."""
    base = baseline_config(cfg)
    if base is None:
        return None
    with tempfile.TemporaryDirectory(prefix="zooprobe-baseline-") as tmp:
        result = train(base, Path(tmp) / "run", resume=False, progress=False, zoo=zoo, encoder=encoder)
    return dict(result.test)


def run_baseline(run_dir: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """(`stats_gbm_baseline` of the run in `run_dir`, None) or (None, why it could not be computed)."""
    try:
        cfg = RunFolder(run_dir).config()
        metrics = stats_gbm_baseline(cfg)
    except ZooprobeError as e:  # the run's zoo or encoder moved away, ...: the report still renders
        return None, str(e)
    return (metrics, None) if metrics is not None else (None, "this run is the statistics + LightGBM head")


__all__ = ["BASELINE_NAME", "baseline_config", "run_baseline", "stats_gbm_baseline"]
