"""Two primitives every transform is made of, applied to one group of tied hidden layers (`Network.groups`).

- `scale_units`: multiply each unit's output by ``d`` (its last per-unit affine map before the activation:
  the last norm layer's weight and bias, or without one the weight rows and bias) and its readers' columns by
  ``1 / d``. Exact when the activation commutes with ``d`` (positive ``d`` through ReLU, signs through tanh).
- `remap_units`: new units ``rows`` (indices of old units, -1 for a dead unit) with readers' columns
  ``W' = W @ cols`` (``cols`` is ``[old units, new units]``): permutations, duplication with split outgoing
  weights, merging (summed outgoing weights), dropping and dead padding. Exact for any elementwise activation
  when the norm layers are per unit (BatchNorm).

Both return a new dict (untouched tensors shared) and keep the key order; float64 arithmetic, cast back.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from zooprobe.symmetry.structure import Layer, Network, SymmetryError


def last_affine(layer: Layer) -> tuple[str, str | None]:
    """(weight-like key, bias key) of a layer's last per-unit affine map before its activation."""
    if layer.norms:
        norm = layer.norms[-1]
        if "weight" not in norm.leaves or "bias" not in norm.leaves:
            raise SymmetryError(f"{layer.module}: its last norm layer has no affine weight and bias")
        return norm.leaves["weight"], norm.leaves["bias"]
    return layer.weight, layer.bias


def _rows(t: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (t.ndim - 1)
    return (t.double() * factor.reshape(shape)).to(t.dtype)


def map_columns(weight: torch.Tensor, cols: torch.Tensor, span: int) -> torch.Tensor:
    """``weight`` with its input dimension (dim 1, ``span`` columns per unit) multiplied by ``cols``."""
    n, m = cols.shape
    w = weight.double()
    if weight.ndim == 2:
        out = w.reshape(w.shape[0], n, span).transpose(1, 2) @ cols.double()  # [out, span, m]
        return out.transpose(1, 2).reshape(w.shape[0], m * span).to(weight.dtype)
    return (w.movedim(1, -1) @ cols.double()).movedim(-1, 1).contiguous().to(weight.dtype)


def _group_readers(net: Network, g: int) -> list[tuple[str, int]]:
    return [(layer.consumer, layer.span) for layer in net.group_layers(g)]


def scale_units(
    sd: Mapping[str, torch.Tensor], net: Network, g: int, d: torch.Tensor
) -> dict[str, torch.Tensor]:
    out = dict(sd)
    d = d.double()
    for layer in net.group_layers(g):
        for key in last_affine(layer):
            if key is not None:
                out[key] = _rows(out[key], d)
    for reader, span in _group_readers(net, g):
        out[reader] = map_columns(out[reader], torch.diag(1.0 / d), span)
    return out


def _dead_value(leaf: str) -> float:
    return 1.0 if leaf == "running_var" else 0.0


def remap_units(
    sd: Mapping[str, torch.Tensor], net: Network, g: int, rows: torch.Tensor, cols: torch.Tensor
) -> dict[str, torch.Tensor]:
    out = dict(sd)
    rows = rows.long()
    dead = rows < 0
    index = rows.clamp(min=0)

    def select(key: str, leaf: str = "weight") -> None:
        t = out[key].index_select(0, index.to(out[key].device))
        if bool(dead.any()):
            t = t.clone()
            t[dead] = _dead_value(leaf)
        out[key] = t

    for layer in net.group_layers(g):
        select(layer.weight)
        if layer.bias is not None:
            select(layer.bias, "bias")
        for norm in layer.norms:
            for leaf, key in norm.leaves.items():
                if leaf != "num_batches_tracked":
                    select(key, leaf)
    for reader, span in _group_readers(net, g):
        out[reader] = map_columns(out[reader], cols, span)
    return out


__all__ = ["last_affine", "map_columns", "remap_units", "scale_units"]
