"""Exact function-preserving transforms of a network's state dict (its `Architecture` says what the weights
cannot: activation, residual connections, pooling).

- `rescale` (ReLU, leaky ReLU): each hidden unit's output times ``c > 0`` (log-uniform in ``[low, high]``),
  its readers' columns times ``1 / c``;
- `flip_signs` (tanh; not through max pooling): random units' outputs negated, and their readers' columns;
- `widen` (any activation; no LayerNorm/GroupNorm): every hidden unit duplicated ``factor`` times, its
  outgoing weights divided by ``factor``;
- `pad_dead` (no LayerNorm/GroupNorm): ``count`` dead units added to every hidden layer (zero weights in and
  out; BatchNorm scale 0);
- `fold_batchnorm`: each BatchNorm (eval mode) directly after a linear/conv layer folded into it.

Neuron permutations are `zooprobe.encoder.augment.permute_neurons` (pretraining's augmentation). A transform
that does not apply raises `SymmetryError` with the reason. Joined layers (residual connections) get the
same scales, duplicates and padding, so the identity skip stays exact. Results are new dicts: same key
order, untouched tensors shared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from zooprobe.symmetry.structure import Architecture, Network, SymmetryError, network
from zooprobe.symmetry.units import remap_units, scale_units

POSITIVELY_HOMOGENEOUS = ("relu", "leaky_relu")
ODD = ("tanh",)


def _net(state_dict: Mapping[str, torch.Tensor], architecture: Architecture | None, what: str) -> Network:
    if architecture is None:
        raise SymmetryError(f"{what}: needs the network's Architecture (activation, residual connections)")
    try:
        return network(state_dict, architecture)
    except SymmetryError as e:
        raise SymmetryError(f"{what}: {e}") from None


def _need_activation(arch: Architecture, allowed: tuple[str, ...], what: str, why: str) -> None:
    if arch.activation not in allowed:
        raise SymmetryError(
            f"{what}: not function-preserving through {arch.activation or 'an unknown activation'} "
            f"({why}; applies to {', '.join(allowed)})"
        )


def _need_per_unit_norms(net: Network, what: str) -> None:
    for layer in net.layers:
        if not layer.per_unit_norm:
            kinds = ", ".join(sorted({n.kind for n in layer.norms if n.kind != "batch"}))
            raise SymmetryError(
                f"{what}: {layer.module} is followed by {kinds} norm, which normalizes across units, so "
                "adding units changes its statistics"
            )


def rescale(
    state_dict: Mapping[str, torch.Tensor],
    architecture: Architecture | None,
    generator: torch.Generator | None = None,
    low: float = 0.5,
    high: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Positive per-unit rescaling: ``relu(c z) = c relu(z)`` for ``c > 0``, so each unit's output is scaled
    by ``c`` (log-uniform in ``[low, high]``) and its outgoing weights by ``1 / c``."""
    net = _net(state_dict, architecture, "rescale")
    _need_activation(net.architecture, POSITIVELY_HOMOGENEOUS, "rescale", "f(c z) = c f(z) for c > 0 fails")
    if not 0 < low <= high:
        raise SymmetryError(f"rescale: need 0 < low <= high, got low={low}, high={high}")
    out = dict(state_dict)
    for g in range(len(net.groups)):
        n = net.group_layers(g)[0].width
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        c = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        out = scale_units(out, net, g, c)
    return out


