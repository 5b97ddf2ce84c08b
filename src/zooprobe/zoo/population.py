"""Population-batched training: many same-architecture models trained as one set of stacked tensors.

Training one tiny model at a time is dominated by per-operation overhead, not arithmetic. Here a cohort
of ``M`` models with identical parameter shapes is held as one flat parameter matrix ``[M, D]``; every
layer runs once for all models (batched matmul, grouped convolution, BatchNorm over ``M * C`` channels),
and each model keeps its own data order, initialisation, dropout rate, residual flag, activation,
optimizer, learning rate and weight decay. Models never interact: the loss is the sum of per-model mean
losses, so each model's gradient is exactly its own.

The function computed for model ``m`` equals `SubjectModel` with model ``m``'s weights, and the optimizer
updates equal ``torch.optim``'s (SGD with momentum, Adam, AdamW, RMSprop with default betas/alpha/eps).
Both facts are tested against the plain PyTorch implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zooprobe.zoo.models import CNN_HIDDEN, LEAKY_SLOPE, activation_fn, norm_groups
from zooprobe.zoo.space import ArchSpec, ModelSpec

BN_MOMENTUM = 0.1
EPS = 1e-5


@dataclass(frozen=True)
class _Slot:
    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _act_forward(name: str, x: torch.Tensor, out: torch.Tensor) -> None:
    """``out = act(x)`` written in place (``out`` is a slice of a larger buffer)."""
    if name == "relu":
        torch.clamp_min(x, 0.0, out=out)
    elif name == "leaky_relu":
        torch._C._nn.leaky_relu(x, LEAKY_SLOPE, out=out)
    elif name == "tanh":
        torch.tanh(x, out=out)
    elif name == "sigmoid":
        torch.sigmoid(x, out=out)
    elif name == "gelu":
        torch._C._nn.gelu(x, out=out)
    elif name == "silu":
        torch.ops.aten.silu.out(x, out=out)
    elif name == "elu":
        torch.ops.aten.elu.out(x, 1.0, 1, 1, out=out)
    else:
        raise ValueError(f"unknown activation {name!r}")


_ONE = torch.tensor(1.0)
_ONES_LIKE: dict[tuple[tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}


def _ones_like(x: torch.Tensor) -> torch.Tensor:
    """Ones with ``x``'s shape and strides, read-only and reused.

    ``*_backward(ones, x)`` yields an activation's derivative; the ones must share ``x``'s memory layout
    (a contiguous or broadcast operand next to a channels-last slice is several times slower).
    """
    key = (tuple(x.shape), x.stride())
    ones = _ONES_LIKE.get(key)
    if ones is None:
        if len(_ONES_LIKE) >= 16:
            _ONES_LIKE.clear()
        ones = _ONES_LIKE[key] = torch.ones_like(x)
    return ones


def _act_derivative(
    name: str, x: torch.Tensor, y: torch.Tensor, ones: torch.Tensor, out: torch.Tensor
) -> None:
    """``out = act'(x)`` written in place, from the input ``x``, the output ``y = act(x)`` or ``ones``."""
    if name == "relu":
        torch.sign(y, out=out)
    elif name == "leaky_relu":
        torch.ops.aten.leaky_relu_backward.grad_input(ones, x, LEAKY_SLOPE, False, grad_input=out)
    elif name == "tanh":
        torch.addcmul(_ONE, y, y, value=-1.0, out=out)
    elif name == "sigmoid":
        torch.addcmul(y, y, y, value=-1.0, out=out)
    elif name == "gelu":
        torch.ops.aten.gelu_backward.grad_input(ones, x, grad_input=out)
    elif name == "silu":
        torch.ops.aten.silu_backward.grad_input(ones, x, grad_input=out)
    elif name == "elu":
        torch.ops.aten.elu_backward.grad_input(ones, 1.0, 1, 1, False, x, grad_input=out)
    else:
        raise ValueError(f"unknown activation {name!r}")


