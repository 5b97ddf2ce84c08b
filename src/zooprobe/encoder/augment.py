"""Augmentations for weight-space pretraining: neuron permutations, multiplicative noise, erasing.

The SANE recipe (field notes) contrasts two augmented views of the same model. Three augmentations:

- **Function-preserving neuron permutations** (`permute_neurons`) of zooprobe's own subject models
  (`zooprobe.zoo.models.SubjectModel`). Hidden units of a layer can be reordered without changing the
  function when the rows of the layer and the columns of the next layer move together. Residual
  connections (``x + block(x)``) are *invisible in the weights*, so a permutation that differs between two
  joined layers would break the identity skip; to stay correct with or without residuals we use

  - MLP: ONE permutation ``P`` shared by every hidden layer (they all have the same width): rows of
    ``layers.0.linear``; ``W_i' = P W_i P^T`` for ``i >= 1``; the columns of ``head``; BatchNorm (affine
    parameters *and* running statistics) and LayerNorm parameters move with their layer;
  - CNN: ONE channel permutation shared by every convolution block (output channels of every conv, input
    channels of convs ``1..depth-1``, biases, BatchNorm), and the flatten into ``hidden.linear`` maps
    channel ``c`` to the columns ``c*k .. c*k+k-1`` (``k`` pooled positions, 4 for zooprobe's models),
    which move together; plus an independent permutation of the hidden units (``hidden.*`` rows, ``head``
    columns).

  State dicts this does not recognise exactly (other names, extra tensors, widths that differ between
  layers, inconsistent shapes) are **returned unchanged**, never partially permuted: a wrong permutation
  would silently turn a training example into a different function. `is_permutable` tells in advance.

- **Multiplicative noise** ``w * (1 + sigma * eps)`` (sigma 0.1 in SANE), on a state dict
  (`noise_state_dict`, running statistics and integer buffers untouched) or on token values
  (`noise_tokens`, real entries only). Pretraining uses the token form, applied to the zoo-normalized
  values, which equals weight-space noise around each tensor's zoo mean (close to zero for weights).

- **Erasing** (`erase_tokens`): values of randomly chosen tokens (or single entries) are set to zero while
  their mask stays True, so the encoder sees a plausible but wrong value rather than padding.

Every function takes an explicit `torch.Generator`, so pretraining is reproducible and resumable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from zooprobe.core.state_dicts import BATCHNORM_MARKERS

_MLP_KEY = re.compile(r"^layers\.(\d+)\.(linear|bn|ln)\.(\w+)$")
_CNN_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(conv|bn)\.(\w+)$")
_CNN_HIDDEN_KEY = re.compile(r"^hidden\.(linear|bn|ln)\.(\w+)$")
_HEAD_KEY = re.compile(r"^head\.(weight|bias)$")
_LN_LEAVES = ("weight", "bias")
_BN_LEAVES = (*_LN_LEAVES, *BATCHNORM_MARKERS)


@dataclass(frozen=True)
class _Op:
    """Index tensor ``name`` along ``dim`` with permutation group ``group`` (each unit spans ``span``)."""

    name: str
    dim: int
    group: str
    span: int = 1


@dataclass(frozen=True)
class PermutationPlan:
    """Which tensors a neuron permutation touches: ``groups`` maps a group name to its number of units."""

    family: Literal["mlp", "cnn"]
    groups: dict[str, int]
    ops: tuple[_Op, ...]


def _norm_ops(
    sd: Mapping[str, torch.Tensor], leaves: dict[str, str], group: str, size: int
) -> list[_Op] | None:
    """Ops for a BatchNorm/LayerNorm module ``prefix``; None when a tensor has an unexpected shape."""
    ops: list[_Op] = []
    for leaf, name in leaves.items():
        tensor = sd[name]
        if leaf == "num_batches_tracked":
            if tensor.numel() != 1:
                return None
            continue
        if tuple(tensor.shape) != (size,):
            return None
        ops.append(_Op(name, 0, group))
    return ops


def _group_by_module(sd: Mapping[str, torch.Tensor], pattern: re.Pattern[str]) -> dict[tuple, dict[str, str]]:
    modules: dict[tuple, dict[str, str]] = {}
    for name in sd:
        m = pattern.match(name)
        if m:
            *module, leaf = m.groups()
            modules.setdefault(tuple(module), {})[leaf] = name
    return modules


def _leaves_ok(kind: str, leaves: dict[str, str]) -> bool:
    allowed = {"linear": ("weight", "bias"), "conv": ("weight", "bias"), "bn": _BN_LEAVES, "ln": _LN_LEAVES}
    return set(leaves) <= set(allowed[kind]) and (kind not in ("linear", "conv") or "weight" in leaves)


def _unit_ops(
    sd: Mapping[str, torch.Tensor], main: dict[str, str], norms: list[dict[str, str]], group: str, size: int
) -> list[_Op] | None:
    """Ops for a layer's output units beyond its weight rows: its bias and its norm layers (None when a
    shape does not fit)."""
    ops: list[_Op] = []
    if "bias" in main:
        if tuple(sd[main["bias"]].shape) != (size,):
            return None
        ops.append(_Op(main["bias"], 0, group))
    for leaves in norms:
        norm = _norm_ops(sd, leaves, group, size)
        if norm is None:
            return None
        ops.extend(norm)
    return ops


def _stack_ops(
    sd: Mapping[str, torch.Tensor],
    stack: list[tuple[dict[str, str], list[dict[str, str]]]],
    group: str,
    ndims: tuple[int, ...],
) -> list[_Op] | None:
    """Ops for a stack of layers of one width sharing a permutation group: every layer's output units
    (weight rows, bias, norms) and, after the first, its input units (weight columns)."""
    width = int(sd[stack[0][0]["weight"]].shape[0])
    ops: list[_Op] = []
    for i, (main, norms) in enumerate(stack):
        weight = sd[main["weight"]]
        if weight.ndim not in ndims or weight.shape[0] != width or (i > 0 and weight.shape[1] != width):
            return None  # widths differ between layers: one shared permutation cannot be applied
        ops.append(_Op(main["weight"], 0, group))
        if i > 0:
            ops.append(_Op(main["weight"], 1, group))
        units = _unit_ops(sd, main, norms, group, width)
        if units is None:
            return None
        ops.extend(units)
    return ops


def _head_op(sd: Mapping[str, torch.Tensor], head: dict[str, str], group: str, size: int) -> _Op | None:
    weight = sd[head["weight"]]
    return _Op(head["weight"], 1, group) if weight.ndim == 2 and weight.shape[1] == size else None


def _mlp_plan(sd: Mapping[str, torch.Tensor]) -> PermutationPlan | None:
    layers = _group_by_module(sd, _MLP_KEY)
    head = {m.group(1): name for name in sd if (m := _HEAD_KEY.match(name))}
    if "weight" not in head or len(layers) + len(head) == 0:
        return None
    depth = 1 + max(int(i) for i, _ in layers)
    if any(not _leaves_ok(kind, leaves) for (_, kind), leaves in layers.items()):
        return None
    if any((str(i), "linear") not in layers for i in range(depth)):
        return None
    norms = [[layers[(str(i), k)] for k in ("bn", "ln") if (str(i), k) in layers] for i in range(depth)]
    stack = [(layers[(str(i), "linear")], norms[i]) for i in range(depth)]
    ops = _stack_ops(sd, stack, "hidden", (2,))
    width = int(sd[stack[0][0]["weight"]].shape[0])
    head_op = _head_op(sd, head, "hidden", width)
    if ops is None or head_op is None:
        return None
    return PermutationPlan("mlp", {"hidden": width}, (*ops, head_op))


def _cnn_plan(sd: Mapping[str, torch.Tensor]) -> PermutationPlan | None:
    blocks = _group_by_module(sd, _CNN_BLOCK_KEY)
    hidden = _group_by_module(sd, _CNN_HIDDEN_KEY)
    head = {m.group(1): name for name in sd if (m := _HEAD_KEY.match(name))}
    if not blocks or ("linear",) not in hidden or "weight" not in head:
        return None
    if any(not _leaves_ok(kind, leaves) for (_, kind), leaves in blocks.items()):
        return None
    if any(not _leaves_ok(kind, leaves) for (kind,), leaves in hidden.items()):
        return None
    depth = 1 + max(int(i) for i, _ in blocks)
    if any((str(i), "conv") not in blocks for i in range(depth)):
        return None
    stack = [
        (blocks[(str(i), "conv")], [blocks[(str(i), "bn")]] if (str(i), "bn") in blocks else [])
        for i in range(depth)
    ]
    ops = _stack_ops(sd, stack, "channels", (3, 4))
    width = int(sd[stack[0][0]["weight"]].shape[0])
    linear = hidden[("linear",)]
    hw = sd[linear["weight"]]
    if ops is None or hw.ndim != 2 or hw.shape[1] % width:
        return None
    positions = int(hw.shape[1]) // width  # channel-major flatten: channel c -> columns c*k .. c*k+k-1
    n_hidden = int(hw.shape[0])
    ops += [_Op(linear["weight"], 1, "channels", positions), _Op(linear["weight"], 0, "hidden")]
    units = _unit_ops(sd, linear, [hidden[(k,)] for k in ("bn", "ln") if (k,) in hidden], "hidden", n_hidden)
    head_op = _head_op(sd, head, "hidden", n_hidden)
    if units is None or head_op is None:
        return None
    return PermutationPlan("cnn", {"channels": width, "hidden": n_hidden}, (*ops, *units, head_op))


def permutation_plan(state_dict: Mapping[str, torch.Tensor]) -> PermutationPlan | None:
    """The permutation plan of a zooprobe subject-model state dict, or None when it is not one exactly.

    Every key must be one of the subject-model names (see the module docs); anything else (another
    architecture, an extra tensor, a width change between layers) gives None.
    """
    names = list(state_dict)
    if not names or not all(isinstance(state_dict[n], torch.Tensor) for n in names):
        return None
    mlp_keys = all(_MLP_KEY.match(n) or _HEAD_KEY.match(n) for n in names)
    cnn_keys = all(_CNN_BLOCK_KEY.match(n) or _CNN_HIDDEN_KEY.match(n) or _HEAD_KEY.match(n) for n in names)
    try:
        if mlp_keys and any(n.startswith("layers.") for n in names):
            return _mlp_plan(state_dict)
        if cnn_keys and any(n.startswith("blocks.") for n in names):
            return _cnn_plan(state_dict)
    except (KeyError, IndexError):  # pragma: no cover - defensive: malformed names never raise
        return None
    return None


def is_permutable(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when `permute_neurons` would permute this state dict (a zooprobe subject model)."""
    plan = permutation_plan(state_dict)
    return plan is not None and any(size > 1 for size in plan.groups.values())


