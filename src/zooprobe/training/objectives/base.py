"""The interface of a pretraining objective, and the registry `run_loop`'s callers pick one from.

An objective owns everything that is particular to one way of pretraining an encoder: which models of
the zoo it reads and how it checks them (`prepare`), the model it trains (`build_model`; an encoder
plus any training-only head), its batches and its loss (`batches`, `train_step`), the validation
(`validate`), what it records (`provenance`, `state_fields`) and how it writes the encoder folder
(`save`). Everything else, the same for every objective, is `zooprobe.training.loop.run_loop`: torchrun,
the optimizer and its parameter groups, the schedule, clipping, divergence, resume, checkpoints,
TensorBoard, the log and the progress bar.

Adding an objective is one module in this package that defines an `Objective` subclass decorated with
``@register_objective("NAME")`` (and one import line in the package's ``__init__``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.training import distributed as D

STATE_FORMAT_VERSION = 1
"""The format of ``training_state.safetensors`` of a pretraining run (every objective)."""


@dataclass
class Step:
    """One training step's result (`Objective.train_step`).

    Attributes:
        loss: what this process backpropagates (under torchrun: its share of the global batch's loss).
        n: models in the global batch (the epoch's means weigh batches by it).
        values: called once the gradients are summed: the global batch's loss terms (``"loss"`` first),
            summed over the processes; each becomes ``train/NAME`` in TensorBoard and ``train_NAME`` in
            the epoch's record.
    """

    loss: torch.Tensor
    n: int
    values: Callable[[], dict[str, float]]


class Objective:
    """A pretraining objective; see the module docs. Constructed from the resolved `PretrainConfig`."""

    name: ClassVar[str] = ""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    # -------------------------------------------------------------------- before anything is written
    def check_state(self, path: Path, meta: dict[str, Any], output: Path) -> None:
        """Refuse a saved training state this objective cannot resume (before the configuration check)."""
        if meta.get("format_version") != STATE_FORMAT_VERSION:
            raise InvalidInputError(
                f"{path}: training state format {meta.get('format_version')!r} not supported"
            )

    def prepare(self, zoo: Any, saved: dict[str, Any] | None, progress: bool) -> None:
        """Read and check the models of `zoo` it trains and validates on (`saved`: the state's metadata
        when resuming, which holds what was fitted on the data before: normalizations, targets)."""
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        """What the encoder folder records of the data: ``zoo_split``, ``model_ids``, ``selection``..."""
        raise NotImplementedError

    def state_fields(self) -> dict[str, Any]:
        """JSON fields saved in the training state, read back by `prepare` on resume."""
        return {}

    # -------------------------------------------------------------------- training
    def build_model(self, fresh: bool) -> nn.Module:
        """The model to train, initialized from torch's (seeded) RNG; ``fresh``: not resumed (a resumed
        model's weights are loaded afterwards)."""
        raise NotImplementedError

    def encoder_module(self, model: nn.Module) -> nn.Module:
        """The part of `model` that is saved as the encoder (default: all of it)."""
        return model

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def batches(self, gen: torch.Generator) -> Iterable[Any]:
        """The epoch's batches (every process draws the same ones from `gen`)."""
        raise NotImplementedError

    def train_step(
        self, model: nn.Module, batch: Any, gen: torch.Generator, info: D.DistInfo, device: torch.device
    ) -> Step:
        raise NotImplementedError

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float] | None:
        """Validation loss terms (``"loss"`` first; the lowest ``loss`` picks the best epoch), or None when
        there is no validation data (the training loss picks it)."""
        raise NotImplementedError

    def save(self, model: nn.Module, folder: Path, provenance: dict[str, Any]) -> None:
        """Write the encoder (`encoder_module` of `model`) as an encoder folder."""
        raise NotImplementedError


ObjectiveClass = TypeVar("ObjectiveClass", bound=type[Objective])
OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(name: str) -> Callable[[ObjectiveClass], ObjectiveClass]:
    """Class decorator: register an `Objective` subclass under `name`."""

    def decorate(cls: ObjectiveClass) -> ObjectiveClass:
        if name in OBJECTIVES and OBJECTIVES[name] is not cls:
            raise ConfigError(f"register_objective: the objective {name!r} is already registered")
        cls.name = name
        OBJECTIVES[name] = cls
        return cls

    return decorate


def objective_for(name: str, cfg: Any) -> Objective:
    """The objective `name` built from `cfg`, or a one-line error listing the registered ones."""
    if name not in OBJECTIVES:
        raise ConfigError(f"no pretraining objective {name!r}; this zooprobe has {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](cfg)


def refuse_other_kind(meta: dict[str, Any], output: Path, kind: str) -> None:
    """`Objective.check_state` of the objectives that mark their state with ``architecture``: a state of
    another kind or format version is refused."""
    if meta.get("format_version") != STATE_FORMAT_VERSION or meta.get("architecture") != kind:
        raise ConfigError(
            f"{output} holds a pretraining run of another kind or version; use another output folder or "
            "--overwrite"
        )


def select_splits(zoo: Any, splits: list[str]) -> Any:
    """The final checkpoints of `splits` of `zoo` (reads only the ``split`` and ``is_final`` columns)."""
    unknown = [s for s in splits if s not in zoo.splits]
    if unknown:
        raise InvalidInputError(f"zoo {zoo.source!s} has no split(s) {unknown}; it has {zoo.splits}")
    rows = np.flatnonzero(zoo.metadata()["split"].isin(splits).to_numpy())
    return zoo.select(rows).final()


__all__ = [
    "OBJECTIVES",
    "STATE_FORMAT_VERSION",
    "Objective",
    "Step",
    "objective_for",
    "register_objective",
]
