"""The environment torchrun gives its processes, read in one place for every layer (log lines and progress
bars, sharded zoo builds, distributed training)."""

from __future__ import annotations

import os
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


__all__ = ["TorchrunEnv", "torchrun_env"]
