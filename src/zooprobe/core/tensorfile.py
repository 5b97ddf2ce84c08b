"""Tensor files: safetensors with a JSON header, the one format of zooprobe's checkpoints and states.

A file holds tensors (weights, optimizer moments, RNG states) and, under the metadata key ``zooprobe``, a
JSON object (epoch, step, history, scheduler, early stopper, ...). `save_state` writes atomically;
`read_state` reads it back and says clearly when a file is unreadable or foreign. Used for resumable
training states (``training_state.safetensors``, ``checkpoints/last.safetensors``) and head checkpoints
(``head/model.safetensors``). Nothing is ever pickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zooprobe.core.files import atomic_path
from zooprobe.errors import InvalidInputError

META_KEY = "zooprobe"
_OLD_META_KEYS = ("zooprobe.training_state",)  # pretraining states written before the key was shared


def save_state(path: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Write `tensors` (moved to CPU, contiguous) and JSON `meta` atomically as one safetensors file."""

    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata={META_KEY: json.dumps(meta, default=str)},
        )


def read_state(
    path: str | Path, *, what: str = "training state", tensors: bool = True, require_meta: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a file written by `save_state` (``tensors=False``: only the metadata).

    An unreadable or foreign file is an `InvalidInputError` that names it and says what to do. With
    ``require_meta=False`` a plain safetensors file (no zooprobe header) reads with ``meta == {}``.
    """

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            key = next((k for k in (META_KEY, *_OLD_META_KEYS) if k in header), None)
            if key is None and require_meta:
                raise ValueError(f"no {META_KEY!r} metadata: not written by zooprobe")
            meta = json.loads(header[key]) if key is not None else {}
            values = {k: handle.get_tensor(k) for k in handle.keys()} if tensors else {}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types (and OSError, JSON errors)
        raise InvalidInputError(
            f"{path}: unreadable {what} ({e}); delete it, or start over (resume=False / --overwrite true)"
        ) from e
    if not isinstance(meta, dict):
        raise InvalidInputError(f"{path}: the {what} metadata is not a JSON object")
    return values, meta


__all__ = ["META_KEY", "read_state", "save_state"]
