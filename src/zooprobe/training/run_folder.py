"""A run folder of ``zooprobe train``: where each file is, reading them, and whether the run is finished.

The trainer (`zooprobe.training.trainer`) writes it; the model card, the report, push, evaluate, predict
and the benchmark read it, all through `RunFolder`::

    .zooprobe                     marker: a folder zooprobe wrote (`zooprobe.core.outputs`)
    config.yaml                   the resolved TrainConfig (``zooprobe train --config`` reproduces the run)
    head/config.json              task, targets, head architecture, encoder source + revision + fingerprint
    head/model.safetensors        best checkpoint: head weights (+ the fine-tuned encoder's weights)
    head/trust.json               applicability domain, calibration, reliability (`zooprobe.heads.trust`)
    head/domain.safetensors       the domain's arrays (train split features, distances)
    head/gbm.json                 gbm heads: every target's LightGBM model as text
    head/content_hash.json        sha256 of each file above (`zooprobe.heads.integrity`), checked on load
    checkpoints/last.safetensors  full training state after the last finished epoch (resume)
    metrics.json                  history, best epoch, validation and test metrics (written last)
    predictions/{validation,test}.json   true and predicted values of the best checkpoint
    tensorboard/                  every loss, metric and per-group learning rate
    report/                       ``zooprobe report RUN_DIR`` (index.html and PNGs)

A run is *finished* when config.yaml, metrics.json and the head exist and the head's checkpoint is from the
best epoch metrics.json reports (a run restarted into the same folder, or still training, is not).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from zooprobe.core.files import read_json, read_yaml
from zooprobe.core.outputs import OutputKind
from zooprobe.core.tensorfile import HEAD_ADVICE, read_state
from zooprobe.errors import InvalidInputError, ZooprobeError
from zooprobe.training.config import TrainConfig

LAST = Path("checkpoints") / "last.safetensors"

RUN_OUTPUT = OutputKind(
    "run",
    owned=(
        "config.yaml",
        "metrics.json",
        "head/config.json",
        "head/model.safetensors",
        "head/README.md",
        "head/trust.json",
        "head/domain.safetensors",
        "head/gbm.json",
        "head/content_hash.json",
        LAST.as_posix(),
        "predictions/*.json",
        "tensorboard/events.out.tfevents.*",
        "report/*",  # zooprobe report RUN_DIR (a report folder of its own)
        "train.log",
    ),
    what="training run",
    signature=(LAST.as_posix(), "head/model.safetensors"),
)
"""The files zooprobe writes into a run folder (see `zooprobe.core.outputs`)."""

#: Files a finished run has (metrics.json is written after the final evaluation).
RUN_FILES = ("config.yaml", "metrics.json", "head/config.json", "head/model.safetensors")


class UnfinishedRunWarning(UserWarning):
    """A run folder whose training has not finished is used anyway (``allow_unfinished``)."""


class RunFolder:
    """The run folder at `path` (see the module docs). Reading never writes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ---------------------------------------------------------------- paths
    config_path = property(lambda self: self.path / "config.yaml", doc="The resolved `TrainConfig`.")
    metrics_path = property(lambda self: self.path / "metrics.json", doc="Metrics, written last.")
    head_dir = property(lambda self: self.path / "head", doc="The best head (a head folder).")
    head_config_path = property(lambda self: self.head_dir / "config.json", doc="The head's config.")
    head_weights_path = property(lambda self: self.head_dir / "model.safetensors", doc="The head's weights.")
    state_path = property(lambda self: self.path / LAST, doc="The training state after the last epoch.")
    tensorboard_dir = property(lambda self: self.path / "tensorboard", doc="TensorBoard event files.")
    report_dir = property(lambda self: self.path / "report", doc="`zooprobe report` output.")
    log_path = property(lambda self: self.path / "train.log", doc="The run's log.")

    def predictions_path(self, split: str) -> Path:
        return self.path / "predictions" / f"{split}.json"

    # ---------------------------------------------------------------- reading
    def config(self) -> TrainConfig:
        """The run's resolved `TrainConfig` (config.yaml, read safely and strictly)."""
        if not self.config_path.is_file():
            raise InvalidInputError(
                f"{self.path}: no config.yaml, so this is not a run folder of `zooprobe train`"
            )
        data = read_yaml(self.config_path, "run configuration")
        if not isinstance(data, dict):
            raise InvalidInputError(f"{self.config_path}: not a run configuration (a mapping)")
        try:
            return TrainConfig.from_dict(data)
        except (ZooprobeError, TypeError, ValueError) as e:  # TypeError: a value of the wrong type
            raise InvalidInputError(
                f"{self.config_path}: not a valid run configuration ({e}); fix or restore the file"
            ) from e

    def metrics(self) -> dict[str, Any]:
        return read_json(self.metrics_path, "metrics file")

    def head_config(self) -> dict[str, Any]:
        return read_json(self.head_config_path, "head config")

    def predictions(self, split: str) -> dict[str, Any]:
        return read_json(self.predictions_path(split), "predictions file")

    def head_epoch(self) -> int | None:
        """The epoch the saved head checkpoint comes from (None if it records none)."""

        _, meta = read_state(
            self.head_weights_path,
            what="head checkpoint",
            tensors=False,
            require_meta=False,
            advice=HEAD_ADVICE,
        )
        epoch = meta.get("epoch")
        return int(epoch) if isinstance(epoch, int) else None

    # ---------------------------------------------------------------- finished?
    def unfinished_reason(self) -> str | None:
        """Why this is not a finished run (None when it is one); `ZooprobeError` if it is no run at all."""
        if not self.path.is_dir():
            raise ZooprobeError(
                f"{str(self.path)!r} is not a folder (expected a run folder of `zooprobe train`)"
            )
        missing = [name for name in RUN_FILES if not (self.path / name).is_file()]
        if missing and not self.config_path.is_file():
            raise ZooprobeError(
                f"{self.path} is not a run folder of `zooprobe train` (missing {', '.join(missing)})"
            )
        if missing:
            return (
                f"{self.path} is not a finished training run (missing {', '.join(missing)}): training is "
                "still running or was interrupted; run the same `zooprobe train` command again to finish it"
            )
        metrics = self.metrics()
        for key in ("task", "mode", "best_epoch", "test"):
            if key not in metrics:
                raise ZooprobeError(f"{self.metrics_path}: missing field {key!r}; not a finished run")
        saved = self.head_epoch()
        if saved is not None and saved != metrics["best_epoch"]:
            return (
                f"{self.path}: head/model.safetensors is from epoch {saved} but metrics.json reports best "
                f"epoch {metrics['best_epoch']}: the run is being trained again (or was restarted); wait for "
                "it to finish"
            )
        return None

    def check_finished(self, action: str, *, allow_unfinished: bool = False) -> RunFolder:
        """This folder if it holds a finished run; otherwise a `ZooprobeError` saying why and how to finish
        it (``action``: what the caller wants to do, e.g. ``"push"``). With ``allow_unfinished`` an
        unfinished run only gives an `UnfinishedRunWarning`."""
        reason = self.unfinished_reason()
        if reason is None:
            return self
        if allow_unfinished:
            warnings.warn(
                f"an unfinished run is used to {action} (its head is not the run's final best one, so "
                f"results are not the run's): {reason}",
                UnfinishedRunWarning,
                stacklevel=2,
            )
            return self
        raise ZooprobeError(
            f"{reason}; then {action} it (or pass --allow_unfinished true to {action} its current head "
            "anyway, at your own risk)"
            if action != "push"
            else f"{reason}; then push it"
        )


__all__ = [
    "LAST",
    "RUN_FILES",
    "RUN_OUTPUT",
    "RunFolder",
    "UnfinishedRunWarning",
]
