"""Training state that never pickles, shared by encoder pretraining and head training.

The state is written and read with `zooprobe.core.tensorfile` (safetensors plus a JSON header);

- `pack_optimizer` / `unpack_optimizer`: an optimizer's state as such tensors plus JSON.
- `warmup_cosine`: the learning-rate factor of linear warmup then cosine decay.
- `config_diff`: how a saved configuration differs from the one asked for (resume refuses a change);
  `check_resumable`: that refusal, and the one for another zoo, for both pretrainings.
- `pack_training_state` / `restore_training_state`: model, optimizer, data generator and torch RNG states
  of a pretraining run (the tensor part of its state file).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from zooprobe.errors import ConfigError


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate factor at `step` of `total`: linear warmup over `warmup` steps, then cosine decay from
    1 to `min_ratio`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every top-level key whose value differs (sorted)."""
    return [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]


def pack_optimizer(opt: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An optimizer's state as (tensors for a safetensors file, JSON-able metadata), for checkpoints that
    never pickle: tensors are named ``optimizer.<param id>.<key>``; scalars and param groups go to JSON."""
    sd = opt.state_dict()
    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unpack_optimizer(opt: Any, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Inverse of `pack_optimizer`: load the state back into `opt` (same parameter groups)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = [dict(g) for g in meta["param_groups"]]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def check_resumable(
    output: Any, meta: Mapping[str, Any], config: Mapping[str, Any], fingerprint: str
) -> None:
    """Refuse to resume the pretraining run saved in `output` (its state's `meta`) with another
    configuration or on another zoo (`fingerprint`)."""
    diff = config_diff(meta["config"], config)
    if diff:
        raise ConfigError(
            f"{output} holds a pretraining run with a different configuration ({'; '.join(diff)}); "
            "use another output folder or resume=False (--overwrite) to start over"
        )
    if meta["zoo_fingerprint"] != fingerprint:
        raise ConfigError(
            f"{output} holds a pretraining run on a different zoo ({meta['zoo_source']!r}, "
            f"fingerprint {meta['zoo_fingerprint'][:12]}); use another output folder or resume=False "
            "(--overwrite)"
        )


def pack_training_state(
    model: torch.nn.Module, opt: Any, gen: torch.Generator, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, optimizer metadata) of a run: ``model.*``, the optimizer's tensors, ``rng.generator``,
    ``rng.torch`` and on CUDA ``rng.cuda``."""
    opt_tensors, opt_meta = pack_optimizer(opt)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(opt_tensors)
    tensors["rng.generator"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    return tensors, opt_meta


def restore_training_state(
    model: torch.nn.Module,
    opt: Any,
    sched: Any,
    gen: torch.Generator,
    tensors: dict[str, torch.Tensor],
    meta: Mapping[str, Any],
    device: torch.device,
) -> None:
    """Inverse of `pack_training_state` (plus the scheduler, whose state is in `meta`), in place."""
    model.load_state_dict(
        {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}, strict=True
    )
    model.to(device)
    unpack_optimizer(opt, tensors, meta["optimizer"])
    sched.load_state_dict(meta["scheduler"])
    gen.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


__all__ = [
    "check_resumable",
    "config_diff",
    "pack_optimizer",
    "pack_training_state",
    "restore_training_state",
    "unpack_optimizer",
    "warmup_cosine",
]
