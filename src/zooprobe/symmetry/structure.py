"""The hidden units of a network read off its state dict: which tensors produce each unit, which read it.

Every function-preserving transform in `zooprobe.symmetry` acts on *hidden units* (neurons of a dense layer,
channels of a convolution). A unit is produced by a row of its layer's weight, its bias entry and its entries
in the norm layers after it (BatchNorm: affine parameters and running statistics; LayerNorm/GroupNorm: affine
parameters), and read by a column (a block of ``span`` columns after a CNN's flatten) of the next layer's
weight. `network` finds these for three layouts:

- zooprobe MLPs: ``layers.{i}.linear``, ``layers.{i}.bn``, ``layers.{i}.ln``, ``layers.{i}.gn``, ``head``;
- zooprobe CNNs: ``blocks.{i}.conv``, ``blocks.{i}.bn``, ``blocks.{i}.gn``, ``hidden.linear`` (and its
  norms), ``head``; the flatten into ``hidden.linear`` gives each channel ``in_features / channels``
  consecutive columns;
- plain ``nn.Sequential`` MLPs (``0.weight``, ``1.running_mean``, ..., optionally under one prefix such as
  ``net.``): a 2-D weight is a linear layer, a module with running statistics a BatchNorm, another 1-D weight
  a LayerNorm; the last linear layer is the output.

Residual connections (``x + block(x)``) cannot be seen in the weights, so the `Architecture` says whether
there are any: joined layers share their units (one *group*), and every transform treats a group as one
layer. Anything else (other names, extra tensors, inconsistent shapes) is a `SymmetryError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

from zooprobe.errors import InvalidInputError

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "gelu", "sigmoid", "silu", "elu")
"""Activations the transforms know (zooprobe's generator uses these); ``None``: unknown."""
ZERO_AT_ZERO = ("relu", "leaky_relu", "tanh", "gelu", "silu", "elu")
"""Activations with ``f(0) = 0``: a unit whose input is always 0 then outputs 0 (it is dead)."""
POOLINGS = ("avg", "max", "none", "stride")

NormKind = Literal["batch", "layer", "group"]


class SymmetryError(InvalidInputError):
    """A transform does not apply to this network (layout, activation, norm layers) or got a bad argument."""


@dataclass(frozen=True)
class Architecture:
    """What a transform needs to know beyond the weights: the activation between layers, residual
    connections, and (CNNs) how the resolution is halved."""

    activation: str | None = None
    """Elementwise activation of every hidden layer (`ACTIVATIONS`); None when unknown."""
    residual: bool = False
    """Residual connections join consecutive layers of equal shape (zooprobe: MLP layers 1..depth-1, CNN
    blocks 1..depth-1 that are not strided)."""
    pooling: str = "avg"
    """CNNs: avg, max, none or stride; max pooling does not commute with a sign flip."""
    strided_blocks: tuple[int, ...] = ()
    """CNN blocks whose convolution has stride 2 (no residual connection around them)."""

    def __post_init__(self) -> None:
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise SymmetryError(
                f"unknown activation {self.activation!r}; known: {', '.join(ACTIVATIONS)} (or None)"
            )
        if self.pooling not in POOLINGS:
            raise SymmetryError(f"unknown pooling {self.pooling!r}; known: {', '.join(POOLINGS)}")


@dataclass(frozen=True)
class Norm:
    """A norm layer after a hidden layer: its kind and ``leaf -> state dict key``."""

    kind: NormKind
    leaves: dict[str, str]

    @property
    def per_unit(self) -> tuple[str, ...]:
        """Keys of its per-unit tensors (everything but ``num_batches_tracked``)."""
        return tuple(k for leaf, k in self.leaves.items() if leaf != "num_batches_tracked")


@dataclass(frozen=True)
class Layer:
    """A hidden layer: the weight whose rows make its units, their bias, the norm layers after it (in order)
    and the weight that reads its output (columns; ``span`` consecutive columns per unit)."""

    module: str
    weight: str
    bias: str | None
    norms: tuple[Norm, ...]
    width: int
    consumer: str
    span: int = 1

    @property
    def per_unit_norm(self) -> bool:
        """True when no norm layer mixes units (LayerNorm/GroupNorm normalize across them)."""
        return all(n.kind == "batch" for n in self.norms)


@dataclass(frozen=True)
class Network:
    """The hidden layers of a state dict and which of them share units (residual groups)."""

    layout: Literal["mlp", "cnn", "sequential"]
    layers: tuple[Layer, ...]
    groups: tuple[tuple[int, ...], ...]
    architecture: Architecture = field(default_factory=Architecture)

    def group_layers(self, g: int) -> list[Layer]:
        return [self.layers[i] for i in self.groups[g]]


_MLP_KEY = re.compile(r"^layers\.(\d+)\.(linear|bn|ln|gn)\.(\w+)$")
_CNN_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(conv|bn|gn)\.(\w+)$")
_CNN_HIDDEN_KEY = re.compile(r"^hidden\.(linear|bn|ln|gn)\.(\w+)$")
_HEAD_KEY = re.compile(r"^head\.(weight|bias)$")
_SEQ_KEY = re.compile(r"^(.*?)(\d+)\.(\w+)$")
_NORM_KINDS: dict[str, NormKind] = {"bn": "batch", "ln": "layer", "gn": "group"}
_BN_LEAVES = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
_AFFINE_LEAVES = {"weight", "bias"}


def _fail(message: str) -> SymmetryError:
    return SymmetryError(message)


def _check_norm(sd: Mapping[str, torch.Tensor], norm: Norm, width: int, where: str) -> None:
    allowed = _BN_LEAVES if norm.kind == "batch" else _AFFINE_LEAVES
    extra = set(norm.leaves) - allowed
    if extra:
        raise _fail(f"{where}: unexpected tensors {sorted(extra)} in a {norm.kind} norm layer")
    for key in norm.per_unit:
        if tuple(sd[key].shape) != (width,):
            raise _fail(f"{where}: {key} has shape {tuple(sd[key].shape)}, expected ({width},)")


def _layer(
    sd: Mapping[str, torch.Tensor],
    module: str,
    leaves: dict[str, str],
    norms: list[Norm],
    consumer: str,
    ndims: tuple[int, ...],
) -> Layer:
    if "weight" not in leaves or set(leaves) - _AFFINE_LEAVES:
        raise _fail(f"{module}: expected weight and bias, got {sorted(leaves)}")
    weight = sd[leaves["weight"]]
    if weight.ndim not in ndims:
        raise _fail(f"{module}: weight has {weight.ndim} dimensions, expected {' or '.join(map(str, ndims))}")
    width = int(weight.shape[0])
    bias = leaves.get("bias")
    if bias is not None and tuple(sd[bias].shape) != (width,):
        raise _fail(f"{module}: bias shape {tuple(sd[bias].shape)} does not match {width} units")
    for norm in norms:
        _check_norm(sd, norm, width, module)
    reader = sd[consumer]
    if reader.ndim < 2 or reader.shape[1] % width or reader.shape[1] == 0:
        raise _fail(
            f"{consumer}: {reader.shape[1] if reader.ndim > 1 else 0} inputs cannot read {width} units"
        )
    span = int(reader.shape[1]) // width
    if span != 1 and not (weight.ndim > 2 and reader.ndim == 2):
        raise _fail(f"{consumer}: {reader.shape[1]} inputs, but {module} has {width} units")
    return Layer(module, leaves["weight"], bias, tuple(norms), width, consumer, span)


def _modules(
    sd: Mapping[str, torch.Tensor], pattern: re.Pattern[str]
) -> dict[tuple[str, ...], dict[str, str]]:
    out: dict[tuple[str, ...], dict[str, str]] = {}
    for name in sd:
        m = pattern.match(name)
        if m:
            *module, leaf = m.groups()
            out.setdefault(tuple(module), {})[leaf] = name
    return out


def _head(sd: Mapping[str, torch.Tensor]) -> str:
    if "head.weight" not in sd or sd["head.weight"].ndim != 2:
        raise _fail("no 2-D head.weight: not a zooprobe MLP or CNN")
    return "head.weight"


def _norms(mods: Mapping[tuple[str, ...], dict[str, str]], prefix: tuple[str, ...]) -> list[Norm]:
    return [Norm(_NORM_KINDS[k], mods[(*prefix, k)]) for k in ("bn", "ln", "gn") if (*prefix, k) in mods]


def _tied(n: int, joined: list[bool]) -> tuple[tuple[int, ...], ...]:
    """Groups of layers ``0..n-1`` where ``joined[i]`` ties layer i to layer i-1."""
    groups: list[list[int]] = []
    for i in range(n):
        if i > 0 and joined[i]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return tuple(tuple(g) for g in groups)


def _mlp(sd: Mapping[str, torch.Tensor], arch: Architecture) -> Network:
    mods = _modules(sd, _MLP_KEY)
    head = _head(sd)
    depth = 1 + max(int(i) for i, _ in mods)
    if any((str(i), "linear") not in mods for i in range(depth)):
        raise _fail("layers.{i}.linear missing for some i: not a zooprobe MLP")
    layers = []
    for i in range(depth):
        consumer = f"layers.{i + 1}.linear.weight" if i + 1 < depth else head
        layers.append(
            _layer(
                sd, f"layers.{i}.linear", mods[(str(i), "linear")], _norms(mods, (str(i),)), consumer, (2,)
            )
        )
    widths = {layer.width for layer in layers}
    if arch.residual and len(widths) > 1:
        raise _fail(f"residual connections need equal widths, got {sorted(widths)}")
    return Network("mlp", tuple(layers), _tied(depth, [arch.residual] * depth), arch)


def _cnn(sd: Mapping[str, torch.Tensor], arch: Architecture) -> Network:
    blocks = _modules(sd, _CNN_BLOCK_KEY)
    hidden = _modules(sd, _CNN_HIDDEN_KEY)
    head = _head(sd)
    depth = 1 + max(int(i) for i, _ in blocks)
    if any((str(i), "conv") not in blocks for i in range(depth)) or ("linear",) not in hidden:
        raise _fail("blocks.{i}.conv or hidden.linear missing: not a zooprobe CNN")
    layers = []
    for i in range(depth):
        consumer = f"blocks.{i + 1}.conv.weight" if i + 1 < depth else "hidden.linear.weight"
        layers.append(
            _layer(
                sd, f"blocks.{i}.conv", blocks[(str(i), "conv")], _norms(blocks, (str(i),)), consumer, (3, 4)
            )
        )
    layers.append(_layer(sd, "hidden.linear", hidden[("linear",)], _norms(hidden, ()), head, (2,)))
    joined = [arch.residual and i not in arch.strided_blocks for i in range(depth)] + [False]
    if arch.residual and len({layer.width for layer in layers[:depth]}) > 1:
        raise _fail("residual connections need equal channels in every block")
    return Network("cnn", tuple(layers), _tied(depth + 1, joined), arch)


def _sequential(sd: Mapping[str, torch.Tensor], arch: Architecture) -> Network:
    prefixes = set()
    mods: dict[int, dict[str, str]] = {}
    for name in sd:
        m = _SEQ_KEY.match(name)
        if m is None:
            raise _fail(f"{name!r}: not a zooprobe MLP/CNN or an nn.Sequential key (INDEX.LEAF)")
        prefixes.add(m.group(1))
        mods.setdefault(int(m.group(2)), {})[m.group(3)] = name
    if len(prefixes) != 1:
        raise _fail(f"keys under several prefixes {sorted(prefixes)}: not one nn.Sequential")
    if arch.residual:
        raise _fail("an nn.Sequential has no residual connections")
    linears: list[tuple[int, dict[str, str], list[Norm]]] = []
    for index in sorted(mods):
        leaves = mods[index]
        weight = sd.get(leaves.get("weight", ""))
        if "running_mean" in leaves or "running_var" in leaves:
            kind: NormKind | None = "batch"
        elif weight is not None and weight.ndim == 1:
            kind = "layer"
        elif weight is not None and weight.ndim == 2:
            kind = None
        else:
            raise _fail(
                f"module {index} ({sorted(leaves)}): only Linear, BatchNorm and LayerNorm are supported"
            )
        if kind is None:
            linears.append((index, leaves, []))
        elif not linears:
            raise _fail(f"module {index}: a norm layer before the first linear layer")
        else:
            linears[-1][2].append(Norm(kind, leaves))
    if len(linears) < 2:
        raise _fail("an nn.Sequential with fewer than two linear layers has no hidden units")
    if linears[-1][2]:
        raise _fail("a norm layer after the output layer")
    layers = [
        _layer(sd, str(index), leaves, norms, linears[k + 1][1]["weight"], (2,))
        for k, (index, leaves, norms) in enumerate(linears[:-1])
    ]
    return Network("sequential", tuple(layers), tuple((i,) for i in range(len(layers))), arch)


def network(state_dict: Mapping[str, torch.Tensor], architecture: Architecture | None = None) -> Network:
    """The hidden layers of `state_dict` (module docs); a `SymmetryError` saying why when it is none of
    the supported layouts."""
    arch = architecture or Architecture()
    names = list(state_dict)
    if not names:
        raise _fail("an empty state dict")
    if not all(isinstance(state_dict[n], torch.Tensor) for n in names):
        raise _fail("a state dict of tensors expected")
    if all(_MLP_KEY.match(n) or _HEAD_KEY.match(n) for n in names) and any(
        n.startswith("layers.") for n in names
    ):
        net = _mlp(state_dict, arch)
    elif all(
        _CNN_BLOCK_KEY.match(n) or _CNN_HIDDEN_KEY.match(n) or _HEAD_KEY.match(n) for n in names
    ) and any(n.startswith("blocks.") for n in names):
        net = _cnn(state_dict, arch)
    else:
        net = _sequential(state_dict, arch)
    for layer in net.layers:
        if not state_dict[layer.weight].is_floating_point():
            raise _fail(f"{layer.weight}: not a floating-point tensor")
    return net


__all__ = [
    "ACTIVATIONS",
    "ZERO_AT_ZERO",
    "Architecture",
    "Layer",
    "Network",
    "Norm",
    "SymmetryError",
    "network",
]
