"""The size checks of a torch checkpoint before its values are read (zooprobe.core.checkpoints): every
storage a zip-format file declares fits in its record, a legacy (pre-zip) pickle declares no storage
larger than the file, no tensor is a broadcast or overlapping view, and the total stays under max_params."""

from __future__ import annotations

import pickletools
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from zooprobe.core.tensorfile import format_bytes
from zooprobe.errors import InvalidInputError

#: Bytes per element of the storage classes legacy (pre-zip) torch files name.
_LEGACY_STORAGES = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8,
    "UntypedStorage": 1,
}


def is_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError as e:
        raise InvalidInputError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from e


def _records(path: Path) -> dict[int, int]:
    """Data offset -> size of each stored record of a zip-format torch file ({} if unreadable)."""

    out: dict[int, int] = {}
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    continue
                f.seek(info.header_offset)
                local = f.read(30)
                if len(local) < 30 or local[:4] != b"PK\x03\x04":
                    continue
                name_len = int.from_bytes(local[26:28], "little")
                extra_len = int.from_bytes(local[28:30], "little")
                out[info.header_offset + 30 + name_len + extra_len] = info.file_size
    except (OSError, zipfile.BadZipFile, ValueError):
        return {}
    return out


def check_records(state_dict: Mapping[str, torch.Tensor], path: Path, where: str, size: int) -> None:
    """Every storage (read onto the meta device) fits in its record of the zip file, and in the file."""
    records = _records(path)
    for name, tensor in state_dict.items():
        storage = tensor.untyped_storage()
        declared = storage.nbytes()
        offset = getattr(storage, "_checkpoint_offset", None)
        record = records.get(offset) if isinstance(offset, int) else None
        available = size if record is None else record
        if declared > available:
            raise InvalidInputError(
                f"{path}{where}: tensor {name!r} declares a storage of {format_bytes(declared)} but "
                f"{'its record in the file' if record is not None else 'the file'} holds only "
                f"{format_bytes(available)}: corrupt or hostile file, refused before reading it"
            )


def check_tensors(
    state_dict: Mapping[str, torch.Tensor], path: Path, where: str, max_params: int
) -> tuple[int, int]:
    """Refuse broadcast / overlapping views and totals beyond `max_params`; (values, bytes) of the copies."""
    values = nbytes = 0
    for name, tensor in state_dict.items():
        need = tensor.numel() * tensor.element_size()
        stored = tensor.untyped_storage().nbytes()
        strides = zip(tensor.shape, tensor.stride(), strict=True)
        broadcast = tensor.numel() > 0 and any(st == 0 and n > 1 for n, st in strides)
        if broadcast or need > stored:
            shape = " x ".join(str(n) for n in tensor.shape)
            dtype = str(tensor.dtype).removeprefix("torch.")
            raise InvalidInputError(
                f"{path}{where}: tensor {name!r} is a broadcast or overlapping view ({shape} {dtype}, "
                f"strides {tuple(tensor.stride())}): {format_bytes(need)} of values over "
                f"{format_bytes(stored)} of stored data. Real state dicts never hold such views and copying "
                "it could exhaust memory, so it is refused; if it is meant, save the tensor with "
                ".contiguous() (or .clone()) first"
            )
        values += tensor.numel()
        nbytes += need
    check_limit(path, where, values, nbytes, max_params)
    return values, nbytes


def check_limit(path: Path, where: str, values: int, nbytes: int, max_params: int) -> None:
    if values > max_params:
        raise InvalidInputError(
            f"{path}{where}: holds {values:,} values ({format_bytes(nbytes)}), more than the limit of "
            f"{max_params:,} (max_params); refused before reading them. If the file is trusted and the "
            f"machine has the memory, raise the limit (--max_params {values})"
        )


def check_legacy(path: Path, size: int) -> None:
    """A legacy (pre-zip) torch file allocates every storage it declares before reading it: check that
    each declared storage fits in its record of the file, by scanning the pickle (nothing is unpickled).

    A file that cannot be scanned is left to ``torch.load`` (which refuses anything but tensors)."""
    try:
        with open(path, "rb") as f:
            for _ in range(3):  # magic number, protocol version, system info
                for _op in pickletools.genops(f):
                    pass
            storages = _legacy_storages(f)
            # the storage keys (a list of strings), in the order of their records after it
            keys = [arg for _op, arg, _ in pickletools.genops(f) if isinstance(arg, str)]
            position = f.tell()
    except Exception:  # not a pickle we can follow: torch.load decides (weights_only)
        return
    for key in dict.fromkeys(keys):
        if key not in storages:
            return
        storage_type, numel, element_size = storages[key]
        declared = numel * element_size
        available = max(size - position - 8, 0)
        if declared > available:
            raise InvalidInputError(
                f"{path}: declares a {storage_type} of {numel:,} values ({format_bytes(declared)}) but the "
                f"file holds only {format_bytes(available)} more: corrupt or hostile file, refused before "
                "reading it"
            )
        position += 8 + declared


def _legacy_storages(f: Any) -> dict[str, tuple[str, int, int]]:
    """``key -> (storage type, numel, element size)`` of the persistent ids in a legacy torch pickle.

    A persistent id is pickled as ``('storage', GLOBAL torch.<Type>Storage, key, location, numel, view)``;
    values may come from the memo (``BINGET``) when repeated. Only that shape is followed."""
    other = object()
    memo: dict[Any, Any] = {}
    stack: list[list[Any]] = [[]]
    last: Any = other
    storages: dict[str, tuple[str, int, int]] = {}
    for op, arg, _ in pickletools.genops(f):
        name = op.name
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = last
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = last
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            last = memo.get(arg, other)
        elif name == "GLOBAL":
            last = ("global", arg)
        elif name == "NONE":
            last = None
        elif isinstance(arg, str | int) and not isinstance(arg, bool) and name != "PROTO":
            last = arg
        elif name == "MARK":
            stack.append([])
            continue
        elif name == "BINPERSID":
            if (
                isinstance(last, tuple)
                and len(last) >= 5
                and last[0] == "storage"
                and isinstance(last[1], tuple)
                and isinstance(last[2], str)
                and isinstance(last[4], int)
            ):
                storage_type = str(last[1][1]).rpartition(" ")[2]
                if storage_type not in _LEGACY_STORAGES:
                    raise ValueError(storage_type)
                storages[last[2]] = (storage_type, last[4], _LEGACY_STORAGES[storage_type])
            last = other
        else:
            last = other
        if pickletools.markobject in op.stack_before:
            items = stack.pop() if len(stack) > 1 else []
            last = tuple(items) if name == "TUPLE" else other
        stack[-1].append(last)
    return storages