def _random_permutation(size: int, generator: torch.Generator | None) -> torch.Tensor:
    """A random permutation of ``range(size)``, never the identity when size > 1 (a no-op view is useless)."""
    perm = torch.randperm(size, generator=generator)
    if size > 1 and torch.equal(perm, torch.arange(size)):
        perm = torch.roll(perm, 1)
    return perm


def permute_neurons(
    state_dict: Mapping[str, torch.Tensor],
    generator: torch.Generator | None = None,
    plan: PermutationPlan | None = None,
) -> dict[str, torch.Tensor]:
    """A function-preserving random permutation of a zooprobe subject model's hidden units.

    Returns a new dict with the same keys in the same order (untouched tensors are shared, not copied).
    A state dict that `permutation_plan` does not recognise is returned unchanged (as a shallow copy).
    Pass `plan` to skip re-deriving it for many permutations of same-shaped models.
    """
    plan = plan if plan is not None else permutation_plan(state_dict)
    out = dict(state_dict)
    if plan is None:
        return out
    perms = {group: _random_permutation(size, generator) for group, size in plan.groups.items()}
    for op in plan.ops:
        perm = perms[op.group]
        if op.span > 1:
            perm = (perm[:, None] * op.span + torch.arange(op.span)).reshape(-1)
        out[op.name] = out[op.name].index_select(op.dim, perm.to(out[op.name].device))
    return out


