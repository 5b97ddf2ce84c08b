"""The token layout: decide, from names, shapes and dtypes only, how each tensor of a state dict maps onto
the columns of its layer's rows (the plan `WeightTokenizer.tokenize` fills); module kinds of a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from zooprobe.core.state_dicts import BATCHNORM_MARKERS, is_weight_leaf, split_name
from zooprobe.tokens.tokenizer_config import (
    _BN_FLOAT_ROLES,
    MODULE_KINDS,
    TokenizerConfig,
    TokenizerError,
    _dtype_str,
)

# ----------------------------------------------------------------------------------------------------------
# planning: decide, from names/shapes/dtypes only, how each tensor maps onto token columns


@dataclass(frozen=True)
class _Member:
    """One tensor's place in a layer matrix: columns [start, start + width) of every row."""

    name: str
    role: str
    kind: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    start: int
    width: int
    transpose: bool = False


@dataclass
class _LayerPlan:
    label: str
    prefix: str
    kind: str
    rows: int
    members: list[_Member] = field(default_factory=list)

    @property
    def cols(self) -> int:
        return sum(m.width for m in self.members)


@dataclass
class _Plan:
    layers: list[_LayerPlan]
    passthrough: list[str]
    skipped: list[tuple[str, str]]
    order: list[str]


def _looks_like_embedding(prefix: str) -> bool:
    last = split_name(prefix)[1].lower()
    return "emb" in last or last in ("wte", "wpe")


def _looks_like_batchnorm(prefix: str) -> bool:
    last = split_name(prefix)[1].lower()
    return last.startswith("bn") or "batchnorm" in last or "batch_norm" in last


