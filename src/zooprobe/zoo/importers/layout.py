"""Flat-vector zoos, their layout and weights: which range of a row is which tensor (CSV or JSON layouts,
torch or Keras conventions), and the weights matrix memory-mapped from ``.npy`` or ``.safetensors``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from zooprobe.core.files import parse_json
from zooprobe.core.guards import load_npy
from zooprobe.core.state_dicts import canonical_key
from zooprobe.core.tensorfile import read_safetensors_header
from zooprobe.errors import ConfigError, InvalidInputError

LayoutConvention = Literal["torch", "keras"]
_INDEX_COLUMN = re.compile(r"Unnamed: \d+")
_KERAS_LEAVES = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
    "embeddings": "weight",
}
_KERAS_AXES = {2: (1, 0), 3: (2, 1, 0), 4: (3, 2, 0, 1), 5: (4, 3, 0, 1, 2)}
"""Keras kernel layout -> PyTorch: dense (in, out), conv1d WIO, conv2d HWIO, conv3d DHWIO."""
_SAFETENSORS_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64}


# ---------------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class LayoutEntry:
    """One tensor of a flat vector: values ``[start, end)`` of a row, stored with ``shape``; ``axes`` (if
    any) transposes the stored array into the state dict's layout, stored under ``key``."""

    name: str
    key: str
    start: int
    end: int
    shape: tuple[int, ...]
    axes: tuple[int, ...] | None = None

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[a] for a in self.axes) if self.axes else self.shape


def _parse_shape(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, list | tuple):
        items = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, str):
        text = value.strip().strip("()[]").strip()
        items = [p.strip() for p in re.split(r"[,x]", text) if p.strip()] if text else []
    else:
        raise InvalidInputError(f"{where}: shape {value!r} is not a list of sizes such as (3, 3, 1, 16)")
    try:
        shape = tuple(int(str(p)) for p in items)
    except ValueError:
        raise InvalidInputError(
            f"{where}: shape {value!r} is not a list of sizes such as (3, 3, 1, 16)"
        ) from None
    if any(n < 0 for n in shape) or any(isinstance(p, bool | float) for p in items):
        raise InvalidInputError(f"{where}: shape {value!r} must hold non-negative integers")
    return shape


def _int_cell(value: Any, what: str, where: str) -> int:
    text = str(value).strip() if value is not None else ""
    if isinstance(value, bool) or not re.fullmatch(r"[+-]?\d+", text):
        raise InvalidInputError(f"{where}: {what} {value!r} is not an integer")
    return int(text)


def _first(keys: Sequence[str], options: Sequence[str]) -> str | None:
    return next((o for o in options if o in keys), None)


_RawEntry = tuple[str, tuple[int, ...], int, int | None, str]
"""(name, shape, start, end or None, where) of one layout entry as the file states it."""


def _csv_layout(path: Path) -> list[_RawEntry]:
    out: list[_RawEntry] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        name_col = _first(header, ("name", "varname", "key"))
        start_col = _first(header, ("start_idx", "start", "offset"))
        end_col = _first(header, ("end_idx", "end"))
        missing = [
            what
            for what, col in (
                ("name (or varname)", name_col),
                ("start_idx (or start, offset)", start_col),
            )
            if col is None
        ] + ([] if "shape" in header else ["shape"])
        if missing:
            raise InvalidInputError(
                f"{path}: layout CSV lacks column(s) {', '.join(missing)} (has: "
                f"{', '.join(header)}); expected name,start_idx,end_idx,shape"
            )
        assert name_col is not None and start_col is not None
        for record in reader:
            where = f"{path} line {reader.line_num}"
            name = (record.get(name_col) or "").strip()
            if not name:
                raise InvalidInputError(f"{where}: no name")
            shape = _parse_shape(record.get("shape") or "", where)
            start = _int_cell(record.get(start_col), start_col, where)
            end = _int_cell(record.get(end_col), end_col, where) if end_col else None
            out.append((name, shape, start, end, where))
    return out


