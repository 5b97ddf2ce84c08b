"""Names in a state dict: the one home of the conventions every reader of weights relies on.

A state dict entry is ``MODULE.LEAF`` (``layers.0.linear.weight``: module ``layers.0.linear``, leaf
``weight``). Leaves name tensor roles the way PyTorch modules do:

- ``weight`` (and ``*_weight`` / ``weight_*``: ``in_proj_weight``, ``weight_ih_l0``): a weight; with >= 2
  dimensions the matrix of a linear, convolution or embedding layer, with 1 the scale of a norm layer;
- ``bias`` (``in_proj_bias``, ...): its bias (`bias_name`);
- ``running_mean``, ``running_var``, ``num_batches_tracked``: BatchNorm statistics (`RUNNING_STATS`,
  `BATCHNORM_MARKERS`), activation statistics rather than learned parameters.

The tokenizer (layers and their members), the weight statistics (layer roles), the function-preserving
permutations (module leaves) and the checkpoint reader (canonical order) all use these helpers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

DEFAULT_MAX_PARAMS = 2**31
"""Default limit on the number of values in one checkpoint (8 GiB of float32); `zooprobe.core.checkpoints`
enforces it. Here so that the command line shows it without importing torch."""

RUNNING_STATS = ("running_mean", "running_var")
"""BatchNorm's running statistics: activation statistics, not parameters."""
BATCHNORM_MARKERS = ("running_mean", "running_var", "num_batches_tracked")
"""Leaves only BatchNorm-like modules have."""
LEAF_ORDER = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3, "num_batches_tracked": 4}
"""The order PyTorch modules register their leaves in (for files that record no order)."""


def split_name(name: str) -> tuple[str, str]:
    """``(module, leaf)`` of a state dict key (``("", name)`` for a key without a dot)."""
    module, _, leaf = name.rpartition(".")
    return module, leaf


def is_weight_leaf(leaf: str) -> bool:
    """True for ``weight`` and the weight leaves of fused modules (``in_proj_weight``, ``weight_ih_l0``)."""
    return leaf == "weight" or leaf.endswith("_weight") or leaf.startswith("weight_")


def is_running_stat(name: str) -> bool:
    """True for a BatchNorm running mean or variance (an activation statistic, not a parameter)."""
    return name.endswith(RUNNING_STATS)


def bias_name(weight_name: str) -> str | None:
    """The bias key that belongs to a weight key (``fc.weight`` -> ``fc.bias``, ``in_proj_weight`` ->
    ``in_proj_bias``), or None when the name is not a weight's."""
    if weight_name.endswith("weight"):
        return weight_name[: -len("weight")] + "bias"
    return None


def module_leaves(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """``module -> {leaf: name}`` for the keys `names`, modules in first-seen order."""
    modules: dict[str, dict[str, str]] = {}
    for name in names:
        module, leaf = split_name(name)
        modules.setdefault(module, {})[leaf] = name
    return modules


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p)


def canonical_key(name: str) -> tuple[Any, ...]:
    """Sort key of the usual PyTorch order: modules in natural name order (``layers.2`` before
    ``layers.10``), inside a module ``weight, bias, running_mean, running_var, num_batches_tracked``."""
    module, leaf = split_name(name)
    return (_natural(module), LEAF_ORDER.get(leaf, len(LEAF_ORDER)), _natural(leaf))


__all__ = [
    "BATCHNORM_MARKERS",
    "DEFAULT_MAX_PARAMS",
    "LEAF_ORDER",
    "RUNNING_STATS",
    "bias_name",
    "canonical_key",
    "is_running_stat",
    "is_weight_leaf",
    "module_leaves",
    "split_name",
]
