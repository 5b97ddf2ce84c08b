"""Subject models: the plain PyTorch modules whose weights a zoo stores.

`SubjectModel` is what a user gets back from a zoo entry (`zoo.model(i)`), and what the one-at-a-time
trainer trains. The population trainer (`population.py`) computes exactly the same function over stacked
parameters; a test checks both agree.

Parameter names (the state dict keys stored in a zoo):

- MLP: ``layers.{i}.linear``, ``layers.{i}.bn`` (BatchNorm1d), ``layers.{i}.ln`` (LayerNorm),
  ``layers.{i}.gn`` (GroupNorm), ``head``.
- CNN: ``blocks.{i}.conv`` (Conv1d/Conv2d, kernel k, padding k // 2), ``blocks.{i}.bn``, ``blocks.{i}.gn``,
  halving the resolution at the arch's `downsample_blocks` (2x average or max pooling after the block, or
  a stride-2 convolution in it; by default after block 0 only), then average pooling to a fixed size (2x2
  or 4), ``hidden.linear``, ``hidden.bn``, ``hidden.ln``, ``hidden.gn``, ``head``.

Residual connections add a block's input to its output for every block whose input and output shapes
match (blocks 1..depth-1 that are not strided). Dropout follows the activation of hidden linear layers.
GroupNorm uses `norm_groups` groups (4 from width 16, else 1). A regression task has one output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zooprobe.zoo.config import CNN_HIDDEN, POOLED
from zooprobe.zoo.space import ArchSpec, ModelSpec

LEAKY_SLOPE = 0.01


def activation_fn(name: str):
    """The elementwise nonlinearity called ``name``; one table for both trainers."""
    return {
        "relu": F.relu,
        "tanh": torch.tanh,
        "gelu": F.gelu,
        "sigmoid": torch.sigmoid,
        "leaky_relu": lambda x: F.leaky_relu(x, LEAKY_SLOPE),
        "silu": F.silu,
        "elu": F.elu,
    }[name]


def norm_groups(channels: int) -> int:
    """GroupNorm's group count for ``channels`` features: 4 when that leaves at least 4 per group, else 1
    (a group of one or two dense features normalizes to constants: dead or +-1 units)."""
    return 4 if channels % 4 == 0 and channels >= 16 else 1


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
        self.gn = nn.GroupNorm(norm_groups(d_out), d_out) if arch.has_group_norm else None
        self.act = _Act(activation)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.ln is not None:
            x = self.ln(x)
        if self.gn is not None:
            x = self.gn(x)
        x = self.act(x)
        if self.drop is not None:
            x = self.drop(x)
        return x


class _ConvBlock(nn.Module):
    """Conv (kernel k, padding k // 2, stride 1 or 2) -> [BatchNorm] -> [GroupNorm] -> activation."""

    def __init__(self, c_in: int, c_out: int, arch: ArchSpec, activation: str, stride: int = 1) -> None:
        super().__init__()
        conv2d = len(arch.input_shape) == 3
        k = arch.kernel_size
        self.conv = (nn.Conv2d if conv2d else nn.Conv1d)(c_in, c_out, k, padding=k // 2, stride=stride)
        self.bn = (nn.BatchNorm2d if conv2d else nn.BatchNorm1d)(c_out) if arch.has_batch_norm else None
        self.gn = nn.GroupNorm(norm_groups(c_out), c_out) if arch.has_group_norm else None
        self.act = _Act(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.gn is not None:
            x = self.gn(x)
        return self.act(x)


class SubjectModel(nn.Module):
    """An MLP or CNN of the zoo's architecture space, built from its `ArchSpec` and per-model flags."""

    def __init__(self, arch: ArchSpec, activation: str, dropout: float = 0.0, residual: bool = False) -> None:
        super().__init__()
        self.arch = arch
        self.residual = residual
        if arch.base_family == "mlp":
            d_in = math.prod(arch.input_shape)
            self.layers = nn.ModuleList(
                _Dense(d_in if i == 0 else arch.width, arch.width, arch, activation, dropout)
                for i in range(arch.depth)
            )
            self.head = nn.Linear(arch.width, arch.n_classes)
        elif arch.base_family == "cnn":
            down = arch.downsample_blocks if arch.pooling == "stride" else ()
            self.blocks = nn.ModuleList(
                _ConvBlock(
                    arch.input_shape[0] if i == 0 else arch.width,
                    arch.width,
                    arch,
                    activation,
                    stride=2 if i in down else 1,
                )
                for i in range(arch.depth)
            )
            self.hidden = _Dense(arch.width * POOLED, CNN_HIDDEN, arch, activation, dropout)
            self.head = nn.Linear(CNN_HIDDEN, arch.n_classes)
        else:
            raise ValueError(f"unknown family {arch.family!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch.base_family == "mlp":
            x = x.flatten(1)
            for i, layer in enumerate(self.layers):
                x = x + layer(x) if (self.residual and i > 0) else layer(x)
            return self.head(x)
        down, pooling = self.arch.downsample_blocks, self.arch.pooling
        for i, block in enumerate(self.blocks):
            strided = pooling == "stride" and i in down
            x = x + block(x) if (self.residual and i > 0 and not strided) else block(x)
            if i in down and pooling == "avg":  # later blocks cost a quarter (2-D) or half (1-D)
                x = F.avg_pool2d(x, 2) if x.dim() == 4 else F.avg_pool1d(x, 2)
            elif i in down and pooling == "max":
                x = F.max_pool2d(x, 2) if x.dim() == 4 else F.max_pool1d(x, 2)
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
            elif scheme == "kaiming_uniform":
                nn.init.kaiming_uniform_(w, nonlinearity="relu")
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


def model_from_metadata(
    meta: dict, input_shape: tuple[int, ...], n_classes: int = 10, pool_every: int = 0
) -> SubjectModel:
    """Rebuild the module of a zoo row (for loading its stored weights and running it); ``pool_every``
    comes from the zoo's generator config. Columns added after the first zoos default to their old value."""

    def get(name: str, default: object) -> object:
        value = meta.get(name, default)
        return default if value is None or value != value else value  # missing or NaN

    conv = str(meta["family"]).removeprefix("res") == "cnn"
    arch = ArchSpec(
        task=str(meta["dataset"]),
        family=str(meta["family"]),
        depth=int(meta["depth"]),
        width=int(meta["width"]),
        has_batch_norm=bool(meta["has_batch_norm"]),
        has_layer_norm=bool(meta["has_layer_norm"]),
        input_shape=tuple(input_shape),
        n_classes=n_classes,
        kernel_size=int(get("kernel_size", 3)) if conv else 3,  # type: ignore[call-overload]
        pooling=str(get("pooling", "avg")) if conv else "avg",
        pool_every=pool_every,
        has_group_norm=bool(get("has_group_norm", False)),
    )
    return SubjectModel(arch, str(meta["activation"]), float(meta["dropout"]), bool(meta["has_residual"]))
