"""The inverse's building blocks: passthrough values to and from their JSON layout entries, and a layer's rows
(or one member's values) read back out of a token sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from zooprobe.tokens.tokenizer_config import _check_finite, _dtype_from_str, _dtype_str


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