def _json_entry(path: Path, i: int, item: Any) -> _RawEntry:
    where = f"{path} entry {i + 1}"
    if not isinstance(item, dict) or "bad" in item:
        raise InvalidInputError(f"{where}: expected an object with name, shape and offset")
    name = str(item.get("name") or "").strip()
    if not name:
        raise InvalidInputError(f"{where}: no name")
    where = f"{path} entry {name!r}"
    unknown = sorted(str(k) for k in item if k not in _JSON_ENTRY_KEYS)
    if unknown:  # e.g. a "dtype" that would silently not be applied
        raise InvalidInputError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; an entry has only "
            f"{', '.join(_JSON_ENTRY_KEYS)} (the weights' dtype is the weights file's)"
        )
    if "shape" not in item:
        raise InvalidInputError(f"{where}: no shape")
    shape = _parse_shape(item["shape"], where)
    start_key = _first(list(item), ("offset", "start", "start_idx"))
    if start_key is None:
        raise InvalidInputError(f"{where}: no offset (or start) of the tensor in the vector")
    start = _int_cell(item[start_key], start_key, where)
    end_key = _first(list(item), ("end", "end_idx"))
    end = _int_cell(item[end_key], end_key, where) if end_key else None
    return name, shape, start, end, where


_JSON_ENTRY_KEYS = ("name", "shape", "offset", "start", "start_idx", "end", "end_idx")
"""The keys of a JSON layout entry."""


def _json_layout(path: Path) -> list[_RawEntry]:
    doc = parse_json(path.read_text(encoding="utf-8"))
    if isinstance(doc, dict) and isinstance(doc.get("layout"), list):
        doc = doc["layout"]
    items = (
        [{"name": k, **v} if isinstance(v, dict) else {"name": k, "bad": v} for k, v in doc.items()]
        if isinstance(doc, dict)
        else doc
    )
    if not isinstance(items, list):
        raise InvalidInputError(f"{path}: a JSON layout is a list of entries or an object of entries")
    return [_json_entry(path, i, item) for i, item in enumerate(items)]


