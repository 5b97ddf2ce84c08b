"""What a state dict's names and shapes say about a network (`Architecture`: layer kinds, depth, widths,
input and output sizes, parameters, its task) and the architectures of a training zoo (`ArchitectureRange`):
the architecture check of the applicability domain (`zooprobe.heads.domain`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from zooprobe.core.state_dicts import RUNNING_STATS, is_weight_leaf, split_name
from zooprobe.errors import InvalidInputError

PARAMS_TOLERANCE = 2.0
"""A network's parameter count may lie this factor outside the training zoo's range."""


@dataclass(frozen=True)
class Architecture:
    """What a state dict's names and shapes say about the network (see the module docs)."""

    kinds: tuple[str, ...]
    depth: int
    widths: tuple[int, ...]
    """Output sizes of the main layers but the last (hidden widths, channels)."""
    input_size: int
    output_size: int
    n_params: int
    task: tuple[int, int, int] = (0, 0, 0)
    """What the network's first and last layers say about its task: (spatial dimensions of the first
    layer: 0 linear, 1 conv1d, 2 conv2d; its input features or channels; the output size)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kinds": list(self.kinds),
            "depth": self.depth,
            "widths": list(self.widths),
            "input_size": self.input_size,
            "output_size": self.output_size,
            "n_params": self.n_params,
            "task": list(self.task),
        }


def _main_kind(leaf: str, ndim: int) -> str | None:
    """The layer kind of a main layer's weight tensor (None: not a main layer's weight)."""
    if leaf.startswith(("weight_ih", "weight_hh")):
        return "recurrent"
    if leaf == "in_proj_weight" or (leaf.endswith("_proj_weight") and leaf[:1] in "qkv"):
        return "attention"
    if not is_weight_leaf(leaf) or ndim < 2:
        return None
    return "linear" if ndim == 2 else f"conv{ndim - 2}d"


def architecture(state_dict: Mapping[str, torch.Tensor]) -> Architecture:
    """The `Architecture` of a state dict (layer kinds, depth, widths, input/output size, parameters)."""
    kinds: set[str] = set()
    main: list[torch.Tensor] = []
    batchnorm_modules = {split_name(n)[0] for n in state_dict if n.endswith(RUNNING_STATS)}
    n_params = 0
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            continue
        module, leaf = split_name(name)
        if name.endswith(RUNNING_STATS):
            continue
        n_params += t.numel()
        kind = _main_kind(leaf, t.ndim)
        if kind is not None:
            kinds.add(kind)
            main.append(t)
        elif t.ndim == 1 and is_weight_leaf(leaf):  # the scale of a norm layer
            kinds.add("batchnorm" if module in batchnorm_modules else "norm")
        elif t.ndim != 1 or "bias" not in leaf:  # biases belong to their layer; anything else is unusual
            kinds.add("other")
    widths = tuple(int(t.shape[0]) for t in main[:-1])
    return Architecture(
        kinds=tuple(sorted(kinds)),
        depth=len(main),
        widths=widths,
        input_size=math.prod(main[0].shape[1:]) if main else 0,
        output_size=int(main[-1].shape[0]) if main else 0,
        n_params=int(n_params),
        task=(main[0].ndim - 2, int(main[0].shape[1]), int(main[-1].shape[0])) if main else (0, 0, 0),
    )


def _task_text(task: Sequence[int]) -> str:
    kind = {0: "linear", 1: "conv1d", 2: "conv2d"}.get(int(task[0]), f"conv{task[0]}d")
    unit = "features" if int(task[0]) == 0 else "channels"
    return f"{kind} input of {task[1]} {unit} -> {task[2]} outputs"


@dataclass
class ArchitectureRange:
    """The architectures of a training zoo: layer kinds seen and the range of each size."""

    kinds: tuple[str, ...]
    depth: tuple[int, int]
    widths: tuple[int, int] | None
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    n_params: tuple[int, int]
    tasks: tuple[tuple[int, int, int], ...] | None = None
    """The `Architecture.task` values of the training zoo, for heads whose target depends on the task
    (accuracy): a network whose input and output match none of them is outside. None: not checked."""

    @classmethod
    def fit(cls, archs: Sequence[Architecture], tasks: bool = False) -> ArchitectureRange:
        if not archs:
            raise InvalidInputError("the applicability domain needs at least one training model")
        widths = [w for a in archs for w in a.widths]

        def span(values: Sequence[int]) -> tuple[int, int]:
            return (int(min(values)), int(max(values)))

        return cls(
            kinds=tuple(sorted({k for a in archs for k in a.kinds})),
            depth=span([a.depth for a in archs]),
            widths=span(widths) if widths else None,
            input_size=span([a.input_size for a in archs]),
            output_size=span([a.output_size for a in archs]),
            n_params=span([a.n_params for a in archs]),
            tasks=tuple(sorted({tuple(a.task) for a in archs})) if tasks else None,  # type: ignore[misc]
        )

    def problems(self, arch: Architecture) -> list[str]:
        """Why `arch` is outside these architectures (empty: inside)."""
        out = []
        new = sorted(set(arch.kinds) - set(self.kinds))
        if new:
            out.append(
                f"layer kind(s) {', '.join(new)} never seen in the training zoo (it has "
                f"{', '.join(self.kinds)})"
            )

        def outside(what: str, value: int, span: tuple[int, int], unit: str = "") -> None:
            if not span[0] <= value <= span[1]:
                out.append(f"{what} {value}{unit} outside the training zoo's {span[0]}-{span[1]}")

        outside("depth", arch.depth, self.depth, " main layers")
        if arch.widths:
            if self.widths is None:
                out.append(f"hidden widths {_span_text(arch.widths)}, the training zoo's networks have none")
            elif min(arch.widths) < self.widths[0] or max(arch.widths) > self.widths[1]:
                out.append(
                    f"hidden widths {_span_text(arch.widths)} outside the training zoo's "
                    f"{self.widths[0]}-{self.widths[1]}"
                )
        outside("input size (fan-in of the first layer)", arch.input_size, self.input_size)
        outside("output size", arch.output_size, self.output_size)
        low, high = self.n_params[0] / PARAMS_TOLERANCE, self.n_params[1] * PARAMS_TOLERANCE
        if not low <= arch.n_params <= high:
            out.append(
                f"{arch.n_params:,} parameters, the training zoo has "
                f"{self.n_params[0]:,}-{self.n_params[1]:,}"
            )
        if self.tasks is not None and tuple(arch.task) not in self.tasks:
            shown = "; ".join(_task_text(t) for t in self.tasks[:6]) + (
                "; ..." if len(self.tasks) > 6 else ""
            )
            out.append(
                f"its {_task_text(arch.task)} matches no task of the training zoo ({shown}): the target "
                "depends on the task (its data), so this is an extrapolation to a task the head never saw"
            )
        return out

    def to_record(self) -> dict[str, Any]:
        return {
            "kinds": list(self.kinds),
            "depth": list(self.depth),
            "widths": None if self.widths is None else list(self.widths),
            "input_size": list(self.input_size),
            "output_size": list(self.output_size),
            "n_params": list(self.n_params),
            **({"tasks": [list(t) for t in self.tasks]} if self.tasks is not None else {}),
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> ArchitectureRange:
        def pair(value: Any) -> tuple[int, int]:
            low, high = value
            return (int(low), int(high))

        return cls(
            kinds=tuple(str(k) for k in data["kinds"]),
            depth=pair(data["depth"]),
            widths=None if data["widths"] is None else pair(data["widths"]),
            input_size=pair(data["input_size"]),
            output_size=pair(data["output_size"]),
            n_params=pair(data["n_params"]),
            tasks=(
                tuple((int(t[0]), int(t[1]), int(t[2])) for t in data["tasks"])
                if data.get("tasks") is not None
                else None
            ),
        )


def _span_text(values: Sequence[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


__all__ = ["PARAMS_TOLERANCE", "Architecture", "ArchitectureRange", "architecture"]
