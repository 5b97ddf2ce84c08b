"""`TokenizedModel`, one tokenized state dict (tokens, mask, positions and the JSON layout that inverts them),
and `detokenize`, the exact inverse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zooprobe.core.tensorfile import open_safetensors, write_safetensors
from zooprobe.tokens.inverse import _decode_passthrough, _layer_block, _member_values
from zooprobe.tokens.tokenizer_config import LAYOUT_FORMAT_VERSION, TokenizerError, _dtype_from_str, _loads

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
