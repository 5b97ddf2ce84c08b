"""The environment torchrun gives its processes, read in one place for every layer (log lines and progress
bars, sharded zoo builds, distributed training), and the barrier of a sharded zoo build."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import NamedTuple


class TorchrunEnv(NamedTuple):
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def torchrun_env() -> TorchrunEnv:
    """``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` of a process torchrun started with more than one process;
    ``(0, 1, 0)`` otherwise (a plain process, or torchrun with one)."""
    world = int(os.environ.get("WORLD_SIZE") or 1)
    if world <= 1:
        return TorchrunEnv()
    return TorchrunEnv(int(os.environ.get("RANK") or 0), world, int(os.environ.get("LOCAL_RANK") or 0))


SHARD_WAIT = timedelta(days=7)
"""How long torchrun processes wait for each other (the slowest shard) before giving up."""


@contextlib.contextmanager
def process_group(world: int) -> Iterator[Callable[[], None]]:
    """A barrier over torchrun's processes (gloo; joined here unless the caller already has a group)."""
    if world == 1:
        yield lambda: None
        return
    import torch.distributed as dist  # heavy: only under torchrun

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", timeout=SHARD_WAIT)
    try:
        yield lambda: dist.barrier()
    finally:
        if created:
            dist.destroy_process_group()


__all__ = ["SHARD_WAIT", "TorchrunEnv", "process_group", "torchrun_env"]
