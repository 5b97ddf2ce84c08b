"""``zooprobe evaluate RUN_DIR``: re-score a finished run's best checkpoint on a split.

Only a finished run is evaluated (`heads.card.check_finished_run`, as ``report`` and ``push`` do): the head
of a run that is still training or was interrupted is not the best checkpoint of a finished run.
``allow_unfinished=True`` evaluates it anyway, with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from zooprobe.errors import InvalidInputError, ZooprobeError
from zooprobe.heads.card import check_finished_run
from zooprobe.heads.io import load_head
from zooprobe.heads.targets import target_arrays
from zooprobe.training import distributed as D
from zooprobe.training.config import TrainConfig
from zooprobe.training.data import prepare_data
from zooprobe.training.trainer import evaluate_split
from zooprobe.utils import read_yaml


def evaluate_run(
    run_dir: str | Path, split: str = "test", zoo: str | None = None, *, allow_unfinished: bool = False
) -> tuple[str, dict[str, float]]:
    """(task, metrics) of the run's best checkpoint on `split` of its zoo (or of `zoo`).

    An unfinished run (no metrics.json, or a head from another epoch than the best one) is refused unless
    `allow_unfinished`; then it is evaluated with a warning.
    """
    from zooprobe.zoo.store import load_zoo

    run_dir = Path(run_dir)
    if split not in ("train", "validation", "test"):
        raise InvalidInputError(f"split must be train, validation or test, got {split!r}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise InvalidInputError(f"{run_dir}: no config.yaml, so this is not a run folder of `zooprobe train`")
    raw = read_yaml(path, "run configuration")
    try:
        cfg = TrainConfig.from_dict(raw)
    except (ZooprobeError, TypeError, ValueError) as e:  # TypeError: a value of the wrong type
        raise InvalidInputError(
            f"{path}: not a valid run configuration ({e}); fix or restore the file"
        ) from e
    try:
        check_finished_run(run_dir)
    except ZooprobeError as e:
        if not allow_unfinished:
            raise ZooprobeError(
                f"{e}. To evaluate its current head anyway, pass allow_unfinished=True "
                "(--allow_unfinished true)"
            ) from e
        warnings.warn(
            f"evaluating an unfinished run: {e}. Its head is not the final best checkpoint, so these metrics "
            "are not the run's result",
            stacklevel=2,
        )
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
