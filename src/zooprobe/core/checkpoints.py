"""Reading checkpoint files of unknown origin: one reader for ``zooprobe predict`` and the folder importer.

`read_checkpoint` turns a file into a flat ``name -> tensor`` state dict plus notes on what was assumed while
reading; `load_checkpoint` returns the state dict only. ``zooprobe predict`` (`zooprobe.predict`) and
``zooprobe zoo import-folder`` / ``import-modelzoos`` (`zooprobe.zoo.importers`) both call it, so a file gives
the same tensors, in the same order, in both.

Checkpoints are untrusted data. Nothing is ever unpickled beyond plain tensors and containers, and a file is
checked before anything large is allocated:

- Only regular files are opened (a FIFO, socket or device could block forever or never end).
- ``.safetensors``: the 8-byte header length and the JSON header (at most `MAX_HEADER_BYTES`) are parsed
  first; every tensor's dtype, shape and byte range must be consistent and lie inside the file. Only then
  are the tensors read.
- ``.pt``, ``.pth``, ``.bin``, ``.ckpt`` (and Model Zoos' suffix-less ``checkpoints``): only ever
  ``torch.load(..., weights_only=True)``. A file that needs more (a pickled ``nn.Module``, a custom class, a
  Lightning checkpoint whose hyperparameters hold objects) is refused for safety, with the way to convert it.
  Zip-format files (``torch.save`` since torch 1.6) are first loaded onto the ``meta`` device, which reads
  the structure but no data: every storage must fit in its record of the file. They are then memory-mapped
  (``mmap=True``), so no storage is read into memory before the checks pass. Legacy (pre-zip) files are
  scanned without unpickling: every storage they declare must fit in the file.
- A tensor whose view is larger than its storage (stride 0: ``torch.zeros(n).expand(n, n)``, or other
  overlapping strides) is refused, naming it: real state dicts never hold broadcast views, and copying one
  can take gigabytes out of a few kilobytes.
- The total number of values must be at most ``max_params`` (default `DEFAULT_MAX_PARAMS`, about 2.1
  billion; ``--max_params`` on the command line).
- Running out of memory while reading is reported as out-of-memory, with the size needed.

Tensor order (it decides the layer positions the encoder sees):

- torch files keep the order of the saved dict.
- safetensors keeps no order of its own (its writer sorts the header, by dtype alignment and name, not by
  the model's layers). A file that records the order (zooprobe's convention, a
  ``metadata={"order": json.dumps(list(state_dict))}`` entry naming exactly the file's tensors) is read in
  that order; otherwise tensors are grouped by module, modules in natural name order (``layers.2`` before
  ``layers.10``), and inside a module ``weight, bias, running_mean, running_var, num_batches_tracked``
  first, the usual PyTorch order. That can differ from the model's definition order (``conv1`` vs ``bn1``),
  so the result carries a note saying so. An ``order`` entry that does not name exactly the file's tensors
  is ignored, not trusted.

What the file may hold:

- a plain state dict (``model.state_dict()``): every entry must be a tensor; a non-tensor entry is an error
  naming it (it is not a state dict zooprobe can read, and guessing would change the layers);
- a training checkpoint container: a dict that is not itself a state dict and whose ``state_dict``,
  ``model_state_dict``, ``model`` or ``module`` entry (first found, in that order, `CONTAINER_KEYS`) is a
  dict. That entry is the state dict; the container's other entries (optimizer, epoch, ...) are ignored, and
  non-tensor entries *inside* the selected state dict (e.g. ``None`` extra states) are dropped and listed in
  the notes. Only containers get that leniency.

An empty result, a non-dict, a non-string key, a sparse or quantized tensor is an error naming the file.
Values are returned exactly as stored (names, dtypes, values), each tensor an owned contiguous copy (tied
weights are copied apart; nothing refers to the file afterwards).
"""

from __future__ import annotations

import math
import os
import pickle
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from zooprobe.core.files import parse_json
from zooprobe.core.state_dicts import DEFAULT_MAX_PARAMS, canonical_key, split_name
from zooprobe.core.tensorfile import MAX_HEADER_BYTES, format_bytes, open_safetensors, read_safetensors_header
from zooprobe.core.torch_checks import check_legacy, check_limit, check_records, check_tensors, is_zip
from zooprobe.errors import ConfigError, InvalidInputError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES
"""File types `read_checkpoint` reads (torch ones only with ``weights_only=True``)."""

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill", ".cloudpickle")
"""File types that can only be read by unpickling: refused by name, never opened."""

CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module")
"""Entries of a training checkpoint that hold the model's state dict, in the order they are looked for."""

Kind = Literal["auto", "safetensors", "torch"]


_CONVERT_HINT = (
    "To convert it, load it once in an environment you trust and save only the weights: "
    "`from safetensors.torch import save_file; save_file(model.state_dict(), 'model.safetensors', "
    "metadata={'order': json.dumps(list(model.state_dict()))})` (or "
    "`torch.save(model.state_dict(), 'model.pt')`)."
)


@dataclass
class Checkpoint:
    """A checkpoint file read by `read_checkpoint`."""

    state_dict: dict[str, torch.Tensor]
    """Flat ``name -> tensor``, in the model's order (see the module docs)."""
    notes: list[str] = field(default_factory=list)
    """What was changed or assumed while reading (shown with predictions)."""


# ------------------------------------------------------------------------------------------ entry points
def load_checkpoint(path: str | Path, *, max_params: int = DEFAULT_MAX_PARAMS) -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` state dict from a checkpoint file (see the module docs for the rules)."""
    return read_checkpoint(path, max_params=max_params).state_dict


def read_checkpoint(
    path: str | Path, *, max_params: int = DEFAULT_MAX_PARAMS, kind: Kind = "auto"
) -> Checkpoint:
    """Read a checkpoint file: its state dict and notes (see the module docs).

    ``kind="auto"`` decides by the file's suffix (`CHECKPOINT_SUFFIXES`); ``"torch"`` reads any file as a
    torch checkpoint (Model Zoos' ``checkpoints`` files have no suffix). Raises `InvalidInputError` naming
    the file (and the tensor, when one is to blame) for anything unreadable, unsafe or too large.
    """
    path = Path(path)
    check_max_params(max_params)
    size = check_checkpoint_file(path, kind=kind)
    notes: list[str] = []
    if kind == "safetensors" or (kind == "auto" and path.suffix.lower() in SAFETENSORS_SUFFIXES):
        state_dict = _read_safetensors(path, size, max_params, notes)
    else:
        state_dict = _read_torch(path, size, max_params, notes)
    return Checkpoint(state_dict, notes)


def check_checkpoint_file(path: str | Path, *, kind: Kind = "auto") -> int:
    """The size of checkpoint file `path`, or `InvalidInputError` if it is missing, a folder, not a regular
    file (FIFO, socket, device: reading one can hang) or, with ``kind="auto"``, of an unsupported type.

    Nothing is opened: this only looks at the file system entry (following symlinks)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError as e:
        raise InvalidInputError(f"{path}: checkpoint file not found") from e
    except OSError as e:
        raise InvalidInputError(f"{path}: cannot access the checkpoint ({e.strerror})") from e
    if stat.S_ISDIR(info.st_mode):
        raise InvalidInputError(
            f"{path}: is a folder; pass the checkpoint file(s) in it ({', '.join(CHECKPOINT_SUFFIXES)})"
        )
    if not stat.S_ISREG(info.st_mode):
        what = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(info.st_mode)
            else "a socket"
            if stat.S_ISSOCK(info.st_mode)
            else "a device"
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
            else "not a regular file"
        )
        raise InvalidInputError(
            f"{path}: is {what}, not a regular file; zooprobe reads checkpoints only from regular files "
            "(reading a pipe or device can block forever): save the checkpoint to a file and pass that"
        )
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise InvalidInputError(
            f"{path}: refused for safety: a {path.suffix} file can only be read by unpickling it, which can "
            "run arbitrary code, so zooprobe never opens one. " + _CONVERT_HINT
        )
    if kind == "auto" and path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise InvalidInputError(
            f"{path}: unsupported checkpoint type {path.suffix!r}; expected one of "
            f"{', '.join(CHECKPOINT_SUFFIXES)}"
        )
    return info.st_size


def check_max_params(max_params: int) -> None:
    """`ConfigError` unless `max_params` is a positive integer."""
    if isinstance(max_params, bool) or not isinstance(max_params, int) or max_params < 1:
        raise ConfigError(
            f"max_params must be a positive integer (values per checkpoint), got {max_params!r}"
        )


def is_out_of_memory(error: BaseException) -> bool:
    """True for `MemoryError` and torch's allocation failures ("can't allocate memory")."""
    if isinstance(error, MemoryError):
        return True
    return isinstance(error, RuntimeError) and bool(
        re.search(
            r"can't allocate memory|not enough memory|out of memory|failed to allocate", str(error), re.I
        )
    )


@contextmanager
def out_of_memory_as_error(message: Callable[[], str]) -> Iterator[None]:
    """Turn running out of memory inside the block into an `InvalidInputError` with ``message()``."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise InvalidInputError(message()) from e


def _oom_message(path: Path, count: int, values: int, nbytes: int) -> str:
    return (
        f"{path}: out of memory while reading the checkpoint: its {count} tensor(s) hold {values:,} values "
        f"and need {format_bytes(nbytes)} of memory, which this machine could not allocate; free memory or "
        "read it on a machine with more (the file itself looks consistent)"
    )


# ------------------------------------------------------------------------------------------ safetensors
def _read_safetensors(path: Path, size: int, max_params: int, notes: list[str]) -> dict[str, torch.Tensor]:

    entries, metadata = _safetensors_header(path, size)
    values = sum(math.prod(shape) for _, shape, _ in entries.values())
    nbytes = sum(n for _, _, n in entries.values())
    check_limit(path, "", values, nbytes, max_params)
    order = _recorded_order(metadata, entries)
    if order is None:
        order = sorted(entries, key=canonical_key)
        if len({split_name(name)[0] for name in entries}) > 1:
            notes.append(
                "safetensors keeps no tensor order and this file records none: modules were ordered by name, "
                "which may differ from the model's layer order; save with "
                "metadata={'order': json.dumps(list(state_dict))} for exact positions"
            )
    tensors: dict[str, torch.Tensor] = {}
    with out_of_memory_as_error(lambda: _oom_message(path, len(entries), values, nbytes)):
        try:
            with open_safetensors(path) as f:
                for name in order:
                    tensors[name] = f.get_tensor(name)
        except (MemoryError, RuntimeError) as e:
            if is_out_of_memory(e):
                raise
            raise _corrupt_safetensors(path, e) from e
        except Exception as e:  # safetensors raises its own error types (and OSError)
            raise _corrupt_safetensors(path, e) from e
    return _check_state_dict(tensors, path, lenient=False, notes=notes)


def _corrupt_safetensors(path: Path, error: BaseException) -> InvalidInputError:
    return InvalidInputError(f"{path}: not a valid safetensors file, corrupt or truncated? ({error})")


def _safetensors_header(
    path: Path, size: int
) -> tuple[dict[str, tuple[str, list[int], int]], Mapping[str, Any]]:
    """``name -> (dtype, shape, nbytes)`` and the metadata of a safetensors file, validated by
    `zooprobe.core.tensorfile.read_safetensors_header`; nothing but the header is read."""
    header = read_safetensors_header(path)
    entries = {k: (v.dtype, list(v.shape), v.nbytes) for k, v in header.tensors.items()}
    return entries, header.metadata


def _recorded_order(metadata: Mapping[str, Any], names: Mapping[str, Any]) -> list[str] | None:
    """The ``order`` metadata entry, if it names exactly the file's tensors (else it is not trusted)."""
    try:
        order = parse_json(metadata["order"]) if "order" in metadata else None
    except (TypeError, ValueError):
        return None
    if isinstance(order, list) and len(order) == len(names) and set(order) == set(names):
        return [str(k) for k in order]
    return None


# ------------------------------------------------------------------------------------------ torch
def _read_torch(path: Path, size: int, max_params: int, notes: list[str]) -> dict[str, torch.Tensor]:
    if is_zip(path):
        # Structure only (meta device: no storage is read or allocated), checked, then memory-mapped.
        skeleton, where = _state_dict_of(_torch_load(path, map_location="meta"), path, [])
        check_records(skeleton, path, where, size)
        check_tensors(skeleton, path, where, max_params)
        del skeleton
        obj = _torch_load(path, mmap=True)
    else:
        check_legacy(path, size)  # storages declared by the pickle must fit in the file
        obj = _torch_load(path)
    state_dict, where = _state_dict_of(obj, path, notes)
    values, nbytes = check_tensors(state_dict, path, where, max_params)
    with out_of_memory_as_error(lambda: _oom_message(path, len(state_dict), values, nbytes)):
        out = {k: _materialize(v) for k, v in state_dict.items()}
    return out


def _materialize(tensor: torch.Tensor) -> torch.Tensor:
    """An owned, contiguous copy of a checked tensor: where a torch checkpoint's values are allocated."""
    return tensor.clone(memory_format=torch.contiguous_format)


def _torch_load(path: Path, *, map_location: str = "cpu", mmap: bool = False) -> Any:
    try:
        if mmap:
            try:
                return torch.load(str(path), map_location=map_location, weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e).lower():
                    raise
                # not memory-mappable (file system, alignment): sizes are checked, read it normally
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for unreadable or refused files
        if is_out_of_memory(e):
            raise InvalidInputError(
                f"{path}: out of memory while reading the checkpoint ({str(e).splitlines()[0][:200]}); free "
                "memory or read it on a machine with more"
            ) from e
        message = str(e)
        weights_only = isinstance(e, pickle.UnpicklingError) or "weights only" in message.lower()
        if weights_only and re.search(r"\bglobal\b", message, re.IGNORECASE):
            raise InvalidInputError(_refusal(path, message)) from e  # a Python object it would construct
        if weights_only:
            detail = next(
                (ln.strip() for ln in message.splitlines()[1:] if ln.strip().startswith("Unsupported")), ""
            )
            raise InvalidInputError(
                f"{path}: unreadable checkpoint: corrupt, not a torch file, or pickled with features that "
                "torch.load(weights_only=True) does not allow"
                + (f" ({detail[:200]})" if detail else "")
                + "; for safety it is not loaded any other way. "
                + _CONVERT_HINT
            ) from e
        first = message.strip().splitlines()[0] if message.strip() else ""
        raise InvalidInputError(
            f"{path}: unreadable checkpoint, corrupt or not a torch file ({type(e).__name__}: {first[:300]})"
        ) from e


def _refusal(path: Path, message: str) -> str:
    """Why a torch file was refused, naming the offending object when torch says which it was."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in message.splitlines()]
    detail = next((ln for ln in lines if "unsupported global" in ln.lower()), "")
    detail = detail.split(" Please use")[0].split(" was not an allowed global")[0][:300].rstrip(".")
    return (
        f"{path}: refused for safety: loading it needs unpickling Python objects other than tensors and "
        "plain containers, which can run arbitrary code, so zooprobe reads torch checkpoints only with "
        "torch.load(weights_only=True)" + (f" ({detail})" if detail else "") + ". " + _CONVERT_HINT
    )


# ------------------------------------------------------------------------------------------ structure
def _state_dict_of(obj: Any, path: Path, notes: list[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Unwrap a training checkpoint container (see the module docs) and check the state dict; the state
    dict and where it was in the file (``"['state_dict']"`` or ``""``)."""
    if not isinstance(obj, Mapping):
        raise InvalidInputError(
            f"{path}: holds a {type(obj).__name__}, not a state dict (a dict of tensors). " + _CONVERT_HINT
        )
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _check_state_dict(obj, path, lenient=False, notes=notes), ""
    for key in CONTAINER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            notes.append(f"training checkpoint: read its {key!r} entry")
            where = f"[{key!r}]"
            return _check_state_dict(inner, path, lenient=True, notes=notes, where=where), where
    return _check_state_dict(obj, path, lenient=False, notes=notes), ""


def _check_state_dict(
    obj: Mapping[Any, Any], path: Path, *, lenient: bool, notes: list[str], where: str = ""
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"{path}{where}: key {key!r} is not a string; expected a flat state dict")
        if not isinstance(value, torch.Tensor):
            if lenient:
                dropped.append(key)
                continue
            raise InvalidInputError(
                f"{path}{where}: entry {key!r} is a {type(value).__name__}, not a tensor: expected a flat "
                "state dict (name -> tensor) or a training checkpoint with a "
                f"{' / '.join(repr(k) for k in CONTAINER_KEYS)} entry"
            )
        if value.layout != torch.strided or value.is_quantized:
            raise InvalidInputError(
                f"{path}{where}: tensor {key!r} is sparse or quantized; only dense tensors are supported"
            )
        out[key] = value.detach()
    if dropped:
        shown = ", ".join(repr(k) for k in dropped[:5]) + (", ..." if len(dropped) > 5 else "")
        notes.append(f"dropped {len(dropped)} non-tensor entr{'y' if len(dropped) == 1 else 'ies'}: {shown}")
    if not out:
        raise InvalidInputError(f"{path}{where}: empty state dict (no tensors)")
    return out


__all__ = [
    "CHECKPOINT_SUFFIXES",
    "CONTAINER_KEYS",
    "DEFAULT_MAX_PARAMS",
    "MAX_HEADER_BYTES",
    "PICKLE_SUFFIXES",
    "SAFETENSORS_SUFFIXES",
    "TORCH_SUFFIXES",
    "Checkpoint",
    "check_checkpoint_file",
    "check_max_params",
    "format_bytes",
    "is_out_of_memory",
    "load_checkpoint",
    "out_of_memory_as_error",
    "read_checkpoint",
]
