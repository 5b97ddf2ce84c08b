"""Distributed training helpers (``torchrun``): one process per device, gloo on CPU, nccl on GPU.

Under ``torchrun`` the environment carries ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without it every
helper degrades to the single-process case, so the trainer has one code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from zooprobe.core.torchrun import torchrun_env


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun set up (no-op in a plain single process)."""
    rank, world, local = torchrun_env()
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list without distribution)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(info: DistInfo, flag: bool) -> bool:
    """True if `flag` is True on any rank (so every rank takes the same early-stopping decision)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def sum_gradients(info: DistInfo, module: torch.nn.Module) -> None:
    """Sum every parameter's gradient over the ranks (a missing gradient counts as zero), in place."""
    if not info.enabled:
        return
    for p in module.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)


def sum_value(info: DistInfo, value: float) -> float:
    """`value` summed over the ranks (itself without distribution)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item())


def sum_values(info: DistInfo, values: list[float]) -> list[float]:
    """Each of `values` summed over the ranks, in one reduction (themselves without distribution)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def all_gather_rows(info: DistInfo, tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `tensor` (the row counts may differ; the other dimensions may not), in rank order.

    This rank's entry is `tensor` itself, with its autograd graph; the others' are constants. A loss over
    all rows then gives each rank the gradient through its own rows, and summing the ranks' gradients
    (`sum_gradients`) gives the gradient of that loss over the whole batch.
    """
    if not info.enabled:
        return [tensor]
    rows = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    counts = [torch.zeros_like(rows) for _ in range(info.world_size)]
    dist.all_gather(counts, rows)
    sizes = [int(c.item()) for c in counts]
    padded = tensor.detach().new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor.detach()
    out = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(out, padded.contiguous())
    return [tensor if r == info.rank else out[r][:n] for r, n in enumerate(sizes)]


class NoWriter:
    """Stands in for the TensorBoard writer on ranks other than 0: they log nothing."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def add_text(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "DistInfo",
    "NoWriter",
    "all_gather_objects",
    "all_gather_rows",
    "any_rank",
    "barrier",
    "cleanup",
    "init_distributed",
    "sum_gradients",
    "sum_value",
    "sum_values",
]