def _prod(values: Iterable[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


@dataclass
class _Group:
    """One module's tensors while they are planned: its prefix, leaf -> tensor name, the state dict, the
    plan being built, the names already placed and the module kind hint (if any)."""

    prefix: str
    leaves: dict[str, str]
    sd: Mapping[str, torch.Tensor]
    plan: _Plan
    used: set[str]
    hint: str | None


def _vector_layer(
    prefix: str, kind: str, rows: int, names: list[str], sd: Mapping[str, torch.Tensor]
) -> _LayerPlan:
    """A normalization layer (``kind`` "bn" or "ln"): each of its vectors ``names`` one column of its rows."""
    layer = _LayerPlan(label=prefix, prefix=prefix, kind=kind, rows=rows)
    for name in names:
        tensor = sd[name]
        role = split_name(name)[1]
        layer.members.append(
            _Member(name, role, f"{kind}.{role}", tuple(tensor.shape), tensor.dtype, layer.cols, 1)
        )
    return layer


class _Planner:
    """Builds a `_Plan` for one state dict; kept separate from data movement so fitting can reuse it."""

    def __init__(self, config: TokenizerConfig, module_kinds: Mapping[str, str] | None) -> None:
        self.config = config
        self.hints = dict(module_kinds or {})
        for prefix, kind in self.hints.items():
            if kind not in MODULE_KINDS:
                raise TokenizerError(
                    f"module_kinds[{prefix!r}] = {kind!r}: expected one of {list(MODULE_KINDS)}"
                )

    def plan(self, state_dict: Mapping[str, torch.Tensor]) -> _Plan:
        groups: dict[str, list[str]] = {}
        for name, tensor in state_dict.items():
            if not isinstance(name, str):
                raise TokenizerError(f"state dict key {name!r} is not a string")
            if not isinstance(tensor, torch.Tensor):
                raise TokenizerError(f"state dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
            if tensor.is_complex():
                raise TokenizerError(
                    f"tensor {name!r} is complex ({_dtype_str(tensor.dtype)}); not supported"
                )
            if tensor.dtype == torch.float64 and not self.config.cast_float64:
                raise TokenizerError(
                    f"tensor {name!r} is float64: tokens are float32, so the round trip would be lossy; "
                    "convert the state dict to float32 or pass TokenizerConfig(cast_float64=True)"
                )
            groups.setdefault(split_name(name)[0], []).append(name)
        plan = _Plan(layers=[], passthrough=[], skipped=[], order=[])
        for prefix, names in groups.items():
            self._plan_group(prefix, names, state_dict, plan)
        skipped = {name for name, _ in plan.skipped}
        plan.order = [name for name in state_dict if name not in skipped]
        return plan

    def _plan_group(self, prefix: str, names: list[str], sd: Mapping[str, torch.Tensor], plan: _Plan) -> None:
        leaves = {split_name(name)[1]: name for name in names}
        used: set[str] = set()
        hint = self.hints.get(prefix)
        group = _Group(prefix, leaves, sd, plan, used, hint)
        # 1. batch norm (or anything with running statistics)
        looks_bn = hint == "bn" or any(m in leaves for m in BATCHNORM_MARKERS)
        if not looks_bn and hint is None and "weight" in leaves and _looks_like_batchnorm(prefix):
            looks_bn = sd[leaves["weight"]].ndim == 1
        if looks_bn:
            self._plan_batchnorm(group)
        # 2. layer/group norm: 1-D weight (and bias of the same shape)
        weight = sd.get(leaves.get("weight", ""))
        if (
            "weight" in leaves
            and leaves["weight"] not in used
            and weight is not None
            and weight.is_floating_point()
            and (weight.ndim == 1 or (hint == "ln" and weight.ndim >= 1))
        ):
            self._plan_norm(group)
        # 3. weight matrices (linear, conv, embedding, in_proj_weight, weight_ih_l0, ...) with their biases
        for leaf, name in leaves.items():
            tensor = sd[name]
            if name in used or not is_weight_leaf(leaf) or not tensor.is_floating_point() or tensor.ndim < 2:
                continue
            self._plan_matrix(group, leaf)
        # 4. everything else: unknown policy
        for name in names:
            if name not in used:
                self._plan_unknown(prefix, name, names, sd[name], plan)

    def _plan_batchnorm(self, group: _Group) -> None:
        prefix, leaves, sd, plan, used = group.prefix, group.leaves, group.sd, group.plan, group.used
        float_names = [leaves[r] for r in leaves if r in _BN_FLOAT_ROLES]
        tensors = [sd[n] for n in float_names]
        sizes = {t.shape[0] if t.ndim == 1 else -1 for t in tensors}
        if not all(t.is_floating_point() for t in tensors) or len(sizes) > 1 or -1 in sizes:
            return  # inconsistent: leave all of it to the unknown policy rather than guess
        counter = leaves.get("num_batches_tracked")
        if counter is not None:
            value = sd[counter]
            if value.is_floating_point() or value.is_complex() or value.numel() != 1:
                return
        if tensors:
            plan.layers.append(_vector_layer(prefix, "bn", tensors[0].shape[0], float_names, sd))
        used.update(float_names)
        if counter is not None:
            plan.passthrough.append(counter)
            used.add(counter)

    def _plan_norm(self, group: _Group) -> None:
        prefix, leaves, sd, plan, used = group.prefix, group.leaves, group.sd, group.plan, group.used
        weight = sd[leaves["weight"]]
        names = [leaves["weight"]]
        bias_name = leaves.get("bias")
        if bias_name is not None:
            bias = sd[bias_name]
            if bias.is_floating_point() and bias.shape == weight.shape:
                names.append(bias_name)
        # Keep state-dict order between weight and bias (it is the column order).
        names.sort(key=list(leaves.values()).index)
        plan.layers.append(_vector_layer(prefix, "ln", weight.numel(), names, sd))
        used.update(names)

    def _plan_matrix(self, group: _Group, leaf: str) -> None:
        prefix, leaves, sd, plan, used = group.prefix, group.leaves, group.sd, group.plan, group.used
        hint = group.hint
        name = leaves[leaf]
        weight = sd[name]
        shape = tuple(weight.shape)
        bias_name = leaves.get(leaf.replace("weight", "bias", 1))
        bias = sd[bias_name] if bias_name is not None and bias_name not in used else None
        if bias is not None and (not bias.is_floating_point() or bias.ndim != 1):
            bias, bias_name = None, None
        transpose = False
        if weight.ndim >= 3:
            if hint == "conv_transpose":
                transpose = bias is None or bias.shape[0] == shape[1]
            elif hint is None and bias is not None:
                transpose = bias.shape[0] == shape[1] and bias.shape[0] != shape[0]
        rows = shape[1] if transpose else shape[0]
        if bias is not None and bias.shape[0] != rows:
            bias, bias_name = None, None  # mismatched bias: not this matrix's; the unknown policy decides
        width = shape[0] * _prod(shape[2:]) if transpose else _prod(shape[1:])
        if weight.ndim == 2:
            is_embedding = hint == "embedding" or (
                hint is None and bias is None and _looks_like_embedding(prefix)
            )
            layer_kind, weight_kind = (
                ("embedding", "embedding.weight") if is_embedding else ("linear", "linear.weight")
            )
        else:
            layer_kind, weight_kind = ("conv_transpose" if transpose else "conv"), "conv.weight"
        label = prefix if leaf == "weight" else (f"{prefix}.{leaf}" if prefix else leaf)
        layer = _LayerPlan(label=label, prefix=prefix, kind=layer_kind, rows=rows)
        layer.members.append(_Member(name, leaf, weight_kind, shape, weight.dtype, 0, width, transpose))
        used.add(name)
        if bias is not None and bias_name is not None:
            role = split_name(bias_name)[1]
            layer.members.append(_Member(bias_name, role, "bias", tuple(bias.shape), bias.dtype, width, 1))
            used.add(bias_name)
        plan.layers.append(layer)

    def _plan_unknown(
        self, prefix: str, name: str, group: list[str], tensor: torch.Tensor, plan: _Plan
    ) -> None:
        policy = self.config.unknown
        desc = f"tensor {name!r} (shape {tuple(tensor.shape)}, {_dtype_str(tensor.dtype)})"
        module = f"module {prefix!r}" if prefix else "the top level"
        members = [split_name(n)[1] for n in group]
        if not tensor.is_floating_point() or tensor.ndim == 0:
            what = "a scalar" if tensor.is_floating_point() else "a non-float buffer"
            if policy == "error":
                raise TokenizerError(
                    f"{desc} is {what} in {module} (members {members}) that no tokenization rule covers; "
                    "pass TokenizerConfig(unknown='skip') or unknown='rows' to keep it as a passthrough "
                    "value (stored in the layout and restored exactly)"
                )
            plan.passthrough.append(name)
            return
        if policy == "error":
            raise TokenizerError(
                f"{desc} in {module} (members {members}) is not recognised as part of a Linear, Conv, "
                "BatchNorm, LayerNorm/GroupNorm or Embedding layer; pass TokenizerConfig(unknown='rows') to "
                "tokenize it as rows of dim 0, or unknown='skip' to leave it out (it is then listed in "
                "TokenizedModel.skipped)"
            )
        if policy == "skip":
            plan.skipped.append((name, f"unrecognised in {module}"))
            return
        shape = tuple(tensor.shape)
        layer = _LayerPlan(label=name, prefix=prefix, kind="unknown", rows=shape[0])
        layer.members.append(
            _Member(name, split_name(name)[1], "unknown", shape, tensor.dtype, 0, _prod(shape[1:]))
        )
        plan.layers.append(layer)


def module_kinds_from_model(model: torch.nn.Module) -> dict[str, str]:
    """Map each module prefix of `model` to the kind name `WeightTokenizer.tokenize` accepts as a hint.

    A state dict alone cannot tell a bias-free Linear from an Embedding, or a BatchNorm without running
    statistics from a LayerNorm; the tokens are the same either way, but the normalization *kind* keys
    differ. Passing these hints (when the module is at hand) makes the kinds exact instead of guessed from
    names.
    """

    kinds: dict[str, str] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Embedding | nn.EmbeddingBag):
            kinds[prefix] = "embedding"
        elif isinstance(module, nn.Linear | nn.Bilinear):
            kinds[prefix] = "linear"
        elif isinstance(module, _ConvTransposeNd):
            kinds[prefix] = "conv_transpose"
        elif isinstance(module, _ConvNd):
            kinds[prefix] = "conv"
        elif isinstance(module, _NormBase):
            kinds[prefix] = "bn"
        elif isinstance(module, nn.LayerNorm | nn.GroupNorm | nn.RMSNorm):
            kinds[prefix] = "ln"
    return kinds
