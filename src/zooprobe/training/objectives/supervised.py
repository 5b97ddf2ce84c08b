"""The shared half of the supervised multi-task objectives (``neurons``, ``layers``): which models they train
and validate on, the targets, what they record and refuse, and their batches. A subclass sets ``kind``,
calls `SupervisedObjective.take_data` in its `prepare` and keeps its prepared data in ``self.train`` (with
``batches(batch_size, gen)``) and ``self.val`` (None without a validation split)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.training.objectives.base import Objective, refuse_other_kind, select_splits
from zooprobe.training.objectives.targets import objective_targets, target_tensors


def supervised_zoos(zoo: Any, splits: list[str]) -> tuple[Any, Any]:
    """The train and validation models of a supervised objective: the final checkpoints of `splits`
    (at least 2; never the validation split, which picks the best epoch) and of the validation split."""
    if "validation" in splits:
        raise ConfigError(
            "PretrainConfig.splits: the validation split picks the best epoch; do not train on it"
        )
    train_zoo = select_splits(zoo, splits)
    if len(train_zoo) < 2:
        raise InvalidInputError(f"zoo {zoo.source!s}: {len(train_zoo)} model(s) in {splits}; need at least 2")
    val_zoo = zoo.split("validation").final() if "validation" in zoo.splits else zoo.select([])
    return train_zoo, val_zoo


def supervised_provenance(splits: list[str], train_zoo: Any, val_zoo: Any, validated: bool) -> dict[str, Any]:
    """What a supervised objective records of its data: the splits, the training models' ids and content
    hashes, the validation models' ids and how the epoch was selected (`validated`: a validation set was
    used)."""
    return {
        "zoo_split": "+".join(splits),
        "checkpoints": "final",
        "objective": "supervised multi-task",
        "model_ids": train_zoo.metadata()["model_id"].astype(str).tolist(),
        "model_hashes": [train_zoo.content_hash(i) for i in range(len(train_zoo))],
        "n_models": len(train_zoo),
        "validation_model_ids": val_zoo.metadata()["model_id"].astype(str).tolist(),
        "selection": "lowest validation loss" if validated else "lowest training loss (no validation)",
    }


class SupervisedObjective(Objective):
    """An objective trained on metadata targets of the final checkpoints of ``PretrainConfig.splits``."""

    kind: ClassVar[str] = ""
    train: Any
    val: Any

    def check_state(self, path: Path, meta: dict[str, Any], output: Path) -> None:
        refuse_other_kind(meta, output, self.kind)

    def take_data(self, zoo: Any, saved: dict[str, Any] | None) -> tuple[Any, Any]:
        """The training and validation models (`supervised_zoos`) and the targets (``self.specs``, those of
        the saved state when resuming)."""
        self.splits = list(self.cfg.splits)
        self.train_zoo, self.val_zoo = supervised_zoos(zoo, self.splits)
        self.specs = objective_targets(zoo.source, self.train_zoo.metadata().reset_index(drop=True), saved)
        return self.train_zoo, self.val_zoo

    def take_targets(self) -> None:
        """``self.y_train`` / ``self.y_val``: the target values of the training and validation models (after
        ``self.val`` is set)."""
        self.y_train = target_tensors(self.train_zoo.metadata().reset_index(drop=True), self.specs)
        self.y_val = {}
        if self.val is not None:
            self.y_val = target_tensors(self.val_zoo.metadata().reset_index(drop=True), self.specs)

    def provenance(self) -> dict[str, Any]:
        return supervised_provenance(self.splits, self.train_zoo, self.val_zoo, self.val is not None)

    def state_fields(self) -> dict[str, Any]:
        return {"architecture": self.kind, "targets": [t.to_dict() for t in self.specs]}

    def steps_per_epoch(self) -> int:
        return len(self.train.batches(int(self.cfg.batch_size), None))

    def batches(self, gen: torch.Generator) -> list[Any]:
        return self.train.batches(int(self.cfg.batch_size), gen)


__all__ = ["SupervisedObjective", "supervised_provenance", "supervised_zoos"]
