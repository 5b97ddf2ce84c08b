"""Canonicalization: the smallest network that computes the same function by undoing widening and padding.

`canonicalize` repeats, layer by layer from the input side, until nothing changes:

- **merge duplicates**: hidden units of a layer whose incoming weights, bias and BatchNorm entries are
  bit-identical compute the same value, so they become one unit whose outgoing weights are their sum
  (float64, cast back). This undoes `widen` exactly (2x, 4x: bit-identical to the original).
- **drop dead units**: a unit whose outgoing weights are all zero, or (when the activation is known and
  ``f(0) = 0``) whose output is always zero (zero weight row and bias, or BatchNorm scale and shift 0), is
  removed. This undoes `pad_dead`. A layer keeps at least one unit.

Layers followed by LayerNorm/GroupNorm are left alone (those normalize across units). On a trained network
nothing is ever exactly duplicated or dead, so canonicalization returns the same tensors (a test checks a
built zoo bit for bit). State dicts it does not understand (`zooprobe.symmetry.structure.network`) are
returned unchanged: canonicalization never fails.

Residual connections: given an `Architecture` with ``residual=True``, joined layers merge and drop only units
that qualify in every joined layer. Without one (``None``: the weights alone), each layer is handled on its
own, which is exact for networks widened or padded by a function-preserving transform, residual or not: such
a transform duplicates and pads joined layers alike.

`normalize_units` then fixes what `canonicalize` cannot merge: each unit's scale and sign (its incoming map
divided by its norm and signed to a positive sum, the factor pushed into its outgoing weights), which undoes
ReLU rescaling and tanh sign flips up to float rounding, and it sorts each layer's units (undoing
permutations). It is not function-preserving for every activation, so it is a featurization form:
`canonical_form` (both steps) is how training (the representation cache and the statistics of
`zooprobe.training.data_loader`) and prediction (`LoadedHead.run`) read every network, and
`canonical_state_dicts` applies it to a stream of state dicts lazily.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

import torch

from zooprobe.symmetry.structure import ZERO_AT_ZERO, Architecture, Layer, Network, SymmetryError, network
from zooprobe.symmetry.transforms import POSITIVELY_HOMOGENEOUS
from zooprobe.symmetry.units import last_affine, remap_units, scale_units


def _unit_rows(sd: Mapping[str, torch.Tensor], layers: list[Layer]) -> torch.Tensor:
    """``[units, features]``: every tensor that produces a unit, flattened per unit, side by side."""
    parts = []
    for layer in layers:
        w = sd[layer.weight]
        parts.append(w.reshape(w.shape[0], -1))
        if layer.bias is not None:
            parts.append(sd[layer.bias].reshape(-1, 1))
        for norm in layer.norms:
            parts += [sd[k].reshape(-1, 1) for k in norm.per_unit]
    return torch.cat([p.detach().double() for p in parts], dim=1)


def _outgoing_zero(sd: Mapping[str, torch.Tensor], layers: list[Layer]) -> torch.Tensor:
    n = layers[0].width
    zero = torch.ones(n, dtype=torch.bool)
    for layer in layers:
        w = sd[layer.consumer].detach()
        cols = w.movedim(1, 0).reshape(n, -1) if w.ndim > 2 else w.t().reshape(n, -1)
        zero &= (cols == 0).all(dim=1)
    return zero


def _output_zero(sd: Mapping[str, torch.Tensor], layers: list[Layer]) -> torch.Tensor:
    n = layers[0].width
    zero = torch.ones(n, dtype=torch.bool)
    for layer in layers:
        if layer.norms:
            leaves = layer.norms[-1].leaves
            if "weight" not in leaves or "bias" not in leaves:
                return torch.zeros(n, dtype=torch.bool)
            keys: tuple[str | None, ...] = (leaves["weight"], leaves["bias"])
        else:
            keys = (layer.weight, layer.bias)
        for key in keys:
            if key is not None:
                t = sd[key].detach()
                zero &= (t.reshape(n, -1) == 0).all(dim=1)
    return zero


def _classes(rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Class of each unit (identical rows share one), numbered in order of first occurrence."""
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first: dict[int, int] = {}
    labels = [first.setdefault(int(c), len(first)) for c in inverse.tolist()]
    return torch.tensor(labels, dtype=torch.long), len(first)


