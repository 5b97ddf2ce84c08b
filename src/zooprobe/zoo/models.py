"""Subject models: the plain PyTorch modules whose weights a zoo stores.

`SubjectModel` is what a user gets back from a zoo entry (`zoo.model(i)`), and what the one-at-a-time
trainer trains. The population trainer (`population.py`) computes exactly the same function over stacked
parameters; a test checks both agree.

Parameter names (the state dict keys stored in a zoo):

- MLP: ``layers.{i}.linear``, ``layers.{i}.bn`` (BatchNorm1d), ``layers.{i}.ln`` (LayerNorm), ``head``.
- CNN: ``blocks.{i}.conv`` (Conv1d/Conv2d, kernel 3, padding 1), ``blocks.{i}.bn``, with 2x average pooling
  after block 0, then average pooling to a fixed size (2x2 or 4), ``hidden.linear``, ``hidden.bn``,
  ``hidden.ln``, ``head``.

Residual connections add a block's input to its output for every block whose input and output shapes
match (blocks 1..depth-1). Dropout follows the activation of hidden linear layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zooprobe.zoo.space import ArchSpec, ModelSpec

CNN_HIDDEN = 32
POOLED = 4  # positions after the CNN's average pooling: 2x2 for images, 4 for 1-D signals
LEAKY_SLOPE = 0.01


def activation_fn(name: str):
    """The elementwise nonlinearity called ``name``; one table for both trainers."""
    return {
        "relu": F.relu,
        "tanh": torch.tanh,
        "gelu": F.gelu,
        "sigmoid": torch.sigmoid,
        "leaky_relu": lambda x: F.leaky_relu(x, LEAKY_SLOPE),
    }[name]


class _Act(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = activation_fn(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class _Dense(nn.Module):
    """Linear -> [BatchNorm1d] -> [LayerNorm] -> activation -> [Dropout]."""

    def __init__(self, d_in: int, d_out: int, arch: ArchSpec, activation: str, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.bn = nn.BatchNorm1d(d_out) if arch.has_batch_norm else None
        self.ln = nn.LayerNorm(d_out) if arch.has_layer_norm else None
        self.act = _Act(activation)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.ln is not None:
            x = self.ln(x)
        x = self.act(x)
        if self.drop is not None:
            x = self.drop(x)
        return x


class _ConvBlock(nn.Module):
    """Conv (kernel 3, padding 1) -> [BatchNorm] -> activation."""

    def __init__(self, c_in: int, c_out: int, arch: ArchSpec, activation: str) -> None:
        super().__init__()
        conv2d = len(arch.input_shape) == 3
        self.conv = (nn.Conv2d if conv2d else nn.Conv1d)(c_in, c_out, 3, padding=1)
        self.bn = (nn.BatchNorm2d if conv2d else nn.BatchNorm1d)(c_out) if arch.has_batch_norm else None
        self.act = _Act(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class SubjectModel(nn.Module):
    """An MLP or CNN of the zoo's architecture space, built from its `ArchSpec` and per-model flags."""

    def __init__(self, arch: ArchSpec, activation: str, dropout: float = 0.0, residual: bool = False) -> None:
        super().__init__()
        self.arch = arch
        self.residual = residual
        if arch.family == "mlp":
            d_in = math.prod(arch.input_shape)
            self.layers = nn.ModuleList(
                _Dense(d_in if i == 0 else arch.width, arch.width, arch, activation, dropout)
                for i in range(arch.depth)
            )
            self.head = nn.Linear(arch.width, arch.n_classes)
        elif arch.family == "cnn":
            self.blocks = nn.ModuleList(
                _ConvBlock(arch.input_shape[0] if i == 0 else arch.width, arch.width, arch, activation)
                for i in range(arch.depth)
            )
            self.hidden = _Dense(arch.width * POOLED, CNN_HIDDEN, arch, activation, dropout)
            self.head = nn.Linear(CNN_HIDDEN, arch.n_classes)
        else:
            raise ValueError(f"unknown family {arch.family!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch.family == "mlp":
            x = x.flatten(1)
            for i, layer in enumerate(self.layers):
                x = x + layer(x) if (self.residual and i > 0) else layer(x)
            return self.head(x)
        for i, block in enumerate(self.blocks):
            x = x + block(x) if (self.residual and i > 0) else block(x)
            if i == 0:  # halve the resolution once: later blocks cost a quarter (2-D) or half (1-D)
                x = F.avg_pool2d(x, 2) if x.dim() == 4 else F.avg_pool1d(x, 2)
        # to a fixed size: 2x2 for 8x8 images, 4 for length-40 signals
        x = F.adaptive_avg_pool2d(x, 2) if x.dim() == 4 else F.adaptive_avg_pool1d(x, 4)
        return self.head(self.hidden(x.flatten(1)))


def apply_init(model: nn.Module, scheme: str) -> None:
    """Initialise every Linear/Conv weight with ``scheme`` (biases zero); ``default`` keeps PyTorch's."""
    if scheme == "default":
        return
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
            w = m.weight
            if scheme == "kaiming_normal":
                nn.init.kaiming_normal_(w, nonlinearity="relu")
            elif scheme == "xavier_uniform":
                nn.init.xavier_uniform_(w)
            elif scheme == "xavier_normal":
                nn.init.xavier_normal_(w)
            elif scheme == "orthogonal":
                nn.init.orthogonal_(w)
            elif scheme == "normal":
                nn.init.normal_(w, std=0.05)
            else:
                raise ValueError(f"unknown init scheme {scheme!r}")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_model(spec: ModelSpec) -> SubjectModel:
    """The initialised subject model of ``spec``: same weights on every call and every machine."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = SubjectModel(spec.arch, spec.activation, spec.dropout, spec.has_residual)
        apply_init(model, spec.init)
    return model


def model_from_metadata(meta: dict, input_shape: tuple[int, ...], n_classes: int = 10) -> SubjectModel:
    """Rebuild the module of a zoo row (for loading its stored weights and running it)."""
    arch = ArchSpec(
        task=str(meta["dataset"]),
        family=str(meta["family"]),
        depth=int(meta["depth"]),
        width=int(meta["width"]),
        has_batch_norm=bool(meta["has_batch_norm"]),
        has_layer_norm=bool(meta["has_layer_norm"]),
        input_shape=tuple(input_shape),
        n_classes=n_classes,
    )
    return SubjectModel(arch, str(meta["activation"]), float(meta["dropout"]), bool(meta["has_residual"]))
