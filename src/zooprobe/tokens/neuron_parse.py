"""A state dict read as neuron layers (zooprobe.tokens.neurons): the main layers in state-dict order with
their norms attached and their connectivity (span), and the signature that groups same-shape models."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from zooprobe.errors import InvalidInputError


@dataclass
class Norm:
    kind: str  # "bn" | "ln"
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    running_mean: torch.Tensor | None = None
    running_var: torch.Tensor | None = None


@dataclass
class Layer:
    weight: torch.Tensor  # [out, in, *kernel]
    bias: torch.Tensor | None
    norms: list[Norm] = field(default_factory=list)
    span: int = 0  # input columns per previous-layer neuron; 0 = reads external inputs

    @property
    def out(self) -> int:
        return int(self.weight.shape[0])

    def signature(self) -> tuple:
        return (
            tuple(self.weight.shape),
            self.bias is not None,
            tuple(
                (n.kind, n.weight is not None, n.bias is not None, n.running_mean is not None)
                for n in self.norms
            ),
            self.span,
        )


def parse_state_dict(sd: Mapping[str, torch.Tensor]) -> list[Layer]:
    """Main layers in state-dict order with attached norms and connectivity (see the docs of
    `zooprobe.tokens.neurons`)."""
    tensors = {k: v.float() for k, v in sd.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    layers: list[Layer] = []
    used: set[str] = set()
    pending: dict[str, dict[str, torch.Tensor]] = {}

    def flush() -> None:
        for prefix, leaves in list(pending.items()):
            size = next(iter(leaves.values())).numel()
            target = next((ly for ly in reversed(layers) if ly.out == size), None)
            if target is not None:
                kind = "bn" if ("running_mean" in leaves or "running_var" in leaves) else "ln"
                target.norms.append(
                    Norm(
                        kind,
                        leaves.get("weight"),
                        leaves.get("bias"),
                        leaves.get("running_mean"),
                        leaves.get("running_var"),
                    )
                )
            del pending[prefix]

    for name, t in tensors.items():
        if name in used:
            continue
        if t.ndim >= 2 and name.endswith("weight"):
            flush()
            bname = name[: -len("weight")] + "bias"
            b = tensors.get(bname)
            if b is not None and b.ndim == 1 and b.numel() == t.shape[0]:
                used.add(bname)
            else:
                b = None
            layers.append(Layer(t, b))
            used.add(name)
        elif t.ndim == 1:
            prefix, _, leaf = name.rpartition(".")
            if leaf in ("weight", "bias", "running_mean", "running_var"):
                pending.setdefault(prefix, {})[leaf] = t
    flush()
    for i, ly in enumerate(layers):
        if i == 0:
            continue
        prev, n_in = layers[i - 1].out, int(ly.weight.shape[1])
        ly.span = 1 if n_in == prev else (n_in // prev if n_in % prev == 0 else 0)
    if not layers:
        raise InvalidInputError("the state dict has no main layer (no '*weight' tensor with 2 or more dims)")
    return layers


def signature(layers: list[Layer]) -> tuple:
    return tuple(ly.signature() for ly in layers)
