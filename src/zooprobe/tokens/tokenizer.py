"""SANE-style tokenization of PyTorch state dicts, with an exact inverse.

How a state dict becomes a token sequence (the field's recipe, Schürholt et al. 2024):

1. Tensors are grouped into *layers* by module prefix (everything before the last dot), in state-dict order.
2. Each layer becomes a 2-D matrix with one row per output channel/unit:

   - Linear / Conv1d / Conv2d / Conv3d: the weight viewed as ``(out_channels, rest)``, the bias appended as
     one more column (also ``in_proj_weight``/``in_proj_bias``, ``weight_ih_l0``/``bias_ih_l0``, ... pairs);
     transposed convolutions are viewed with their output channels (dim 1) as rows;
   - BatchNorm (and InstanceNorm with running stats): whichever of ``weight, bias, running_mean,
     running_var`` exist, as per-channel columns ``(C, k)``; ``num_batches_tracked`` is an integer counter,
     not a weight, so it is kept as a *passthrough* value (stored in the layout, listed in
     `TokenizedModel.passthrough`) and restored exactly;
   - LayerNorm / GroupNorm: ``(C, 2)`` or ``(C, 1)``;
   - Embedding: rows ``(num_embeddings, dim)``.

3. Each row is cut into chunks of ``token_size`` values, zero-padded, with a boolean mask of real entries.
4. Each token gets a position ``(global token index, layer index, token index within the layer)``.

Why the layout is explicit and JSON: the tokens alone cannot be inverted (padding, shapes, dtypes), and the
field notes warn that encoding with preprocessing that differs from pretraining silently degrades results.
`TokenizedModel.layout` therefore records everything needed to rebuild the state dict bit for bit (names,
order, shapes, dtypes, column ranges, normalization constants, passthrough values) and can be saved next to
the tokens.

Why nothing is dropped silently: a tensor the rules do not recognise raises `TokenizerError` by default;
``unknown="skip"`` leaves it out but lists it in `TokenizedModel.skipped`; ``unknown="rows"`` tokenizes it
as rows of dim 0. Non-finite values always raise, naming the tensor.

All data movement is vectorised (one strided copy per tensor into a preallocated token buffer), so an
11M-parameter ResNet-18 state dict tokenizes in well under a second on two CPU cores.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from zooprobe.core.config import check_field_types, check_record, config
from zooprobe.core.files import parse_json
from zooprobe.core.state_dicts import BATCHNORM_MARKERS, is_weight_leaf, split_name
from zooprobe.core.tensorfile import open_safetensors, write_safetensors
from zooprobe.errors import InvalidInputError
from zooprobe.tokens.normalization import NormalizationStats

LAYOUT_FORMAT_VERSION = 1
TOKENIZER_FORMAT_VERSION = 1

#: Module kinds accepted as hints (see `module_kinds_from_model`).
MODULE_KINDS = ("linear", "conv", "conv_transpose", "embedding", "bn", "ln")

_BN_FLOAT_ROLES = ("weight", "bias", "running_mean", "running_var")


class TokenizerError(InvalidInputError):
    """A state dict, layout or tokenizer config cannot be tokenized or inverted; the message says why.

    It subclasses `ValueError` because every cause is a bad input value (shape, dtype, name, config field).
    """


UnknownPolicy = Literal["error", "skip", "rows"]


@config(TokenizerError, require_all=True)
@dataclass(frozen=True)
class TokenizerConfig:
    """Settings that define the token representation; they must match between pretraining and use.

    Attributes:
        token_size: values per token; each row of a layer matrix is cut into chunks of this size.
        unknown: what to do with a tensor no rule recognises: ``"error"`` (default, raise naming it),
            ``"skip"`` (leave it out and list it in `TokenizedModel.skipped`) or ``"rows"`` (tokenize it as
            rows of its dim 0). Unrecognised float scalars and integer/bool tensors become passthrough values
            under ``"skip"``/``"rows"``.
        cast_float64: float64 tensors would lose precision in float32 tokens, so they raise unless this is
            True (then the round trip is only float32-exact).
        norm_min_count: a statistics key needs at least this many values to be used for normalization.
        norm_eps: a statistics key whose std is at or below this falls back to the next key.
    """

    token_size: int = 32
    unknown: UnknownPolicy = "error"
    cast_float64: bool = False
    norm_min_count: int = 2
    norm_eps: float = 1e-8

    def __post_init__(self) -> None:
        check_field_types(self, TokenizerError)
        if self.token_size < 1:
            raise TokenizerError(f"TokenizerConfig.token_size: must be >= 1, got {self.token_size}")
        if self.norm_min_count < 1:
            raise TokenizerError(f"TokenizerConfig.norm_min_count: must be >= 1, got {self.norm_min_count}")
        if not (self.norm_eps >= 0.0 and math.isfinite(self.norm_eps)):
            raise TokenizerError(f"TokenizerConfig.norm_eps: must be finite and >= 0, got {self.norm_eps}")


# ----------------------------------------------------------------------------------------------------------
# dtype helpers


def _dtype_str(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_from_str(text: object) -> torch.dtype:
    dtype = getattr(torch, text, None) if isinstance(text, str) else None
    if not isinstance(dtype, torch.dtype):
        raise TokenizerError(f"layout: unknown dtype {text!r}")
    return dtype


def _loads(text: str, what: str) -> Any:
    try:
        return parse_json(text)
    except json.JSONDecodeError as exc:
        raise TokenizerError(f"{what}: invalid JSON ({exc})") from exc


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
        # 1. batch norm (or anything with running statistics)
        looks_bn = hint == "bn" or any(m in leaves for m in BATCHNORM_MARKERS)
        if not looks_bn and hint is None and "weight" in leaves and _looks_like_batchnorm(prefix):
            looks_bn = sd[leaves["weight"]].ndim == 1
        if looks_bn:
            self._plan_batchnorm(prefix, leaves, sd, plan, used)
        # 2. layer/group norm: 1-D weight (and bias of the same shape)
        weight = sd.get(leaves.get("weight", ""))
        if (
            "weight" in leaves
            and leaves["weight"] not in used
            and weight is not None
            and weight.is_floating_point()
            and (weight.ndim == 1 or (hint == "ln" and weight.ndim >= 1))
        ):
            self._plan_norm(prefix, leaves, sd, plan, used)
        # 3. weight matrices (linear, conv, embedding, in_proj_weight, weight_ih_l0, ...) with their biases
        for leaf, name in leaves.items():
            tensor = sd[name]
            if name in used or not is_weight_leaf(leaf) or not tensor.is_floating_point() or tensor.ndim < 2:
                continue
            self._plan_matrix(prefix, leaf, leaves, sd, plan, used, hint)
        # 4. everything else: unknown policy
        for name in names:
            if name not in used:
                self._plan_unknown(prefix, name, names, sd[name], plan)

    def _plan_batchnorm(
        self,
        prefix: str,
        leaves: dict[str, str],
        sd: Mapping[str, torch.Tensor],
        plan: _Plan,
        used: set[str],
    ) -> None:
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
            layer = _LayerPlan(label=prefix, prefix=prefix, kind="bn", rows=tensors[0].shape[0])
            for name, tensor in zip(float_names, tensors, strict=True):
                role = split_name(name)[1]
                layer.members.append(
                    _Member(name, role, f"bn.{role}", tuple(tensor.shape), tensor.dtype, layer.cols, 1)
                )
            plan.layers.append(layer)
        used.update(float_names)
        if counter is not None:
            plan.passthrough.append(counter)
            used.add(counter)

    def _plan_norm(
        self,
        prefix: str,
        leaves: dict[str, str],
        sd: Mapping[str, torch.Tensor],
        plan: _Plan,
        used: set[str],
    ) -> None:
        weight = sd[leaves["weight"]]
        names = [leaves["weight"]]
        bias_name = leaves.get("bias")
        if bias_name is not None:
            bias = sd[bias_name]
            if bias.is_floating_point() and bias.shape == weight.shape:
                names.append(bias_name)
        # Keep state-dict order between weight and bias (it is the column order).
        names.sort(key=list(leaves.values()).index)
        layer = _LayerPlan(label=prefix, prefix=prefix, kind="ln", rows=weight.numel())
        for name in names:
            tensor = sd[name]
            role = split_name(name)[1]
            layer.members.append(
                _Member(name, role, f"ln.{role}", tuple(tensor.shape), tensor.dtype, layer.cols, 1)
            )
        plan.layers.append(layer)
        used.update(names)

    def _plan_matrix(
        self,
        prefix: str,
        leaf: str,
        leaves: dict[str, str],
        sd: Mapping[str, torch.Tensor],
        plan: _Plan,
        used: set[str],
        hint: str | None,
    ) -> None:
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


# ----------------------------------------------------------------------------------------------------------
# result type


@dataclass
class TokenizedModel:
    """A state dict as tokens, plus the JSON layout that inverts it.

    Attributes:
        tokens: float32 ``[N, token_size]``, zero where `mask` is False.
        mask: bool ``[N, token_size]``, True for real entries.
        positions: int64 ``[N, 3]``: (global token index, layer index, token index within the layer).
        layout: JSON-serialisable description of layers, members, passthrough values and normalization.
        passthrough: names of tensors kept verbatim in the layout instead of tokens (e.g.
            ``num_batches_tracked``).
        skipped: names of tensors left out under ``unknown="skip"``; `detokenize` cannot restore them.
        summaries: optional float32 ``[num_layers, summary_dim]``: one standardized statistics vector per
            layer (`zooprobe.tokens.summary`), attached by encoders that read summary tokens; None
            otherwise. Not needed by `detokenize`.
        prefix_states: kept by `LoadedEncoder.embed` (see there); not saved, not compared.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    layout: dict[str, Any]
    passthrough: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    summaries: torch.Tensor | None = None
    prefix_states: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        t = self.tokens
        if t.ndim != 2 or t.dtype != torch.float32:
            raise TokenizerError(f"tokens must be float32 [N, token_size], got {t.dtype} {tuple(t.shape)}")
        if self.mask.shape != t.shape or self.mask.dtype != torch.bool:
            raise TokenizerError(
                f"mask must be bool {tuple(t.shape)}, got {self.mask.dtype} {tuple(self.mask.shape)}"
            )
        if self.positions.shape != (t.shape[0], 3) or self.positions.dtype != torch.int64:
            raise TokenizerError(
                f"positions must be int64 [{t.shape[0]}, 3], "
                f"got {self.positions.dtype} {tuple(self.positions.shape)}"
            )
        sm = self.summaries
        if sm is not None and (
            sm.ndim != 2 or sm.dtype != torch.float32 or sm.shape[0] != len(self.layout["layers"])
        ):
            raise TokenizerError(
                f"summaries must be float32 [num_layers={len(self.layout['layers'])}, D], "
                f"got {sm.dtype} {tuple(sm.shape)}"
            )

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def token_size(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def num_layers(self) -> int:
        return len(self.layout["layers"])

    @property
    def normalized(self) -> bool:
        return bool(self.layout["normalized"])

    def passthrough_values(self) -> dict[str, torch.Tensor]:
        """The passthrough tensors, decoded from the layout."""
        return {entry["name"]: _decode_passthrough(entry) for entry in self.layout["passthrough"]}

    def values_of(self, name: str) -> torch.Tensor:
        """Token-space values (float32, normalized if `normalized`) of tensor `name`, in its original shape.

        Useful to inspect what the encoder sees for one tensor, e.g. to check normalization per kind.
        """
        for layer in self.layout["layers"]:
            for member in layer["members"]:
                if member["name"] == name:
                    return _member_values(self.tokens, layer, member, self.token_size)
        raise KeyError(f"{name!r} is not a tokenized tensor of this model")

    def to(self, device: torch.device | str) -> TokenizedModel:
        """A copy with tokens, mask and positions on `device` (the layout stays plain Python)."""
        return TokenizedModel(
            self.tokens.to(device),
            self.mask.to(device),
            self.positions.to(device),
            self.layout,
            self.passthrough,
            self.skipped,
            None if self.summaries is None else self.summaries.to(device),
        )

    def save(self, path: str | Path) -> None:
        """Write tokens, mask and positions as safetensors with the layout JSON in the metadata."""

        tensors = {
            "tokens": self.tokens.contiguous(),
            "mask": self.mask.contiguous(),
            "positions": self.positions.contiguous(),
        }
        if self.summaries is not None:
            tensors["summaries"] = self.summaries.contiguous()
        write_safetensors(path, tensors, {"zooprobe.layout": json.dumps(self.layout)})

    @classmethod
    def load(cls, path: str | Path) -> TokenizedModel:
        """Inverse of `save`."""

        with open_safetensors(path) as handle:
            metadata = handle.metadata() or {}
            if "zooprobe.layout" not in metadata:
                raise TokenizerError(f"{path}: not a zooprobe tokenized model (no layout metadata)")
            keys = ("tokens", "mask", "positions", "summaries")
            tensors = {key: handle.get_tensor(key) for key in keys if key in handle.keys()}  # noqa: SIM118
        layout = _loads(metadata["zooprobe.layout"], f"{path}: layout")
        return cls(
            tensors["tokens"],
            tensors["mask"],
            tensors["positions"],
            layout,
            tuple(e["name"] for e in layout["passthrough"]),
            tuple(e["name"] for e in layout["skipped"]),
            tensors.get("summaries"),
        )


def _encode_passthrough(name: str, tensor: torch.Tensor) -> dict[str, Any]:
    # .tolist() gives Python ints/bools, or Python floats (float64), which hold every float32/16/bf16 value
    # exactly and survive JSON unchanged.
    values = tensor.detach().cpu().flatten()
    if values.is_floating_point() and values.dtype.itemsize < 2:
        values = values.to(torch.float32)  # float8 kinds have no .tolist(); float32 holds them exactly
    return {
        "name": name,
        "dtype": _dtype_str(tensor.dtype),
        "shape": list(tensor.shape),
        "values": values.tolist(),
    }


def _passthrough_entries(
    names: Iterable[str], state_dict: Mapping[str, torch.Tensor]
) -> list[dict[str, Any]]:
    """The layout entries of a state dict's passthrough tensors (floating ones must be finite)."""
    entries = []
    for name in names:
        tensor = state_dict[name]
        if tensor.is_floating_point():
            _check_finite(name, tensor)
        entries.append(_encode_passthrough(name, tensor))
    return entries


def _decode_passthrough(entry: Mapping[str, Any]) -> torch.Tensor:
    dtype = _dtype_from_str(entry["dtype"])
    values = entry["values"]
    if dtype.is_floating_point:
        return torch.tensor(values, dtype=torch.float64).to(dtype).reshape(entry["shape"])
    return torch.tensor(values, dtype=dtype).reshape(entry["shape"])


def _layer_block(tokens: torch.Tensor, layer: Mapping[str, Any], token_size: int) -> torch.Tensor | None:
    n = layer["num_tokens"]
    if n == 0:
        return None
    offset = layer["token_offset"]
    return tokens[offset : offset + n].view(layer["rows"], layer["tokens_per_row"] * token_size)


def _member_values(
    tokens: torch.Tensor, layer: Mapping[str, Any], member: Mapping[str, Any], token_size: int
) -> torch.Tensor:
    """Columns of one member, as float32 in the member's original shape (a copy)."""
    shape = list(member["shape"])
    block = _layer_block(tokens, layer, token_size)
    if block is None:
        return torch.zeros(shape, dtype=torch.float32)
    cols = block[:, member["start"] : member["start"] + member["width"]]
    if member["transpose"]:
        return cols.reshape([shape[1], shape[0], *shape[2:]]).transpose(0, 1).contiguous()
    return cols.reshape(shape).clone()


# ----------------------------------------------------------------------------------------------------------
# tokenizer


class WeightTokenizer:
    """Turns state dicts into `TokenizedModel`s and back; owns the zoo-level normalization statistics.

    Typical use::

        tok = WeightTokenizer(TokenizerConfig(token_size=32))
        tok.fit_normalization(state_dict_stream)      # one streaming pass over the training zoo
        tm = tok.tokenize(state_dict, normalize=True)
        restored = tok.detokenize(tm)                 # allclose to state_dict (bit-exact if normalize=False)
        Path("tokenizer.json").write_text(tok.to_json())  # ship it with the encoder
    """

    def __init__(
        self, config: TokenizerConfig | None = None, stats: NormalizationStats | None = None
    ) -> None:
        self.config = config if config is not None else TokenizerConfig()
        self.stats = stats

    def __repr__(self) -> str:
        return f"WeightTokenizer({self.config!r}, stats={self.stats!r})"

    # -- normalization ----------------------------------------------------------------------------------

    def fit_normalization(
        self,
        state_dicts: Iterable[Mapping[str, torch.Tensor]],
        module_kinds: Mapping[str, str] | None = None,
    ) -> NormalizationStats:
        """Fit zoo-level statistics in one streaming pass over `state_dicts` (replacing any previous fit).

        Only the running moments are kept, so the iterable may lazily load a zoo of any size. The same
        planning rules as `tokenize` decide which tensors count and under which kind; `module_kinds` (see
        `module_kinds_from_model`) applies to every state dict.
        """
        stats = NormalizationStats()
        count = 0
        for state_dict in state_dicts:
            self._accumulate(stats, state_dict, module_kinds)
            count += 1
        if count == 0:
            raise TokenizerError("fit_normalization: no state dicts given")
        self.stats = stats
        return stats

    def partial_fit(
        self, state_dict: Mapping[str, torch.Tensor], module_kinds: Mapping[str, str] | None = None
    ) -> NormalizationStats:
        """Add one more state dict to the statistics (creating them if needed); for incremental fitting."""
        if self.stats is None:
            self.stats = NormalizationStats()
        self._accumulate(self.stats, state_dict, module_kinds)
        return self.stats

    def _accumulate(
        self,
        stats: NormalizationStats,
        state_dict: Mapping[str, torch.Tensor],
        module_kinds: Mapping[str, str] | None,
    ) -> None:
        plan = _Planner(self.config, module_kinds).plan(state_dict)
        for layer in plan.layers:
            for member in layer.members:
                tensor = state_dict[member.name]
                _check_finite(member.name, tensor)
                stats.update(member.name, member.kind, tensor)

    # -- tokenize ---------------------------------------------------------------------------------------

    def tokenize(
        self,
        state_dict: Mapping[str, torch.Tensor],
        normalize: bool = False,
        module_kinds: Mapping[str, str] | None = None,
    ) -> TokenizedModel:
        """Tokenize `state_dict` (insertion order = model order).

        With ``normalize=True`` each column is standardized with the fitted zoo statistics of the tensor it
        came from (name -> kind -> global fallback); the constants used are stored in the layout, so
        `detokenize` can undo them without this tokenizer's statistics.
        """
        if normalize and self.stats is None:
            raise TokenizerError("tokenize(normalize=True) needs statistics: call fit_normalization() first")
        cfg = self.config
        size = cfg.token_size
        plan = _Planner(cfg, module_kinds).plan(state_dict)
        per_row = [math.ceil(layer.cols / size) for layer in plan.layers]
        counts = [layer.rows * k for layer, k in zip(plan.layers, per_row, strict=True)]
        total = sum(counts)
        tokens = torch.zeros(total, size, dtype=torch.float32)
        mask = torch.zeros(total, size, dtype=torch.bool)
        positions = torch.empty(total, 3, dtype=torch.int64)
        if total:
            positions[:, 0] = torch.arange(total)
        layers_json: list[dict[str, Any]] = []
        offset = 0
        for index, (layer, k, n) in enumerate(zip(plan.layers, per_row, counts, strict=True)):
            members_json: list[dict[str, Any]] = []
            block = tokens[offset : offset + n].view(layer.rows, k * size) if n else None
            for member in layer.members:
                tensor = state_dict[member.name].detach()
                _check_finite(member.name, tensor)
                norm: dict[str, Any] | None = None
                if normalize and self.stats is not None:
                    mean, std, key = self.stats.resolve(
                        member.name, member.kind, min_count=cfg.norm_min_count, eps=cfg.norm_eps
                    )
                    norm = {"mean": mean, "std": std, "key": key}
                if block is not None and member.width:
                    src = tensor.transpose(0, 1) if member.transpose else tensor
                    dst = block[:, member.start : member.start + member.width]
                    dst.copy_(src.reshape(layer.rows, member.width))
                    if norm is not None:
                        dst.sub_(norm["mean"]).div_(norm["std"])
                members_json.append(
                    {
                        "name": member.name,
                        "role": member.role,
                        "kind": member.kind,
                        "shape": list(member.shape),
                        "dtype": _dtype_str(member.dtype),
                        "start": member.start,
                        "width": member.width,
                        "transpose": member.transpose,
                        "norm": norm,
                    }
                )
            if n:
                mask[offset : offset + n].view(layer.rows, k * size)[:, : layer.cols] = True
                positions[offset : offset + n, 1] = index
                positions[offset : offset + n, 2] = torch.arange(n)
            layers_json.append(
                {
                    "label": layer.label,
                    "prefix": layer.prefix,
                    "kind": layer.kind,
                    "rows": layer.rows,
                    "cols": layer.cols,
                    "tokens_per_row": k,
                    "token_offset": offset,
                    "num_tokens": n,
                    "members": members_json,
                }
            )
            offset += n
        layout = {
            "format_version": LAYOUT_FORMAT_VERSION,
            "token_size": size,
            "normalized": bool(normalize),
            "order": plan.order,
            "layers": layers_json,
            "passthrough": _passthrough_entries(plan.passthrough, state_dict),
            "skipped": [{"name": name, "reason": reason} for name, reason in plan.skipped],
        }
        return TokenizedModel(
            tokens,
            mask,
            positions,
            layout,
            passthrough=tuple(plan.passthrough),
            skipped=tuple(name for name, _ in plan.skipped),
        )

    def tokenize_many(
        self, state_dicts: Sequence[Mapping[str, torch.Tensor]], normalize: bool = False
    ) -> list[TokenizedModel]:
        """`tokenize` of many state dicts, equal to tokenizing each one, bit for bit.

        State dicts with the same tensor names, shapes and dtypes (the models of one architecture in a zoo)
        share one plan: the first is tokenized as usual, and the others are copied into their tokens with
        one batched copy (and normalization) per tensor instead of one per tensor and model. Models of a
        group share their `mask` and the layer entries of their layouts (read them, do not modify them);
        each has its own tokens and passthrough values. An invalid model (a non-finite value, say) raises the
        same error as `tokenize` would.
        """
        out: list[TokenizedModel | None] = [None] * len(state_dicts)
        groups: dict[Any, list[int]] = {}
        for i, sd in enumerate(state_dicts):
            groups.setdefault(_signature(sd, i), []).append(i)
        for rows in groups.values():
            first = self.tokenize(state_dicts[rows[0]], normalize=normalize)
            out[rows[0]] = first
            if len(rows) > 1:
                others = [state_dicts[i] for i in rows[1:]]
                try:
                    tokenized = self._tokenize_like(first, others)
                except TokenizerError:  # name the offending model's tensor exactly as `tokenize` does
                    tokenized = [self.tokenize(sd, normalize=normalize) for sd in others]
                for i, tm in zip(rows[1:], tokenized, strict=True):
                    out[i] = tm
        return out  # type: ignore[return-value]

    def _tokenize_like(
        self, first: TokenizedModel, state_dicts: Sequence[Mapping[str, torch.Tensor]]
    ) -> list[TokenizedModel]:
        """Tokenize `state_dicts` (same names, shapes and dtypes as the model of `first`) with its layout."""
        size = first.token_size
        m = len(state_dicts)
        tokens = torch.zeros(m, first.num_tokens, size, dtype=torch.float32)
        for layer in first.layout["layers"]:
            n, rows = layer["num_tokens"], layer["rows"]
            if not n:
                continue
            offset = layer["token_offset"]
            block = tokens[:, offset : offset + n].view(m, rows, layer["tokens_per_row"] * size)
            for member in layer["members"]:
                name, width = member["name"], member["width"]
                with torch.no_grad():
                    stacked = torch.stack([sd[name] for sd in state_dicts])
                _check_finite(name, stacked)
                if not width:
                    continue
                src = stacked.transpose(1, 2) if member["transpose"] else stacked
                dst = block[:, :, member["start"] : member["start"] + width]
                dst.copy_(src.reshape(m, rows, width))
                norm = member["norm"]
                if norm is not None:
                    dst.sub_(norm["mean"]).div_(norm["std"])
        out = []
        for j, sd in enumerate(state_dicts):
            layout = {**first.layout, "passthrough": _passthrough_entries(first.passthrough, sd)}
            shared = (first.mask, first.positions, layout, first.passthrough, first.skipped)
            out.append(TokenizedModel(tokens[j], *shared))
        return out

    def detokenize(self, tokenized: TokenizedModel) -> dict[str, torch.Tensor]:
        """Exact inverse of `tokenize` (see the module-level `detokenize`)."""
        if tokenized.layout.get("token_size") != self.config.token_size:
            raise TokenizerError(
                f"tokenized model has token_size {tokenized.layout.get('token_size')}, "
                f"this tokenizer {self.config.token_size}"
            )
        return detokenize(tokenized)

    # -- serialisation ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Config and statistics, JSON-ready; `from_dict` restores an identical tokenizer."""
        return {
            "format_version": TOKENIZER_FORMAT_VERSION,
            "config": self.config.to_dict(),
            "normalization": None if self.stats is None else self.stats.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: object) -> WeightTokenizer:
        fields = ("format_version", "config", "normalization")
        data = check_record(
            data,
            "WeightTokenizer",
            TokenizerError,
            fields=fields,
            exact=True,
            version=TOKENIZER_FORMAT_VERSION,
        )
        config = TokenizerConfig.from_dict(data["config"])
        stats = None
        if data["normalization"] is not None:
            stats = NormalizationStats.from_dict(data["normalization"], TokenizerError)
        return cls(config, stats)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WeightTokenizer:
        return cls.from_dict(_loads(text, "WeightTokenizer"))


def _signature(state_dict: Any, index: int) -> Any:
    """What decides a state dict's tokenization plan: its names, shapes and dtypes (in order); anything that
    is not a plain mapping of tensors gets a key of its own (`tokenize` reports what is wrong with it)."""
    if not isinstance(state_dict, Mapping) or any(
        not isinstance(t, torch.Tensor) for t in state_dict.values()
    ):
        return ("unique", index)
    return tuple((name, tuple(t.shape), t.dtype, t.layout) for name, t in state_dict.items())


def _all_finite(tensor: torch.Tensor) -> bool:
    """True when every value is finite.

    `torch.aminmax` propagates NaN and exposes ±inf in one read-only pass, about 5x faster on CPU than
    ``isfinite(t).all()`` (which materialises a bool tensor); it dominated tokenizing large models.
    """
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    if tensor.dtype.itemsize < 2:  # float8 kinds: no aminmax kernel
        return bool(torch.isfinite(tensor.to(torch.float32)).all())
    low, high = torch.aminmax(tensor)
    return math.isfinite(float(low)) and math.isfinite(float(high))


def _check_finite(name: str, tensor: torch.Tensor) -> None:
    if not _all_finite(tensor):
        bad = int((~torch.isfinite(tensor)).sum())
        raise TokenizerError(
            f"tensor {name!r} (shape {tuple(tensor.shape)}) has {bad} non-finite value(s) (NaN/inf); "
            "a diverged checkpoint cannot be tokenized"
        )


def detokenize(tokenized: TokenizedModel) -> dict[str, torch.Tensor]:
    """Rebuild the state dict: same names, order, shapes and dtypes.

    Values are bit-identical (`torch.equal`) for float32/float16/bfloat16 and passthrough tensors when the
    model was tokenized without normalization; with normalization they match up to float32 rounding of the
    standardization. float64 tensors (only with ``cast_float64=True``) are float32-exact. Tensors listed in
    `TokenizedModel.skipped` are not restored.
    """
    layout = tokenized.layout
    if layout.get("format_version") != LAYOUT_FORMAT_VERSION:
        raise TokenizerError(f"layout format_version {layout.get('format_version')!r} is not supported")
    size = layout["token_size"]
    if tokenized.token_size != size:
        raise TokenizerError(f"tokens have size {tokenized.token_size} but the layout says {size}")
    tokens = tokenized.tokens.detach().cpu()
    out: dict[str, torch.Tensor] = {}
    for layer in layout["layers"]:
        block = _layer_block(tokens, layer, size)
        for member in layer["members"]:
            shape = list(member["shape"])
            dst = torch.empty(shape, dtype=_dtype_from_str(member["dtype"]))
            if block is not None and dst.numel():
                src = block[:, member["start"] : member["start"] + member["width"]]
                norm = member["norm"]
                if norm is not None:
                    src = src * norm["std"] + norm["mean"]
                if member["transpose"]:
                    dst.transpose(0, 1).copy_(src.reshape([shape[1], shape[0], *shape[2:]]))
                else:
                    dst.view(layer["rows"], member["width"]).copy_(src)
            out[member["name"]] = dst
    for entry in layout["passthrough"]:
        out[entry["name"]] = _decode_passthrough(entry)
    missing = [name for name in layout["order"] if name not in out]
    if missing:
        raise TokenizerError(f"layout is inconsistent: no data for {missing[:5]}")
    return {name: out[name] for name in layout["order"]}
