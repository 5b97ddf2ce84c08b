"""The tasks and methods of ``zooprobe bench`` (`zooprobe.bench.compare`), without torch: the command line
lists them in ``--help`` before anything heavy is imported."""

from __future__ import annotations

TASKS = ("patterns", "accuracy", "hyperparameters")
METHODS = (
    "frozen",
    "finetune",
    "frozen+stats",
    "finetune+stats",
    "stats+gbm",
    "stats+rep+gbm",
    "stats+linear",
    "floor",
    "hparams+gbm",
)

__all__ = ["METHODS", "TASKS"]
