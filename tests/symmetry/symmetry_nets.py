"""Random subject networks (zooprobe MLPs/CNNs, nn.Sequential MLPs) and modules rebuilt from transformed
state dicts, for the symmetry tests: a transform is exact when both modules agree on random inputs."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from hypothesis import strategies as st
from torch import nn

from zooprobe.symmetry import Architecture
from zooprobe.zoo.models import SubjectModel, _Dense
from zooprobe.zoo.space import CNN_HIDDEN, POOLED, ArchSpec

SEQ_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
}


@dataclass(frozen=True)
class Subject:
    """A network to transform: its state dict, what the transforms are told, and how to run a state dict."""

    kind: str  # mlp | cnn | sequential
    spec: ArchSpec | None
    activation: str
    residual: bool
    hidden: tuple[int, ...] = ()
    norm: str = "none"
    d_in: int = 6
    n_out: int = 3

    @property
    def architecture(self) -> Architecture:
        strided = (
            self.spec.downsample_blocks if self.spec is not None and self.spec.pooling == "stride" else ()
        )
        pooling = self.spec.pooling if self.spec is not None else "avg"
        return Architecture(self.activation, self.residual, pooling, tuple(strided))

    def inputs(self, n: int = 7) -> torch.Tensor:
        g = torch.Generator().manual_seed(1)
        shape = self.spec.input_shape if self.spec is not None else (self.d_in,)
        return torch.randn((n, *shape), generator=g)

    def module(self, sd: dict[str, torch.Tensor]) -> nn.Module:
        """A module whose parameters are `sd` (widths and norm layers read off it)."""
        if self.kind == "sequential":
            linear = sorted(int(k.split(".")[0]) for k, v in sd.items() if v.ndim == 2)
            slots: dict[int, nn.Module] = {}
            fan_in = self.d_in
            for i, index in enumerate(linear):
                size = int(sd[f"{index}.weight"].shape[0])
                slots[index] = nn.Linear(fan_in, size, bias=f"{index}.bias" in sd)
                fan_in = size
                if i + 1 == len(linear):
                    break
                if f"{index + 1}.running_mean" in sd:
                    slots[index + 1] = nn.BatchNorm1d(size)
                elif f"{index + 1}.weight" in sd:
                    slots[index + 1] = nn.LayerNorm(size)
                slots[linear[i + 1] - 1] = SEQ_ACTIVATIONS[self.activation]()
            layers = [slots.get(j, nn.Identity()) for j in range(linear[-1] + 1)]
            model: nn.Module = nn.Sequential(*layers)
        else:
            assert self.spec is not None
            key = "layers.0.linear.weight" if self.kind == "mlp" else "blocks.0.conv.weight"
            spec = replace(
                self.spec,
                width=int(sd[key].shape[0]),
                has_batch_norm=any(".bn." in k for k in sd),
            )
            model = SubjectModel(spec, self.activation, 0.0, self.residual)
            if self.kind == "cnn" and sd["hidden.linear.weight"].shape[0] != CNN_HIDDEN:
                n_hidden = int(sd["hidden.linear.weight"].shape[0])
                model.hidden = _Dense(spec.width * POOLED, n_hidden, spec, self.activation, 0.0)
                model.head = nn.Linear(n_hidden, spec.n_classes)
        model.load_state_dict(sd, strict=True)
        return model.eval()

    def outputs(self, sd: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return self.module(sd).double()(self.inputs().double())


def _randomize(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Non-trivial BatchNorm statistics and affine parameters (fresh ones are 0/1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.LayerNorm | nn.GroupNorm):
            m.weight.data.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def zoo_subject(
    family: str,
    activation: str,
    *,
    depth: int = 2,
    width: int = 4,
    norm: str = "none",
    residual: bool = False,
    pooling: str = "avg",
    conv2d: bool = True,
    seed: int = 0,
) -> tuple[Subject, dict[str, torch.Tensor]]:
    input_shape = (16,) if family == "mlp" else ((2, 8, 8) if conv2d else (2, 12))
    spec = ArchSpec(
        task="digits",
        family=family,
        depth=depth,
        width=width,
        has_batch_norm=norm == "batch",
        has_layer_norm=norm == "layer",
        has_group_norm=norm == "group",
        input_shape=input_shape,
        n_classes=3,
        pooling=pooling,
    )
    torch.manual_seed(seed)
    model = SubjectModel(spec, activation, 0.0, residual)
    return Subject(family, spec, activation, residual), _randomize(model, seed)


def sequential_subject(
    activation: str, hidden: tuple[int, ...], norm: str = "none", seed: int = 0
) -> tuple[Subject, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    fan_in = 6
    for size in hidden:
        layers.append(nn.Linear(fan_in, size))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(size))
        elif norm == "layer":
            layers.append(nn.LayerNorm(size))
        layers.append(SEQ_ACTIVATIONS[activation]())
        fan_in = size
    layers.append(nn.Linear(fan_in, 3))
    subject = Subject("sequential", None, activation, False, hidden, norm)
    return subject, _randomize(nn.Sequential(*layers), seed)


@st.composite
def subjects(draw, activations=("relu", "tanh", "gelu", "leaky_relu"), norms=("none", "batch", "layer")):
    """A random zooprobe MLP/CNN or nn.Sequential MLP with its state dict."""
    activation = draw(st.sampled_from(activations))
    norm = draw(st.sampled_from(norms))
    seed = draw(st.integers(0, 10_000))
    kind = draw(st.sampled_from(["mlp", "cnn", "sequential"]))
    if kind == "sequential":
        hidden = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
        return sequential_subject(activation, hidden, norm, seed)
    if kind == "cnn" and norm == "layer":
        norm = draw(st.sampled_from(["group", "none"]))
    return zoo_subject(
        kind,
        activation,
        depth=draw(st.integers(1, 3)),
        width=draw(st.sampled_from([2, 4, 5])),
        norm=norm,
        residual=draw(st.booleans()),
        pooling=draw(st.sampled_from(["avg", "max", "none", "stride"])),
        conv2d=draw(st.booleans()),
        seed=seed,
    )
