"""Tensor files: safetensors, the one format of zooprobe's checkpoints and states, and the one place where
safetensors files are read and written.

Reading (`read_safetensors_header`, `parse_safetensors_header`, `open_safetensors`, `load_safetensors`,
`load_safetensors_bytes`): a safetensors file is an 8-byte little-endian header length, a JSON header and
the tensors' bytes. Every reader in zooprobe validates the header strictly **before any tensor is read**
(a test greps ``src/`` so no reader can bypass it):

- the header length is at least 2, at most `MAX_HEADER_BYTES` and inside the file;
- the header is a JSON object (not nested too deeply); ``__metadata__``, if present, maps strings to
  strings;
- every other entry has a dtype of `ST_DTYPES`, a shape that is a list of non-negative integers (not
  floats, not booleans) and ``data_offsets``: two integers ``0 <= begin <= end <= data size``, with
  ``end - begin`` exactly the shape's values times the dtype's size; no two tensors' bytes overlap.

So a shape declared far beyond the file (a "size bomb") is refused before anything is allocated, and a
tensor never reads the header's own bytes as values. Any violation is an `InvalidInputError` naming the file
and the tensor.

Writing (`write_safetensors`; `save_state` for zooprobe's states): atomic (a temporary file renamed onto
the target; an earlier file stays intact if the write fails), and a failure of the safetensors library's
own writer (a full disk: its ``SafetensorError``, not an ``OSError``) is raised as an ``OSError`` with the
file name, which the command line reports in one line like any other file system error.

A state file holds tensors (weights, optimizer moments, RNG states) and, under the metadata key
``zooprobe``, a JSON object (epoch, step, history, scheduler, early stopper, ...). `read_state` reads it
back and says clearly when a file is unreadable or foreign. Used for resumable training states
(``training_state.safetensors``, ``checkpoints/last.safetensors``) and head checkpoints
(``head/model.safetensors``). Nothing is ever pickled.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch as _st
import torch
from safetensors import SafetensorError, safe_open

from zooprobe.core.files import atomic_path, parse_json
from zooprobe.errors import InvalidInputError

MAX_HEADER_BYTES = 100_000_000
"""Largest safetensors JSON header read (the safetensors library's own limit)."""

#: Bytes per element of each safetensors dtype (sub-byte dtypes are not supported).
ST_DTYPES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}


def format_bytes(n: float) -> str:
    """``6.4 GB``, ``160.0 kB``, ``40 B`` (decimal units)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


# ------------------------------------------------------------------------------------------ header
@dataclass(frozen=True)
class TensorSpan:
    """One tensor of a validated safetensors header: dtype, shape and byte range (relative to the data)."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated safetensors header (`parse_safetensors_header`)."""

    tensors: dict[str, TensorSpan]
    """Name -> span, in the header's order."""
    metadata: dict[str, str]
    data_start: int
    """Offset of the data in the file (8 + the header length)."""
    data_size: int