class _SegmentedActivation(torch.autograd.Function):
    """Apply a different activation to each contiguous block of models (dimension 0), in one buffer.

    Plain autograd over ``cat([act(x[s:e]) ...])`` back-propagates each slice into a full-size zero
    tensor and runs a few small operations per block. Here the forward pass writes every block's result
    and its derivative straight into two buffers, so the backward pass is a single multiplication.
    """

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, segments: tuple[tuple[str, int, int], ...], dim: int, unit: int
    ) -> torch.Tensor:
        out = torch.empty_like(x)  # same strides as x when x is dense (channels last, transposed views)
        if out.stride() != x.stride():
            x = x.contiguous()
            out = torch.empty_like(x)
        deriv = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        ones = _ones_like(x) if deriv is not None else x
        for name, s, e in segments:
            start, length = s * unit, (e - s) * unit
            xs, ys = x.narrow(dim, start, length), out.narrow(dim, start, length)
            _act_forward(name, xs, ys)
            if deriv is not None:
                _act_derivative(
                    name, xs, ys, ones.narrow(dim, start, length), deriv.narrow(dim, start, length)
                )
        if deriv is not None:
            ctx.save_for_backward(deriv)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (deriv,) = ctx.saved_tensors
        return g * deriv, None, None, None


class _ContiguousChannelsLastGrad(torch.autograd.Function):
    """``x.contiguous()`` of a channels-last ``x`` whose gradient goes back channels last.

    Plain ``contiguous()`` (or the copying ``reshape`` it stands for) hands the layer below a contiguous
    gradient, and the pooling backward is 3-4x slower on a gradient whose layout differs from its input's.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return g.contiguous(memory_format=torch.channels_last)


def _runs(keys: list[str]) -> list[tuple[str, int, int]]:
    """Contiguous runs ``(key, start, end)`` of equal keys."""
    runs: list[tuple[str, int, int]] = []
    for i, k in enumerate(keys):
        if runs and runs[-1][0] == k:
            runs[-1] = (k, runs[-1][1], i + 1)
        else:
            runs.append((k, i, i + 1))
    return runs


class Population:
    """Stacked parameters and buffers of ``M`` models of one architecture.

    Activations are laid out model-major, channels last: ``[M, B, features]`` for dense layers and
    ``[M, B, *spatial, C]`` for convolutions, so every layer is a batched matmul (convolutions via im2col)
    and per-model choices broadcast over dimension 0. ``specs`` must be grouped by optimizer (see
    `order_for_population`) so that each optimizer updates a contiguous block of rows in place.
    """

    def __init__(self, arch: ArchSpec, specs: list[ModelSpec], state_dicts: list[dict[str, torch.Tensor]]):
        if not specs or len(specs) != len(state_dicts):
            raise ValueError("need one state dict per spec and at least one model")
        self.arch = arch
        self.specs = specs
        self.m = len(specs)
        first = state_dicts[0]
        self.keys = list(first)  # state dict order of SubjectModel
        self.slots: dict[str, _Slot] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        offset = 0
        for k in self.keys:
            if k.endswith(("running_mean", "running_var")):
                self.buffers[k] = torch.stack([sd[k] for sd in state_dicts]).contiguous()
            elif not k.endswith("num_batches_tracked"):
                self.slots[k] = _Slot(k, tuple(first[k].shape), offset)
                offset += self.slots[k].numel
        flat = torch.empty(self.m, offset)
        for k, slot in self.slots.items():
            flat[:, slot.offset : slot.offset + slot.numel] = torch.stack(
                [sd[k].reshape(-1) for sd in state_dicts]
            )
        self.flat = flat.requires_grad_(True)
        self._views: dict[str, torch.Tensor] | None = None
        self.steps = 0  # BatchNorm's num_batches_tracked, identical for all models of a cohort
        self._per_model_settings()

    def _per_model_settings(self) -> None:
        specs = self.specs
        self.dropout = torch.tensor([s.dropout for s in specs], dtype=torch.float32)
        self.residual = torch.tensor([float(s.has_residual) for s in specs])
        self.act_segments = tuple(_runs([s.activation for s in specs]))
        # rows of the models that use dropout, their rates and kept-unit scales 1/(1-p)
        rows = [i for i, s in enumerate(specs) if s.dropout > 0]
        self.dropout_rows = torch.tensor(rows, dtype=torch.long) if len(rows) < len(specs) else None
        self.dropout_p = self.dropout[rows].view(-1, 1, 1)
        self.dropout_scale = 1.0 / (1.0 - self.dropout_p)
        if len({a for a, _, _ in self.act_segments}) != len(self.act_segments):
            raise ValueError("specs must be grouped by activation (see order_for_population)")

    # ------------------------------------------------------------------ parameters
    def param(self, name: str) -> torch.Tensor:
        """Model-stacked view ``[M, *shape]`` of parameter ``name`` (autograd flows into ``flat``).

        Views come from one ``split`` of ``flat`` per forward pass: its backward concatenates the
        gradients in a single pass, where per-parameter slicing would zero-fill ``[M, D]`` per parameter.
        """
        if self._views is None:
            parts = self.flat.split([s.numel for s in self.slots.values()], dim=1)
            self._views = {
                k: t.unflatten(1, s.shape) for (k, s), t in zip(self.slots.items(), parts, strict=True)
            }
        return self._views[name]

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Model ``i``'s state dict, keys and order as in `SubjectModel.state_dict()`."""
        out: dict[str, torch.Tensor] = {}
        flat = self.flat.detach()
        for k in self.keys:
            if k in self.slots:
                s = self.slots[k]
                out[k] = flat[i, s.offset : s.offset + s.numel].reshape(s.shape).clone()
            elif k in self.buffers:
                out[k] = self.buffers[k][i].clone()
            else:
                out[k] = torch.tensor(self.steps, dtype=torch.long)
        return out

    def select(self, rows: list[int]) -> Population:
        """A detached population of a subset of models (for evaluation)."""
        sub = object.__new__(Population)
        sub.__dict__.update(self.__dict__)
        idx = torch.tensor(rows)
        sub.specs = [self.specs[i] for i in rows]
        sub.m = len(rows)
        sub.flat = self.flat.detach()[idx]
        sub._views = None
        sub.buffers = {k: v[idx].clone() for k, v in self.buffers.items()}
        sub._per_model_settings()
        return sub

    def keep(self, rows: list[int]) -> None:
        """Continue training with models ``rows`` only (finished or diverged models leave the stack)."""
        idx = torch.tensor(rows, dtype=torch.long)
        self.specs = [self.specs[i] for i in rows]
        self.m = len(rows)
        self.flat = self.flat.detach()[idx].requires_grad_(True)
        self.buffers = {k: v[idx].contiguous() for k, v in self.buffers.items()}
        self._views = None
        self._per_model_settings()

    # ------------------------------------------------------------------ layers
    def _act(self, x: torch.Tensor, dim: int = 0, unit: int = 1) -> torch.Tensor:
        """Each model's own activation; model ``m`` owns ``x.narrow(dim, m * unit, unit)``."""
        if len(self.act_segments) == 1:
            return activation_fn(self.act_segments[0][0])(x)
        return _SegmentedActivation.apply(x, self.act_segments, dim, unit)

    def _bn(self, x: torch.Tensor, prefix: str, train: bool) -> torch.Tensor:
        """BatchNorm of ``x`` laid out ``[N, M*C, ...]``: one channel per (model, feature)."""
        return F.batch_norm(
            x,
            self.buffers[f"{prefix}.running_mean"].view(-1),
            self.buffers[f"{prefix}.running_var"].view(-1),
            self.param(f"{prefix}.weight").reshape(-1),
            self.param(f"{prefix}.bias").reshape(-1),
            training=train,
            momentum=BN_MOMENTUM,
            eps=EPS,
        )

    def _gn(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        """GroupNorm of ``x`` laid out ``[N, M*C, ...]``: each model's channels form its own groups."""
        c = self.param(f"{prefix}.weight").shape[1]
        return F.group_norm(
            x,
            self.m * norm_groups(c),
            self.param(f"{prefix}.weight").reshape(-1),
            self.param(f"{prefix}.bias").reshape(-1),
            eps=EPS,
        )

    def _dense(self, x: torch.Tensor, prefix: str, train: bool, gen: torch.Generator | None) -> torch.Tensor:
        """x: ``[M, B, d_in]`` -> ``[M, B, d_out]``; Linear -> [BN] -> [LN] -> [GN] -> act -> [dropout]."""
        w, bias = self.param(f"{prefix}.linear.weight"), self.param(f"{prefix}.linear.bias")
        x = torch.baddbmm(bias.unsqueeze(1), x, w.transpose(1, 2))
        if self.arch.has_batch_norm:  # [M, B, H] -> [B, M*H] -> back
            m, b, h = x.shape
            x = (
                self._bn(x.transpose(0, 1).reshape(b, m * h), f"{prefix}.bn", train)
                .view(b, m, h)
                .transpose(0, 1)
            )
        if self.arch.has_layer_norm:
            x = F.layer_norm(x, (x.shape[-1],), eps=EPS)
            x = torch.addcmul(
                self.param(f"{prefix}.ln.bias").unsqueeze(1),
                x,
                self.param(f"{prefix}.ln.weight").unsqueeze(1),
            )
        if self.arch.has_group_norm:
            m, b, h = x.shape
            x = self._gn(x.transpose(0, 1).reshape(b, m * h), f"{prefix}.gn").view(b, m, h).transpose(0, 1)
        x = self._act(x)
        if train and len(self.dropout_p):
            # one draw, for the models that use dropout only (in row order); scale 0 or 1/(1-p)
            keep = torch.rand((len(self.dropout_p), *x.shape[1:]), generator=gen)
            keep = keep.ge_(self.dropout_p).mul_(self.dropout_scale)
            if self.dropout_rows is not None:
                keep = torch.ones(x.shape).index_copy_(0, self.dropout_rows, keep)
            x = x * keep
        return x

    def _conv(self, x: torch.Tensor, prefix: str, train: bool, stride: int = 1) -> torch.Tensor:
        """``[B, M*C_in, H, W]`` -> ``[B, M*C_out, H', W']``: kernel-k convolution (padding k // 2, stride 1
        or 2), a group per model.

        1-D signals run as images of height 1 (kernel ``1 x k``): on CPU a channels-last grouped 2-D
        convolution is several times faster than the grouped 1-D one.
        """
        w = self.param(f"{prefix}.conv.weight")  # [M, out, in, *k]
        m, c_out = w.shape[:2]
        one_d = w.dim() == 4
        k = w.shape[-1]
        y = F.conv2d(
            x,
            w.reshape(m * c_out, w.shape[2], 1, k) if one_d else w.reshape(m * c_out, *w.shape[2:]),
            self.param(f"{prefix}.conv.bias").reshape(-1),
            stride=(1, stride) if one_d else stride,
            padding=(0, k // 2) if one_d else k // 2,
            groups=m,
        )
        if self.arch.has_batch_norm:
            y = self._bn(y, f"{prefix}.bn", train)
        if self.arch.has_group_norm:
            y = self._gn(y, f"{prefix}.gn")
        return self._act(y, 1, c_out)

    def forward(
        self, x: torch.Tensor, train: bool = False, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        """Logits ``[M, B, classes]`` of ``x``: ``[M, B, *input]`` (a batch per model) or ``[B, *input]``."""
        m = self.m
        self._views = None  # fresh views: flat may have been updated in place since the last pass
        r = self.residual
        shared = x.dim() == len(self.arch.input_shape) + 1
        if self.arch.base_family == "mlp":
            h = x.flatten(1).unsqueeze(0).expand(m, -1, -1) if shared else x.flatten(2)
            for i in range(self.arch.depth):
                out = self._dense(h, f"layers.{i}", train, gen)
                h = torch.addcmul(out, r.view(m, 1, 1), h) if i > 0 else out
        else:
            # convolutions run channel-first with models stacked along channels: [B, M*C, *S]
            if shared:
                b = x.shape[0]
                h = x.unsqueeze(1).expand(b, m, *x.shape[1:]).reshape(b, m * x.shape[1], *x.shape[2:])
            else:
                b = x.shape[1]
                h = x.transpose(0, 1).reshape(b, m * x.shape[2], *x.shape[3:])
            one_d = h.dim() == 3
            if one_d:  # [B, M*C, L] -> [B, M*C, 1, L]: see _conv
                h = h.unsqueeze(2)
            h = h.contiguous(memory_format=torch.channels_last)  # faster grouped convolution on CPU
            c = self.arch.width
            r_channels = r.repeat_interleave(c).view(1, m * c, 1, 1)
            down, pooling = self.arch.downsample_blocks, self.arch.pooling
            for i in range(self.arch.depth):
                strided = pooling == "stride" and i in down
                out = self._conv(h, f"blocks.{i}", train, 2 if strided else 1)
                h = torch.addcmul(out, r_channels, h) if i > 0 and not strided else out
                if i in down and pooling == "avg":  # as SubjectModel
                    h = F.avg_pool2d(h, (1, 2) if one_d else 2)
                elif i in down and pooling == "max":
                    h = F.max_pool2d(h, (1, 2) if one_d else 2)
            # contiguous for the per-model flatten below, with the gradient sent back channels last
            h = _ContiguousChannelsLastGrad.apply(F.adaptive_avg_pool2d(h, (1, 4) if one_d else 2))
            # per-model flatten order (channel-major) as in SubjectModel
            h = self._dense(h.reshape(b, m, -1).transpose(0, 1), "hidden", train, gen)
            assert h.shape[-1] == CNN_HIDDEN
        w, bias = self.param("head.weight"), self.param("head.bias")
        return torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))


def order_for_population(specs: list[ModelSpec]) -> list[ModelSpec]:
    """Order a cohort by activation (contiguous blocks), then dropout use (fewer random draws)."""
    return sorted(specs, key=lambda s: (s.activation, s.dropout > 0, s.index))