def _raw_layout(path: Path) -> list[_RawEntry]:
    """(name, shape, start, end or None, where) per entry of a CSV or JSON layout file."""
    if not path.is_file():
        raise InvalidInputError(f"{path}: layout file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            out = _csv_layout(path)
        elif suffix == ".json":
            out = _json_layout(path)
        else:
            raise InvalidInputError(
                f"{path}: a layout must be a .csv or .json file (got {suffix or 'no extension'})"
            )
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{path}: not UTF-8 text ({e})") from e
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    except csv.Error as e:
        raise InvalidInputError(f"{path}: malformed CSV ({e})") from e
    if not out:
        raise InvalidInputError(f"{path}: the layout has no entries")
    return out


def _key_problem(key: object) -> str | None:
    """Why ``key`` cannot name a tensor of a stored state dict (a safetensors payload), or None."""
    if not isinstance(key, str) or not key.strip():
        return "a tensor name must be a non-empty string"
    if key == "__metadata__":
        return "'__metadata__' is reserved by the safetensors format (it holds the file's metadata)"
    return None


def _keras_key(name: str, drop_first: bool) -> str:
    parts = name.split(":", 1)[0].split("/")
    if drop_first and len(parts) > 1:
        parts = parts[1:]
    parts[-1] = _KERAS_LEAVES.get(parts[-1], parts[-1])
    return ".".join(parts)


def _check_names(names: Mapping[str, str], raw: list[_RawEntry], path: Path) -> None:
    unknown = sorted(set(names) - {r[0] for r in raw})
    if unknown:
        raise ConfigError(f"names: {unknown} are not entries of the layout {path}")
    for name, key in names.items():
        problem = _key_problem(key)
        if problem:
            raise ConfigError(
                f"names: {name!r} -> {key!r}: {problem}; map it to a tensor name such as 'fc.weight'"
            )


def _entry(
    raw: _RawEntry, convention: LayoutConvention, names: Mapping[str, str], drop_first: bool
) -> LayoutEntry:
    """One layout entry: its range checked against its shape, its tensor name (``names``, else the
    convention's) and, for a Keras kernel, the axes that make it PyTorch's."""
    name, shape, start, end, where = raw
    size = math.prod(shape)
    if end is None:
        end = start + size
    if start < 0 or end - start != size:
        raise InvalidInputError(
            f"{where}: {name!r} covers values {start}..{end} ({end - start} values) but its shape "
            f"{shape} holds {size}"
        )
    axes: tuple[int, ...] | None = None
    key = name
    if convention == "keras":
        key = _keras_key(name, drop_first)
        leaf = name.split(":", 1)[0].split("/")[-1]
        if leaf == "kernel" and len(shape) >= 2:
            if len(shape) not in _KERAS_AXES:
                raise InvalidInputError(f"{where}: a {len(shape)}-D Keras kernel has no PyTorch layout here")
            axes = _KERAS_AXES[len(shape)]
    key = names.get(name, key)
    problem = _key_problem(key)
    if problem:
        raise InvalidInputError(
            f"{where}: {name!r} would become tensor {key!r}, but {problem}; rename it with names (--names)"
        )
    return LayoutEntry(name, key, start, end, shape, axes)


def _check_cover(entries: list[LayoutEntry], width: int, path: Path) -> None:
    """The entries cover ``[0, width)`` exactly once."""
    position = 0
    for e in sorted(entries, key=lambda e: (e.start, e.end)):
        if e.start > position:
            raise InvalidInputError(
                f"{path}: values {position}..{e.start} of each vector belong to no entry (gap before "
                f"{e.name!r}); the layout does not describe these weights"
            )
        if e.start < position:
            raise InvalidInputError(
                f"{path}: {e.name!r} starts at {e.start}, inside the entry before it (overlap)"
            )
        position = e.end
    if position != width:
        raise InvalidInputError(
            f"{path}: the layout covers {position} values but each vector in the weights file has {width}: "
            "the layout does not match these weights (a layout of another network, or of another dataset's "
            "input?)"
        )


def read_layout(
    path: str | Path,
    width: int,
    convention: LayoutConvention = "torch",
    names: Mapping[str, str] | None = None,
) -> list[LayoutEntry]:
    """The layout at ``path`` (see the module docs), checked against vectors of ``width`` values: every
    entry's range matches its shape, and the entries cover ``[0, width)`` exactly once."""
    path = Path(path)
    if convention not in ("torch", "keras"):
        raise ConfigError(f"layout_convention must be 'torch' or 'keras', got {convention!r}")
    raw = _raw_layout(path)
    names = dict(names or {})
    _check_names(names, raw, path)
    firsts = {r[0].split(":", 1)[0].split("/")[0] for r in raw}
    drop_first = len(firsts) == 1 and all("/" in r[0] for r in raw)
    entries: list[LayoutEntry] = []
    seen: dict[str, str] = {}
    for item in raw:
        entry = _entry(item, convention, names, drop_first)
        if entry.key in seen:
            raise InvalidInputError(
                f"{item[4]}: {entry.name!r} and {seen[entry.key]!r} would both become tensor {entry.key!r}"
            )
        seen[entry.key] = entry.name
        entries.append(entry)
    _check_cover(entries, width, path)
    if convention == "keras":  # Keras orders variables by name (bias before kernel): use PyTorch's order
        return sorted(entries, key=lambda e: canonical_key(e.key))
    return sorted(entries, key=lambda e: e.start)


# ---------------------------------------------------------------------------------------------- weights
def open_weights(path: str | Path, key: str | None = None) -> np.ndarray:
    """The weights file as a read-only memory-mapped 2-D array (rows x values); nothing is read yet."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if key is not None:
            raise ConfigError(f"weights_key is for safetensors files; {path} is a .npy file")
        array = load_npy(path)  # guards: no object arrays, declared size inside the file, never unpickled
    elif suffix == ".safetensors":
        array = _safetensors_memmap(path, key)
    else:
        raise InvalidInputError(
            f"{path}: weights must be a .npy or .safetensors file (got {suffix or 'no extension'})"
        )
    if array.ndim != 2:
        raise InvalidInputError(
            f"{path}: expected a 2-D array (one flat vector per row), got shape {tuple(array.shape)}"
        )
    if array.dtype.kind != "f":
        raise InvalidInputError(f"{path}: weights must be floating point, got {array.dtype}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidInputError(f"{path}: the weights array is empty (shape {tuple(array.shape)})")
    return array


def _safetensors_memmap(path: Path, key: str | None) -> np.ndarray:
    header = read_safetensors_header(path)  # strict: types, offsets inside the data, no overlaps
    tensors = header.tensors
    if key is None:
        if len(tensors) != 1:
            raise InvalidInputError(
                f"{path}: holds {len(tensors)} tensors ({', '.join(sorted(tensors)[:5])}); name the 2-D "
                "weights tensor with weights_key (--weights_key)"
            )
        key = next(iter(tensors))
    if key not in tensors:
        raise InvalidInputError(f"{path}: no tensor {key!r} (tensors: {', '.join(sorted(tensors)[:8])})")
    info = tensors[key]
    dtype = _SAFETENSORS_DTYPES.get(info.dtype)
    if dtype is None:
        raise InvalidInputError(
            f"{path}: tensor {key!r} has dtype {info.dtype}; only F16, F32 and F64 can be "
            "memory-mapped (convert the file to float32)"
        )
    shape, begin = info.shape, info.begin
    if len(shape) != 2 or 0 in shape:
        raise InvalidInputError(
            f"{path}: tensor {key!r} has shape {shape}; expected a non-empty rows x values"
        )
    return np.memmap(
        path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r", offset=header.data_start + begin, shape=shape
    )