def parse_safetensors_header(
    source: bytes | Any, size: int | None = None, where: str = ""
) -> SafetensorsHeader:
    """Validate the header of a safetensors payload (the module docs list the rules) before any tensor is
    read. `source` is the payload's bytes, or a binary file handle at its start with `size` its length
    (only the header is read from it). Raises `InvalidInputError` naming `where` (the file)."""

    where = where or "safetensors data"

    def bad(reason: str) -> InvalidInputError:
        return InvalidInputError(f"{where}: not a valid safetensors file, corrupt or truncated? ({reason})")

    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source[:8])
        size = len(source) if size is None else size
    else:
        data = source.read(8)
    if size is None:
        raise TypeError("size is needed with a file handle")
    if len(data) < 8:
        raise bad(f"the file has {size} bytes, fewer than the 8-byte header length")
    header_len = int.from_bytes(data, "little")
    if header_len > MAX_HEADER_BYTES:
        raise InvalidInputError(
            f"{where}: declares a safetensors header of {format_bytes(header_len)}, more than the "
            f"{format_bytes(MAX_HEADER_BYTES)} allowed; corrupt or hostile file, refused before reading it"
        )
    if 8 + header_len > size:
        raise InvalidInputError(
            f"{where}: not a valid safetensors file, corrupt or truncated: it declares a header of "
            f"{header_len:,} bytes but holds only {size:,} bytes; refused before reading it"
        )
    if header_len < 2:
        raise bad(f"a header of {header_len} bytes cannot be a JSON object")
    if isinstance(source, bytes | bytearray | memoryview):
        raw = bytes(source[8 : 8 + header_len])
    else:
        raw = source.read(header_len)
        if len(raw) < header_len:
            raise bad("the file ends inside its header")
    try:
        header = parse_json(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad(f"the header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        kind = "null" if header is None else type(header).__name__
        raise bad(f"the header is JSON {kind}, not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ is not a JSON object of strings")
    data_size = size - 8 - header_len
    tensors = {name: _tensor_span(name, info, data_size, where, bad) for name, info in header.items()}
    _check_overlaps(tensors, bad)
    return SafetensorsHeader(tensors, dict(metadata), 8 + header_len, data_size)


def _tensor_span(
    name: str, info: Any, data_size: int, where: str, bad: Callable[[str], InvalidInputError]
) -> TensorSpan:
    """The checked header entry of tensor `name`: a supported dtype, a shape, data offsets that fit in the
    `data_size` bytes of data and match the shape."""
    if not isinstance(info, dict):
        raise bad(f"tensor {name!r}: its header entry is not a JSON object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in ST_DTYPES:
        raise InvalidInputError(
            f"{where}: tensor {name!r} has dtype {dtype!r}, which zooprobe does not read (supported: "
            f"{', '.join(ST_DTYPES)})"
        )
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise bad(f"tensor {name!r}: data_offsets {offsets!r} are not two increasing byte offsets")
    nbytes = math.prod(shape) * ST_DTYPES[dtype]
    if offsets[1] > data_size or nbytes > data_size:
        raise InvalidInputError(
            f"{where}: not a valid safetensors file, corrupt or truncated: tensor {name!r} declares "
            f"{format_bytes(max(nbytes, offsets[1] - offsets[0]))} of data (shape {shape}, {dtype}, "
            f"bytes {offsets[0]}..{offsets[1]}) but the file holds only {format_bytes(data_size)} of "
            "data; refused before reading it"
        )
    if offsets[1] - offsets[0] != nbytes:
        raise bad(
            f"tensor {name!r}: shape {shape} of {dtype} needs {nbytes} bytes but its data_offsets span "
            f"{offsets[1] - offsets[0]}"
        )
    return TensorSpan(dtype, tuple(shape), offsets[0], offsets[1])


def _check_overlaps(tensors: dict[str, TensorSpan], bad: Callable[[str], InvalidInputError]) -> None:
    """No two tensors' data overlap."""
    previous: tuple[str, TensorSpan] | None = None
    for name, span in sorted(((k, v) for k, v in tensors.items() if v.nbytes), key=lambda kv: kv[1].begin):
        if previous is not None and span.begin < previous[1].end:
            raise bad(f"tensors {previous[0]!r} and {name!r} overlap (bytes {span.begin}..{previous[1].end})")
        previous = (name, span)


def read_safetensors_header(path: str | Path) -> SafetensorsHeader:
    """The validated header of safetensors file `path` (`parse_safetensors_header`); only the header is
    read. A missing, unreadable or non-regular file (a FIFO could block forever) is an `InvalidInputError`."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: opening a FIFO blocks
            raise InvalidInputError(f"{path}: not a regular file; safetensors are read from regular files")
        with open(path, "rb") as f:
            return parse_safetensors_header(f, os.fstat(f.fileno()).st_size, str(path))
    except FileNotFoundError as e:
        raise InvalidInputError(f"{path}: file not found") from e
    except OSError as e:
        raise InvalidInputError(f"{path}: cannot read the file ({e.strerror or e})") from e


@contextlib.contextmanager
def open_safetensors(path: str | Path) -> Iterator[Any]:
    """``safe_open(path)`` (framework ``pt``) after the header is validated (`read_safetensors_header`)."""
    read_safetensors_header(path)
    with safe_open(str(path), framework="pt") as handle:
        yield handle


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of safetensors file `path` (``safetensors.torch.load_file``), header validated first."""
    read_safetensors_header(path)
    try:
        return _st.load_file(str(path))
    except SafetensorError as e:
        raise InvalidInputError(f"{path}: not a valid safetensors file ({e})") from e


def load_safetensors_bytes(data: bytes, where: str = "") -> tuple[dict[str, torch.Tensor], SafetensorsHeader]:
    """The tensors of a safetensors payload in memory and its validated header (validated first)."""
    header = parse_safetensors_header(data, where=where)
    try:
        return _st.load(data), header
    except SafetensorError as e:
        raise InvalidInputError(
            f"{where or 'safetensors data'}: not a valid safetensors payload ({e})"
        ) from e


# ------------------------------------------------------------------------------------------ writing
def _as_os_error(error: SafetensorError, path: Path) -> OSError:
    """The ``OSError`` behind a safetensors write failure (its message holds ``Os { code: 28, ... }``)."""
    text = str(error)
    code = re.search(r"code:\s*(\d+)", text)
    number = int(code.group(1)) if code else errno.EIO
    reason = re.search(r'message:\s*"([^"]*)"', text)
    return OSError(number, reason.group(1) if reason else (os.strerror(number) if code else text), str(path))


def safetensors_bytes(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> bytes:
    """`tensors` (CPU, contiguous) serialised as a safetensors payload in memory."""
    return _st.save(dict(tensors), metadata=dict(metadata) if metadata is not None else None)


def write_safetensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write `tensors` (moved to CPU, contiguous) as safetensors file `path`, atomically. A failed write
    (disk full) is an ``OSError`` naming `path`; the file that was there before is left intact."""
    path = Path(path)
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            _st.save_file(clean, str(tmp), metadata=dict(metadata) if metadata is not None else None)
        except SafetensorError as e:
            raise _as_os_error(e, path) from e


META_KEY = "zooprobe"
_OLD_META_KEYS = ("zooprobe.training_state",)  # pretraining states written before the key was shared


def save_state(path: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Write `tensors` (moved to CPU, contiguous) and JSON `meta` atomically as one safetensors file."""

    write_safetensors(path, tensors, {META_KEY: json.dumps(meta, default=str)})


RESUME_ADVICE = "delete it, or start over (resume=False / --overwrite true)"
HEAD_ADVICE = (
    "the head folder is damaged or was replaced: restore it (copy or download it again), or train the "
    "head again"
)


def read_state(
    path: str | Path,
    *,
    what: str = "training state",
    tensors: bool = True,
    require_meta: bool = True,
    advice: str = RESUME_ADVICE,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a file written by `save_state` (``tensors=False``: only the metadata).

    An unreadable or foreign file is an `InvalidInputError` that names it and says what to do (`advice`:
    for a training state, start over; for a saved head, `HEAD_ADVICE`). With ``require_meta=False`` a plain
    safetensors file (no zooprobe header) reads with ``meta == {}``.
    """

    path = Path(path)
    try:
        with open_safetensors(path) as handle:
            header = handle.metadata() or {}
            key = next((k for k in (META_KEY, *_OLD_META_KEYS) if k in header), None)
            if key is None and require_meta:
                raise ValueError(f"no {META_KEY!r} metadata: not written by zooprobe")
            meta = parse_json(header[key]) if key is not None else {}
            values = {k: handle.get_tensor(k) for k in handle.keys()} if tensors else {}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types (and OSError, JSON errors)
        raise InvalidInputError(f"{path}: unreadable {what} ({e}); {advice}") from e
    if not isinstance(meta, dict):
        raise InvalidInputError(f"{path}: the {what} metadata is not a JSON object")
    return values, meta


__all__ = [
    "HEAD_ADVICE",
    "MAX_HEADER_BYTES",
    "META_KEY",
    "RESUME_ADVICE",
    "ST_DTYPES",
    "SafetensorsHeader",
    "TensorSpan",
    "format_bytes",
    "load_safetensors",
    "load_safetensors_bytes",
    "open_safetensors",
    "parse_safetensors_header",
    "read_safetensors_header",
    "read_state",
    "safetensors_bytes",
    "save_state",
    "write_safetensors",
]
