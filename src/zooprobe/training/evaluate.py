"""``zooprobe evaluate RUN_DIR``: re-score a finished run's best checkpoint on a split."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from zooprobe.errors import InvalidInputError
from zooprobe.heads.io import load_head
from zooprobe.heads.targets import target_arrays
from zooprobe.training import distributed as D
from zooprobe.training.config import TrainConfig
from zooprobe.training.data import prepare_data
from zooprobe.training.trainer import evaluate_split


def evaluate_run(
    run_dir: str | Path, split: str = "test", zoo: str | None = None
) -> tuple[str, dict[str, float]]:
    """(task, metrics) of the run's best checkpoint on `split` of its zoo (or of `zoo`)."""
    from zooprobe.zoo.store import load_zoo

    run_dir = Path(run_dir)
    if split not in ("train", "validation", "test"):
        raise InvalidInputError(f"split must be train, validation or test, got {split!r}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise InvalidInputError(f"{run_dir}: no config.yaml, so this is not a run folder of `zooprobe train`")
    cfg = TrainConfig.from_dict(yaml.safe_load(path.read_text()))
    if zoo is not None:
        cfg.zoo, cfg.zoo_revision = zoo, None
    cfg.device = "cpu"
    head = load_head(run_dir)
    data = prepare_data(cfg, head.model.loaded, load_zoo(cfg.zoo, revision=cfg.zoo_revision), progress=False)
    if data.spec.names != head.spec.names:
        raise InvalidInputError(
            f"the zoo's targets {data.spec.names} differ from the head's {head.spec.names}"
        )
    # targets normalized with the head's own statistics (fitted on its training zoo), never refitted
    data.splits[split].targets = target_arrays(head.spec, data.splits[split].meta)
    metrics, _ = evaluate_split(head.model, data.splits[split], torch.device("cpu"), cfg, D.DistInfo())
    return cfg.task, metrics


__all__ = ["evaluate_run"]
