"""The one device check: ``cpu``, ``cuda`` or ``cuda:N``, validated by configs and resolved at run time."""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any

from zooprobe.errors import ConfigError

if TYPE_CHECKING:
    import torch

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_device_name(name: object, what: str = "device") -> str:
    """`name` if it is ``cpu``, ``cuda`` or ``cuda:N`` (N a GPU index); otherwise a `ConfigError`."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise ConfigError(f"{what} must be cpu, cuda or cuda:N (N a GPU index), got {name!r}")
    return name


def resolve_device(name: str, local_rank: int | None = None, what: str = "device") -> torch.device:
    """The `torch.device` of `name`; a GPU that is not there is a `ConfigError`. Under torchrun
    (``local_rank`` given) a CUDA device means the process's own GPU, ``cuda:<local_rank>``."""
    import torch  # heavy: keeps `check_device_name` importable by configs without torch

    check_device_name(name, what)
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"{what} {name!r} requested but CUDA is not available on this machine")
    index = int(name.split(":")[1]) if ":" in name else 0
    index = index if local_rank is None else local_rank
    if index >= torch.cuda.device_count():
        raise ConfigError(f"{what} {name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device("cuda", index)


def autocast(device: torch.device, enabled: bool = True) -> Any:
    """bf16 autocast on a CUDA device when `enabled` (mixed precision); a no-op context on the CPU."""
    import torch  # heavy: see resolve_device

    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["autocast", "check_device_name", "resolve_device"]