def _plan(sd: Mapping[str, torch.Tensor], net: Network, g: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(rows, cols) for `remap_units` that merges and drops group `g`'s units, or None when none qualify."""
    layers = net.group_layers(g)
    if not all(layer.per_unit_norm for layer in layers):
        return None
    n = layers[0].width
    dead = _outgoing_zero(sd, layers)
    if net.architecture.activation in ZERO_AT_ZERO:
        dead |= _output_zero(sd, layers)
    rows = _unit_rows(sd, layers)
    if not torch.isfinite(rows).all():
        return None
    labels, n_classes = _classes(rows)
    if n_classes == n and not bool(dead.any()):
        return None
    if bool(dead.all()):
        dead[0] = False  # a layer keeps one unit
    keep_classes = sorted({int(labels[i]) for i in range(n) if not dead[i]})
    new_index = {c: j for j, c in enumerate(keep_classes)}
    firsts = {}
    for i in range(n):
        c = int(labels[i])
        if c in new_index and c not in firsts and not dead[i]:
            firsts[c] = i
    m = len(keep_classes)
    cols = torch.zeros(n, m, dtype=torch.float64)
    for i in range(n):
        if not dead[i]:
            cols[i, new_index[int(labels[i])]] = 1.0
    row_index = torch.tensor([firsts[c] for c in keep_classes], dtype=torch.long)
    return row_index, cols


def _per_layer(net: Network) -> Network:
    return Network(net.layout, net.layers, tuple((i,) for i in range(len(net.layers))), net.architecture)


def canonicalize(
    state_dict: Mapping[str, torch.Tensor], architecture: Architecture | None = None
) -> dict[str, torch.Tensor]:
    """The canonical form of `state_dict` (module docs): duplicated hidden units merged, dead ones dropped.

    Returns a new dict with the same keys in the same order; when nothing is merged or dropped (every
    trained network) the tensors are the very same objects. A state dict of another layout comes back
    unchanged.
    """
    out = dict(state_dict)
    arch = architecture or Architecture()
    try:
        net = network(out, arch)
    except SymmetryError:
        return out
    if architecture is None or not arch.residual:
        net = _per_layer(net)
    for _ in range(2 * len(net.layers) + 2):
        changed = False
        for g in range(len(net.groups)):
            plan = _plan(out, net, g)
            if plan is not None:
                out = remap_units(out, net, g, *plan)
                net = network(out, arch)
                if architecture is None or not arch.residual:
                    net = _per_layer(net)
                changed = True
        if not changed:
            break
    return out


def normalize_scales(
    state_dict: Mapping[str, torch.Tensor], architecture: Architecture
) -> dict[str, torch.Tensor]:
    """A rescaling-invariant form of a ReLU / leaky-ReLU network (not applied by default): every hidden
    unit's last affine map before the activation (weight row and bias, or its norm layer's scale and shift)
    divided by its Euclidean norm, the norm pushed into the unit's outgoing weights. Two networks that differ
    by `zooprobe.symmetry.rescale` give the same result up to rounding. Unlike `canonicalize` it changes
    trained networks, so heads would have to be trained on normalized zoos to use it (docs/symmetry.md)."""
    net = network(state_dict, architecture)
    if architecture.activation not in POSITIVELY_HOMOGENEOUS:
        raise SymmetryError(f"normalize_scales: needs relu or leaky_relu, got {architecture.activation}")
    out = dict(state_dict)
    for g in range(len(net.groups)):
        first = net.group_layers(g)[0]
        parts = [
            out[k].detach().double().reshape(first.width, -1) for k in last_affine(first) if k is not None
        ]
        norm = torch.cat(parts, dim=1).norm(dim=1)
        out = scale_units(out, net, g, torch.where(norm > 0, 1.0 / norm, torch.ones_like(norm)))
    return out


def _unit_signs(rows: torch.Tensor) -> torch.Tensor:
    """+1 or -1 per row: the sign of the row's sum, or (sum 0) of its entry of largest magnitude."""
    sums = rows.sum(dim=1)
    largest = rows.gather(1, rows.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    sign = torch.where(sums != 0, torch.sign(sums), torch.sign(largest))
    return torch.where(sign == 0, torch.ones_like(sign), sign)


def normalize_units(state_dict: Mapping[str, torch.Tensor], sort: bool = True) -> dict[str, torch.Tensor]:
    """Every hidden unit's last affine map before its activation (weight row and bias, or its last norm
    layer's scale and shift) divided by its Euclidean norm and signed so that its sum is positive; the
    factor (``sign / norm``) is pushed into the unit's outgoing weights. With ``sort`` the units of each
    layer are then put in the order of that sum (which does not depend on the order of the layer's inputs).
    Layer by layer from the input side, so the result is the same for any two networks that differ by
    per-unit nonzero factors (`zooprobe.symmetry.rescale`, `zooprobe.symmetry.flip_signs`, tied residual
    groups included), up to float rounding, and (``sort``) by a permutation of the units
    (`zooprobe.encoder.augment.permute_neurons`), exactly.

    It is a featurization form, not a function-preserving one: exact for ReLU / leaky ReLU up to the signs,
    not for other activations. Layers whose last norm layer has no affine scale and shift keep their
    scales; a dead unit (norm 0) is left as it is. A `SymmetryError` for layouts
    `zooprobe.symmetry.structure.network` does not know."""
    out = dict(state_dict)
    net = _per_layer(network(out))
    for g in range(len(net.groups)):
        layer = net.group_layers(g)[0]
        try:
            keys = [k for k in last_affine(layer) if k is not None]
        except SymmetryError:
            continue
        rows = torch.cat([out[k].detach().double().reshape(layer.width, -1) for k in keys], dim=1)
        if not torch.isfinite(rows).all():
            continue
        norm = rows.norm(dim=1)
        factor = torch.where(norm > 0, _unit_signs(rows) / norm, torch.ones_like(norm))
        out = scale_units(out, net, g, factor)
        if sort:
            key = torch.cat([out[k].detach().double().reshape(layer.width, -1) for k in keys], dim=1).sum(1)
            order = torch.argsort(key, stable=True)
            if not torch.equal(order, torch.arange(layer.width)):
                cols = torch.zeros(layer.width, layer.width, dtype=torch.float64)
                cols[order, torch.arange(layer.width)] = 1.0
                out = remap_units(out, net, g, order, cols)
    return out


CANONICAL_FORM = 3
"""Version of `canonical_form`, part of every representation cache key (1: `canonicalize` alone; 2: an
earlier form that also folded BatchNorm)."""


def canonical_form(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The form in which zooprobe reads a network (training and prediction alike; docs/symmetry.md):

    1. `canonicalize`: duplicated units merged, dead ones dropped (undoes widening and dead padding);
    2. `normalize_units`: every unit's incoming map of norm 1 and positive sum (undoes ReLU rescaling and
       tanh sign flips), the units of each layer sorted by that sum (undoes neuron permutations).

    BatchNorm is not folded here: folding every network cost the heads too much (docs/symmetry.md); the
    applicability domain handles folded networks instead. Networks of layouts the symmetry module does not
    know come back unchanged; it never fails."""
    out = canonicalize(state_dict)
    with contextlib.suppress(SymmetryError):
        out = normalize_units(out)
    return out


def canonical_state_dicts(
    state_dicts: Iterable[Mapping[str, torch.Tensor]],
) -> Iterator[dict[str, torch.Tensor]]:
    """`canonical_form` of each state dict, lazily (a streamed zoo stays streamed): the featurization hook."""
    for sd in state_dicts:
        yield canonical_form(sd)


__all__ = [
    "CANONICAL_FORM",
    "canonical_form",
    "canonical_state_dicts",
    "canonicalize",
    "normalize_scales",
    "normalize_units",
]