def noise_state_dict(
    state_dict: Mapping[str, torch.Tensor], sigma: float = 0.1, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Multiplicative noise ``w * (1 + sigma * eps)``, eps ~ N(0, 1), on every float parameter.

    BatchNorm running statistics and integer/bool buffers are returned unchanged: they are not weights.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not name.endswith(BATCHNORM_MARKERS) and sigma > 0:
            eps = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            out[name] = (tensor.float() * (1.0 + sigma * eps)).to(tensor.dtype)
        else:
            out[name] = tensor
    return out


def noise_tokens(
    tokens: torch.Tensor, mask: torch.Tensor, sigma: float = 0.1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Multiplicative noise on real token entries (padding stays exactly zero); returns a new tensor."""
    if sigma <= 0:
        return tokens.clone()
    eps = torch.randn(tokens.shape, generator=generator, dtype=tokens.dtype)
    return tokens * (1.0 + sigma * eps) * mask.to(tokens.dtype)


def erase_tokens(
    tokens: torch.Tensor,
    mask: torch.Tensor,
    ratio: float,
    generator: torch.Generator | None = None,
    unit: Literal["token", "entry"] = "token",
) -> torch.Tensor:
    """Zero the values of a random fraction `ratio` of tokens (or single entries); the mask is unchanged.

    `tokens` is ``[..., N, T]``; with ``unit="token"`` each token (row) is erased with probability
    `ratio`, with ``unit="entry"`` each value. Returns a new tensor.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"erase_tokens: ratio must be in [0, 1], got {ratio}")
    if unit not in ("token", "entry"):
        raise ValueError(f"erase_tokens: unit must be 'token' or 'entry', got {unit!r}")
    if ratio == 0:
        return tokens.clone()
    shape = tokens.shape[:-1] if unit == "token" else tokens.shape
    keep = torch.rand(shape, generator=generator) >= ratio
    if unit == "token":
        keep = keep.unsqueeze(-1)
    return tokens * keep.to(tokens.dtype) * mask.to(tokens.dtype)


__all__ = [
    "PermutationPlan",
    "erase_tokens",
    "is_permutable",
    "noise_state_dict",
    "noise_tokens",
    "permutation_plan",
    "permute_neurons",
]