def flip_signs(
    state_dict: Mapping[str, torch.Tensor],
    architecture: Architecture | None,
    generator: torch.Generator | None = None,
    p: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Sign flips: ``tanh(-z) = -tanh(z)``, so negating a unit's output (its last affine map) and its outgoing
    weights preserves the function. Each unit flips with probability ``p`` (at least one unit per layer)."""
    net = _net(state_dict, architecture, "flip_signs")
    _need_activation(net.architecture, ODD, "flip_signs", "f(-z) = -f(z) fails")
    if net.layout == "cnn" and net.architecture.pooling == "max":
        raise SymmetryError("flip_signs: max pooling does not commute with a sign flip (max(-x) != -max(x))")
    out = dict(state_dict)
    for g in range(len(net.groups)):
        n = net.group_layers(g)[0].width
        flip = torch.rand(n, generator=generator) < p
        if not bool(flip.any()):
            flip[int(torch.randint(n, (1,), generator=generator))] = True
        out = scale_units(out, net, g, torch.where(flip, -1.0, 1.0).double())
    return out


def _add_units(
    state_dict: Mapping[str, torch.Tensor],
    architecture: Architecture | None,
    what: str,
    name: str,
    value: int,
    maps: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """What `widen` and `pad_dead` share: ``value`` (their ``name`` argument) must be a positive integer,
    no norm may normalize across units, and each group of ``n`` hidden units is remapped by ``maps(n)``
    (`remap_units`'s rows and columns)."""
    net = _net(state_dict, architecture, what)
    if int(value) != value or value < 1:
        raise SymmetryError(f"{what}: {name} must be a positive integer, got {value}")
    _need_per_unit_norms(net, what)
    out = dict(state_dict)
    for g in range(len(net.groups)):
        rows, cols = maps(net.group_layers(g)[0].width)
        out = remap_units(out, net, g, rows, cols)
    return out


def widen(
    state_dict: Mapping[str, torch.Tensor], architecture: Architecture | None, factor: int = 2
) -> dict[str, torch.Tensor]:
    """k-fold widening: every hidden unit appears ``factor`` times (copies of unit ``i`` at ``i + j n``) and
    each copy's outgoing weights are divided by ``factor``, for any elementwise activation."""

    def maps(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.arange(n).repeat(factor), torch.eye(n, dtype=torch.float64).repeat(1, factor) / factor

    return _add_units(state_dict, architecture, "widen", "factor", factor, maps)


def pad_dead(
    state_dict: Mapping[str, torch.Tensor], architecture: Architecture | None, count: int = 1
) -> dict[str, torch.Tensor]:
    """Dead-neuron padding: ``count`` units appended to every hidden layer with zero incoming weights and
    bias (BatchNorm: scale and shift 0, mean 0, variance 1) and zero outgoing weights."""

    def maps(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.cat([torch.arange(n), torch.full((count,), -1)])
        cols = torch.cat([torch.eye(n, dtype=torch.float64), torch.zeros(n, count, dtype=torch.float64)], 1)
        return rows, cols

    return _add_units(state_dict, architecture, "pad_dead", "count", count, maps)


def fold_batchnorm(
    state_dict: Mapping[str, torch.Tensor], architecture: Architecture | None = None, eps: float = 1e-5
) -> dict[str, torch.Tensor]:
    """BatchNorm folding (eval mode): ``W' = s W``, ``b' = s (b - mean) + beta`` with
    ``s = gamma / sqrt(var + eps)``, and the BatchNorm's tensors removed. A layer without a bias gets one
    (``<module>.bias``, after its weight). ``eps`` is PyTorch's default."""
    net = _net(state_dict, architecture or Architecture(), "fold_batchnorm")
    folded = [layer for layer in net.layers if layer.norms and layer.norms[0].kind == "batch"]
    if not folded:
        raise SymmetryError("fold_batchnorm: no BatchNorm directly after a linear or convolution layer")
    new: dict[str, torch.Tensor] = {}
    drop: set[str] = set()
    for layer in folded:
        bn = layer.norms[0].leaves
        if "running_mean" not in bn or "running_var" not in bn:
            raise SymmetryError(f"fold_batchnorm: {layer.module}'s BatchNorm has no running statistics")
        w = state_dict[layer.weight]
        mean, var = state_dict[bn["running_mean"]].double(), state_dict[bn["running_var"]].double()
        gamma = state_dict[bn["weight"]].double() if "weight" in bn else torch.ones_like(mean)
        beta = state_dict[bn["bias"]].double() if "bias" in bn else torch.zeros_like(mean)
        s = gamma / torch.sqrt(var + eps)
        b = state_dict[layer.bias].double() if layer.bias is not None else torch.zeros_like(mean)
        new[layer.weight] = (w.double() * s.reshape((-1,) + (1,) * (w.ndim - 1))).to(w.dtype)
        bias_key = layer.bias or layer.weight.removesuffix("weight") + "bias"
        new[bias_key] = ((b - mean) * s + beta).to(w.dtype)
        drop |= set(bn.values())
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key in drop:
            continue
        out[key] = new.pop(key, tensor)
        bias_key = key.removesuffix("weight") + "bias"
        if key.endswith("weight") and bias_key in new and bias_key not in state_dict:
            out[bias_key] = new.pop(bias_key)
    return out


__all__ = ["flip_signs", "fold_batchnorm", "pad_dead", "rescale", "widen"]
