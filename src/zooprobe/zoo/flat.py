"""Flat-vector zoos: one weight vector per checkpoint plus a layout; the Small CNN Zoo as a preset.

Many weight-space papers release a zoo as one matrix: a row per checkpoint, the network's parameters
flattened into it, a *layout* saying which range of a row is which tensor (name, shape, start/end or
offset), and a metadata table with one row per weights row. `import_flat` turns such a zoo into a zooprobe
zoo folder; `import_cnnzoo` is its preset for the Small CNN Zoo (Unterthiner et al. 2020; files and network
in `zooprobe.zoo.cnnzoo`).

Inputs:

* **weights**: a ``.npy`` file holding a 2-D float array (rows x values), memory-mapped
  (``np.load(mmap_mode="r")``) and read a chunk of rows at a time, never whole; or a ``.safetensors`` file
  holding such a 2-D tensor (memory-mapped the same way; ``weights_key`` names it when the file has
  several).
* **layout**: CSV with columns ``name`` (or ``varname``), ``shape`` (``(3, 3, 1, 16)``, ``[3, 3, 1, 16]`` or
  ``3x3x1x16``) and ``start_idx``/``end_idx`` (or ``start``/``end``, or ``offset``); or JSON: a list of
  ``{"name", "shape", "offset" | "start" [, "end"]}`` objects (optionally under ``"layout"``), or an object
  mapping each name to ``{"shape", "offset"}``. The entries must cover every value of a row exactly once.
* **metadata**: CSV (``.csv``, ``.csv.gz``), JSONL or Parquet, one row per weights row, in the same order.
  Columns named like zoo fields (or renamed to one with ``columns``) are converted and range-checked as in
  `zooprobe.zoo.importers`; other columns are kept with an inferred type (pandas index columns
  ``Unnamed: N`` are dropped).

**Layout conventions.** ``torch``: tensors are stored as PyTorch holds them and layout names are state-dict
keys. ``keras``: kernels are TensorFlow/Keras layouts and are transposed to PyTorch's: conv2d HWIO -> OIHW
(``transpose(3, 2, 0, 1)``), conv1d WIO -> OIW, conv3d DHWIO -> OIDHW, dense (in, out) -> (out, in); names
``model/layer/kernel:0`` become ``layer.weight`` (``bias`` -> ``bias``, BatchNorm ``gamma``/``beta``/
``moving_mean``/``moving_variance`` -> ``weight``/``bias``/``running_mean``/``running_var``; a first path
component shared by every name, such as ``sequential``, is dropped). ``names`` overrides any key.

**Runs and checkpoints.** ``id_column`` names the run (default: a ``model_id`` column; without one every row
is its own run), ``checkpoint_column`` the checkpoint (default: a ``checkpoint_epoch`` column; stored as
``checkpoint_epoch``). ``step="final"`` imports each run's last checkpoint, ``"all"`` every checkpoint,
an integer only checkpoints with that value. ``max_runs`` keeps the first runs in file order.

**Splits** are by run, never by checkpoint: from a ``split`` column, from a hash of the run id (as the other
importers), or from a ``split_file`` in the NFN / Neural Graphs format: an order of all weights rows, one
index per line, no header, which fixes the shuffle before an iid split. Its protocol, as the NFN code
(``experiments/data_utils.py``, ``ZooDataset``) applies it: reorder the rows by the file, keep the rows at
the zoo's last checkpoint value (``step == 86``) in that order, put the second half (from ``int(0.5 * n)``)
in test, shuffle the first half with Python's ``random.Random(0)`` and put its first ``int(0.8 * half)`` in
train, the rest in validation (40/10/50). A run takes the split of its final-step row, so with
``step="all"`` its earlier checkpoints follow it; a run without a row at that step is not placed by the
protocol and is left out (reported). A leading ``0`` line that repeats a later index is a header pandas
wrote (``to_csv``), and is ignored.

**Streaming and resuming.** Runs are converted a chunk at a time (about ``chunk_rows`` checkpoints, whole
runs) and each chunk is written atomically to ``OUTPUT/.parts/import-NNNNNN.parquet``; memory stays
bounded by a chunk whatever the zoo's size. A killed import resumes when run again with the same inputs
and options (``OUTPUT/import_config.json`` records the options and each input's `source_fingerprint`: an
input rewritten since, even in place with its size and time kept, is refused by name; anything else is
refused too, or started over with ``overwrite``). The parts are then streamed into the zoo's data files
(`zooprobe.zoo.store` format, written under a ``.zooprobe-writing`` marker, the manifest last) and removed.
An import that keeps no checkpoint at all removes what it wrote.

**Non-finite weights.** A run with a NaN or infinite value in any imported checkpoint is dropped whole; the
report and the manifest count and list the dropped runs.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import math
import mmap
import random
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from zooprobe.core.files import atomic_path, atomic_write_json, parse_json
from zooprobe.core.guards import load_npy
from zooprobe.core.outputs import (
    LOCK,
    MARKER,
    OutputFolderError,
    check_output,
    claim_output,
    holding_outputs,
    release_outputs,
)
from zooprobe.core.progress import Progress
from zooprobe.core.state_dicts import canonical_key, is_running_stat
from zooprobe.core.tensorfile import read_safetensors_header
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.zoo import cnnzoo
from zooprobe.zoo.importers import (
    _LOWERCASED,
    MAX_LISTED,
    RESERVED_COLUMNS,
    ImportReport,
    _Bad,
    _check_fractions,
    _convert_field,
    _hash_split,
    _infer_column,
    _is_missing,
    _Problems,
    _read_jsonl,
    _split_label,
    _to_text,
    _warnings_from,
)
from zooprobe.zoo.schema import FIELD_BY_NAME, FORMAT_VERSION, SPLITS, WEIGHTS, arrow_schema
from zooprobe.zoo.store import (
    MANIFEST,
    ROW_GROUP,
    WRITING,
    ZOO_OUTPUT,
    SplitWriter,
    base_manifest,
    begin_zoo_write,
    dataset_card,
    encode_weights,
    finish_zoo_write,
    payload_hash,
)

__all__ = [
    "FlatImportReport",
    "LayoutEntry",
    "import_cnnzoo",
    "import_flat",
    "open_weights",
    "read_layout",
    "read_split_file",
]

LayoutConvention = Literal["torch", "keras"]
IMPORT_CONFIG = "import_config.json"
PARTS = ".parts"
CHUNK_ROWS = 1024
SOURCE_ROW = "source_row"
"""Extra column: the row of the weights file each checkpoint was read from."""
NFN_TEST_FRACTION = 0.5
NFN_TRAIN_OF_TRAINVAL = 0.8

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


# ---------------------------------------------------------------------------------------------- report
@dataclass
class FlatImportReport(ImportReport):
    """`ImportReport` plus the runs dropped for non-finite weights and what a resumed import reused."""

    dropped: list[str] = field(default_factory=list)
    """Run ids dropped whole because a checkpoint had NaN or infinite weights."""
    parts_reused: int = 0
    parts_total: int = 0
    seconds: float = 0.0
    alignment: str = ""
    """How metadata rows were matched to weights rows, and runs found (also the manifest's ``alignment``)."""

    def summary(self) -> str:
        lines = super().summary().split("\n")
        extra = [f"Rows aligned {self.alignment}."] if self.alignment else []
        if self.dropped:
            shown = ", ".join(repr(r) for r in self.dropped[:MAX_LISTED])
            more = f" and {len(self.dropped) - MAX_LISTED} more" if len(self.dropped) > MAX_LISTED else ""
            extra.append(
                f"Dropped {len(self.dropped)} run(s) with non-finite weights (NaN or inf): {shown}{more} "
                f"(all are listed in {MANIFEST})."
            )
        else:
            extra.append("Dropped 0 runs with non-finite weights.")
        if self.parts_reused:
            extra.append(f"Resumed: {self.parts_reused} of {self.parts_total} part(s) were already written.")
        return "\n".join([lines[0], *extra, *lines[1:], f"Took {self.seconds:.1f} s."])


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


def _raw_layout(path: Path) -> list[tuple[str, tuple[int, ...], int, int | None, str]]:
    """(name, shape, start, end or None, where) per entry of a CSV or JSON layout file."""
    if not path.is_file():
        raise InvalidInputError(f"{path}: layout file not found")
    suffix = path.suffix.lower()
    out: list[tuple[str, tuple[int, ...], int, int | None, str]] = []
    try:
        if suffix == ".csv":
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
        elif suffix == ".json":
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
            for i, item in enumerate(items):
                where = f"{path} entry {i + 1}"
                if not isinstance(item, dict) or "bad" in item:
                    raise InvalidInputError(f"{where}: expected an object with name, shape and offset")
                name = str(item.get("name") or "").strip()
                if not name:
                    raise InvalidInputError(f"{where}: no name")
                where = f"{path} entry {name!r}"
                if "shape" not in item:
                    raise InvalidInputError(f"{where}: no shape")
                shape = _parse_shape(item["shape"], where)
                start_key = _first(list(item), ("offset", "start", "start_idx"))
                if start_key is None:
                    raise InvalidInputError(f"{where}: no offset (or start) of the tensor in the vector")
                start = _int_cell(item[start_key], start_key, where)
                end_key = _first(list(item), ("end", "end_idx"))
                end = _int_cell(item[end_key], end_key, where) if end_key else None
                out.append((name, shape, start, end, where))
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
    unknown = sorted(set(names) - {r[0] for r in raw})
    if unknown:
        raise ConfigError(f"names: {unknown} are not entries of the layout {path}")
    for name, key in names.items():
        problem = _key_problem(key)
        if problem:
            raise ConfigError(
                f"names: {name!r} -> {key!r}: {problem}; map it to a tensor name such as 'fc.weight'"
            )
    firsts = {r[0].split(":", 1)[0].split("/")[0] for r in raw}
    drop_first = len(firsts) == 1 and all("/" in r[0] for r in raw)
    entries: list[LayoutEntry] = []
    seen: dict[str, str] = {}
    for name, shape, start, end, where in raw:
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
                    raise InvalidInputError(
                        f"{where}: a {len(shape)}-D Keras kernel has no PyTorch layout here"
                    )
                axes = _KERAS_AXES[len(shape)]
        key = names.get(name, key)
        problem = _key_problem(key)
        if problem:
            raise InvalidInputError(
                f"{where}: {name!r} would become tensor {key!r}, but {problem}; rename it with names "
                "(--names)"
            )
        if key in seen:
            raise InvalidInputError(f"{where}: {name!r} and {seen[key]!r} would both become tensor {key!r}")
        seen[key] = name
        entries.append(LayoutEntry(name, key, start, end, shape, axes))
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


# ---------------------------------------------------------------------------------------------- metadata
def _read_table(path: Path) -> pd.DataFrame:
    """A metadata table: CSV (``.csv``, ``.csv.gz``, ...), JSONL or Parquet."""
    if not path.is_file():
        raise InvalidInputError(f"{path}: metadata file not found")
    name = path.name.lower()
    try:
        if name.endswith((".jsonl", ".ndjson", ".jsonl.gz")):
            df = _read_jsonl_table(path)
        elif name.endswith(".parquet"):
            nested = [f for f in pq.read_schema(path) if pa.types.is_nested(f.type)]
            if nested:
                raise InvalidInputError(
                    f"{path}: column {nested[0].name!r} holds {nested[0].type} values (lists or records); "
                    "a metadata column holds one number, text or boolean per row: flatten it into columns "
                    "of their own, or drop it"
                )
            df = pd.read_parquet(path)
        elif ".csv" in name or ".tsv" in name:
            df = pd.read_csv(path, sep="\t" if ".tsv" in name else ",", low_memory=False)
        else:
            raise InvalidInputError(
                f"{path}: metadata must be .csv (optionally compressed: .csv.gz), .jsonl or .parquet"
            )
    except InvalidInputError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, pa.ArrowException) as e:
        raise InvalidInputError(f"{path}: cannot read the metadata table ({type(e).__name__}: {e})") from e
    columns = [str(c) for c in df.columns]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise InvalidInputError(f"{path}: duplicate column name(s) {', '.join(map(repr, duplicated))}")
    df.columns = columns
    return df


def _read_jsonl_table(path: Path) -> pd.DataFrame:
    """A JSONL metadata table by `importers._read_jsonl`, each value as JSON typed it (an object column):
    pandas' own reader would turn ``true`` in a column of numbers into 1.0."""
    columns, rows = _read_jsonl(path)
    bad = next((r for r in rows if r.problem), None)
    if bad is not None:
        raise InvalidInputError(f"{path} line {bad.line}: {bad.problem}")
    return pd.DataFrame([[r.values.get(c) for c in columns] for r in rows], columns=columns, dtype=object)


def _values(series: pd.Series) -> list[Any]:
    """A column as Python values (numpy scalars become int/float/bool; missing numbers stay NaN)."""
    return series.tolist()


# ---------------------------------------------------------------------------------------------- split files
def read_split_file(path: str | Path, n_rows: int) -> np.ndarray:
    """An NFN / Neural Graphs split file: an order of all ``n_rows`` weights rows, one index per line."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: split file not found")
    values: list[int] = []
    with path.open(encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            text = line.strip().split(",")[0].strip()
            if not text:
                continue
            if not re.fullmatch(r"\d+", text):
                raise InvalidInputError(
                    f"{path} line {line_no}: {line.strip()!r} is not a row index; a split file holds one "
                    "weights row index per line, no header"
                )
            digits = text.lstrip("0") or "0"
            if len(digits) > len(str(n_rows)) or int(digits) >= n_rows:  # checked here: no int64 overflow
                shown = digits if len(digits) <= 24 else f"{digits[:12]}... ({len(digits)} digits)"
                raise InvalidInputError(
                    f"{path} line {line_no}: row index {shown} is outside the weights file's {n_rows} rows "
                    f"(0..{n_rows - 1}); a split file orders the rows of its own zoo (a split file of "
                    "another dataset?)"
                )
            values.append(int(text))
    order = np.asarray(values, dtype=np.int64)
    if len(order) == n_rows + 1 and order[0] == 0 and int((order[1:] == 0).sum()) == 1:
        order = order[1:]  # a header line "0" written by pandas' to_csv
    if len(order) != n_rows:
        raise InvalidInputError(
            f"{path}: lists {len(order)} rows but the weights file has {n_rows}; a split file orders every "
            "row of its own zoo (a split file of another dataset?)"
        )
    if order.min() < 0 or order.max() >= n_rows:
        raise InvalidInputError(
            f"{path}: row index {int(order.max())} is outside the weights file's {n_rows} rows"
        )
    counts = np.bincount(order, minlength=n_rows)
    if (counts != 1).any():
        twice = int(np.flatnonzero(counts > 1)[0])
        raise InvalidInputError(
            f"{path}: row {twice} is listed {int(counts[twice])} times; each row must be listed once"
        )
    return order


def _split_file_assignment(order: np.ndarray, is_final: np.ndarray) -> np.ndarray:
    """Split (0 train, 1 validation, 2 test, -1 none) of every weights row by the NFN protocol (see the
    module docs)."""
    finals = order[is_final[order]]
    n = len(finals)
    test_point = int(NFN_TEST_FRACTION * n)
    trainval = list(range(test_point))
    random.Random(0).shuffle(trainval)
    val_point = int(NFN_TRAIN_OF_TRAINVAL * len(trainval))
    out = np.full(len(is_final), -1, dtype=np.int8)
    out[finals[trainval[:val_point]]] = 0
    out[finals[trainval[val_point:]]] = 1
    out[finals[test_point:]] = 2
    return out


# ---------------------------------------------------------------------------------------------- plan
@dataclass
class _Plan:
    """What will be imported: the metadata of every checkpoint in import order (runs whole and in file order,
    checkpoints ascending) as an Arrow table with the zoo's columns but weights, plus ``split``."""

    table: pa.Table
    source_rows: np.ndarray
    run_starts: list[int]
    extra_types: dict[str, pa.DataType]
    descriptions: dict[str, str]
    skipped: list[tuple[str, str]]
    split_note: str
    split_source: str
    ignored_columns: list[str]
    alignment: str
    """How metadata rows were matched to weights rows and grouped into runs (report and manifest)."""

    def chunks(self, target: int) -> list[tuple[int, int]]:
        """``[start, end)`` table ranges of about ``target`` rows each, never splitting a run."""
        bounds = [*self.run_starts, self.table.num_rows]
        out: list[tuple[int, int]] = []
        start = 0
        for b in bounds[1:]:
            if b - start >= target:
                out.append((start, b))
                start = b
        if start < self.table.num_rows:
            out.append((start, self.table.num_rows))
        return out


def _check_step(step: str | int) -> str | int:
    if isinstance(step, bool):
        raise ConfigError(f"step must be 'final', 'all' or a checkpoint value, got {step!r}")
    if isinstance(step, int):
        if step < 0:
            raise ConfigError(f"step must be >= 0, got {step}")
        return step
    text = str(step).strip().lower()
    if text in ("final", "all"):
        return text
    if re.fullmatch(r"\d+", text):
        return int(text)
    raise ConfigError(f"step must be 'final', 'all' or a checkpoint value such as 86, got {step!r}")


@dataclass
class _Runs:
    """Run id and checkpoint of every metadata row; ``valid`` rows have both (and are no duplicate);
    ``rows``: run id -> its valid rows, runs in order of first appearance."""

    ids: list[str]
    checkpoints: np.ndarray
    valid: np.ndarray
    rows: dict[str, list[int]]


def _column_targets(
    names: list[str], columns: Mapping[str, str], skip: set[str], checkpoints: bool, metadata: Path
) -> dict[str, str]:
    """Metadata column -> zoo column for every column not in ``skip`` (``columns`` renames)."""
    targets: dict[str, str] = {}
    for c in names:
        if c in skip:
            continue
        t = columns.get(c, c)
        reserved = t == WEIGHTS or t in RESERVED_COLUMNS or t.startswith("_") or t in ("model_id", SOURCE_ROW)
        if reserved or (t == "checkpoint_epoch" and checkpoints):
            raise InvalidInputError(
                f"{metadata}: column {c!r} cannot be imported as {t!r} (the name is reserved by the zoo "
                "format or taken by another option); rename it"
            )
        clash = next((s for s, u in targets.items() if u == t), None)
        if clash is not None:
            raise InvalidInputError(f"{metadata}: columns {clash!r} and {c!r} would both become {t!r}")
        targets[c] = t
    return targets


def _find_runs(
    df: pd.DataFrame, id_col: str | None, ck_col: str | None, where: Any, metadata: Path, problems: _Problems
) -> _Runs:
    n_rows = len(df)
    valid = np.ones(n_rows, dtype=bool)
    ids = [f"row{i}" for i in range(n_rows)]  # without an id column every row is its own run
    if id_col is not None:
        for i, v in enumerate(_values(df[id_col])):
            if _is_missing(v):
                problems.add(where(i), f"no run id in column {id_col!r}")
                valid[i] = False
            else:
                ids[i] = _to_text(v).strip()
    checkpoints = np.zeros(n_rows, dtype=np.int64)
    if ck_col is not None:
        for i, v in enumerate(_values(df[ck_col])):
            try:
                value = _convert_field("checkpoint_epoch", v)
                if value is None:
                    raise _Bad(f"no checkpoint value in column {ck_col!r}")
                checkpoints[i] = value
            except _Bad as e:
                problems.add(where(i), str(e).replace("'checkpoint_epoch'", repr(ck_col)))
                valid[i] = False
    runs: dict[str, list[int]] = {}
    for i in np.flatnonzero(valid):
        rows = runs.setdefault(ids[i], [])
        twin = next((r for r in rows if checkpoints[r] == checkpoints[i]), None)
        if twin is not None:
            problems.add(
                where(int(i)),
                f"run {ids[i]!r} has checkpoint {int(checkpoints[i])} twice (also {metadata.name} row "
                f"{twin + 1}); rows of one run need distinct checkpoint values",
            )
            valid[i] = False
            continue
        rows.append(int(i))
    return _Runs(ids, checkpoints, valid, runs)


def _assign_splits(
    runs: _Runs,
    df: pd.DataFrame,
    *,
    split_order: np.ndarray | None,
    split_file: Path | None,
    split_col: str | None,
    ck_col: str | None,
    fractions: tuple[float, float, float],
    seed: int,
    where: Any,
    metadata: Path,
    problems: _Problems,
) -> tuple[dict[str, str], list[tuple[str, str]], str, str]:
    """Run id -> split; runs left out (with why); the card's note; the manifest's ``split_source``."""
    run_split: dict[str, str] = {}
    left_out: list[tuple[str, str]] = []
    if split_order is not None:
        checkpoints = runs.checkpoints
        last = int(checkpoints[runs.valid].max()) if runs.valid.any() else 0
        assigned = _split_file_assignment(split_order, runs.valid & (checkpoints == last))
        for run, rows in runs.rows.items():
            placed = [int(assigned[r]) for r in rows if assigned[r] >= 0]
            if placed:
                run_split[run] = SPLITS[placed[0]]
            else:
                left_out.append(
                    (
                        f"run {run!r} ({metadata.name} row {rows[0] + 1})",
                        f"has no checkpoint at {ck_col or 'the last checkpoint'} {last}, where the split "
                        "file's protocol places runs; left out",
                    )
                )
        note = (
            f"Splits follow the split file `{split_file.name if split_file else ''}` with the NFN protocol: "
            f"rows at checkpoint {last} in the file's order, the second half test, the first half shuffled "
            "with Python's random.Random(0) and split 80/20 into train and validation; every checkpoint of "
            "a run follows its final row."
        )
        return run_split, left_out, note, f"split file {split_file}"
    if split_col is not None:
        for run, rows in runs.rows.items():
            labels: dict[str, int] = {}
            for r in rows:
                try:
                    labels.setdefault(_split_label(df[split_col].iat[r]), r)
                except _Bad as e:
                    problems.add(where(r), str(e))
            if len(labels) > 1:
                (a, ra), (b, rb) = list(labels.items())[:2]
                problems.add(
                    where(rb),
                    f"run {run!r} is in split {b!r} here but {a!r} in row {ra + 1}; all checkpoints of a run "
                    "must be in one split",
                )
            elif labels:
                run_split[run] = next(iter(labels))
        return (
            run_split,
            left_out,
            f"Splits come from column `{split_col}` of the metadata.",
            f"column {split_col}",
        )
    run_split = {run: _hash_split(run, seed, fractions) for run in runs.rows}
    note = f"Splits were assigned per run by hashing the run id (seed {seed}, fractions {list(fractions)})."
    return run_split, left_out, note, "hash"


def _select(runs: _Runs, run_split: Mapping[str, str], step: str | int, max_runs: int | None) -> np.ndarray:
    """Weights rows to import, in import order: runs in file order (the first ``max_runs`` of those with a
    split and a matching checkpoint), checkpoints ascending."""
    selected: list[int] = []
    n_runs = 0
    for run, rows in runs.rows.items():
        if run not in run_split:
            continue
        rows = sorted(rows, key=lambda r: runs.checkpoints[r])
        if step == "final":
            rows = rows[-1:]
        elif step != "all":
            rows = [r for r in rows if runs.checkpoints[r] == step]
        if not rows:
            continue
        if max_runs is not None and n_runs >= max_runs:
            break
        n_runs += 1
        selected.extend(rows)
    return np.asarray(selected, dtype=np.int64)


def _convert_column(
    column: str,
    name: str,
    values: list[Any],
    rows: np.ndarray,
    keep: np.ndarray,
    where: Any,
    accuracy_percent: bool,
    problems: _Problems,
) -> list[Any]:
    """`_convert_field` of zoo field ``name`` over a metadata column's values (weights ``rows``), each
    distinct value converted once (a run's checkpoints repeat its hyperparameters). A bad value is a problem
    of its row, which ``keep`` then leaves out."""
    memo: dict[tuple[type, Any], Any] = {}
    out: list[Any] = []
    for pos, v in enumerate(values):
        key = (type(v), v if isinstance(v, str | int | float | None) else id(v))  # JSON lists: no reuse
        if key not in memo:
            try:
                value = _convert_field(name, v, accuracy_percent)
                memo[key] = value.lower() if name in _LOWERCASED and isinstance(value, str) else value
            except _Bad as e:
                memo[key] = e
        value = memo[key]
        if isinstance(value, _Bad):
            if keep[pos]:
                problems.add(
                    where(int(rows[pos])), f"column {column!r}: {value}" if column != name else str(value)
                )
                keep[pos] = False
            value = None
        out.append(value)
    return out


def _derived(arrays: dict[str, pa.Array], layout: list[LayoutEntry], is_final: np.ndarray) -> None:
    """Fill the columns that follow exactly from the data where the metadata left them empty."""
    n = len(is_final)

    def fill(name: str, values: pa.Array) -> None:
        given = arrays.get(name)
        arrays[name] = values if given is None else pc.fill_null(given, values)

    fill("is_final", pa.array(is_final, type=pa.bool_()))
    num_params = sum(e.size for e in layout if not is_running_stat(e.key))
    fill("num_params", pa.array(np.full(n, num_params, dtype=np.int64)))
    fill("has_conv_layers", pa.array(np.full(n, any(len(e.shape) >= 3 for e in layout))))
    if "dropout" in arrays:
        fill("has_dropout", pc.greater(arrays["dropout"], 0))
    if "train_accuracy" in arrays and "test_accuracy" in arrays:
        train, test = (arrays[k].cast(pa.float64()) for k in ("train_accuracy", "test_accuracy"))
        fill("generalization_gap", pc.subtract(train, test).cast(pa.float32()))


def _plan(
    df: pd.DataFrame,
    metadata: Path,
    *,
    layout: list[LayoutEntry],
    columns: Mapping[str, str],
    id_column: str | None,
    checkpoint_column: str | None,
    split_column: str,
    step: str | int,
    max_runs: int | None,
    split_order: np.ndarray | None,
    split_file: Path | None,
    fractions: tuple[float, float, float],
    seed: int,
    accuracy_percent: bool,
    problems: _Problems,
    runs_by_row: bool = False,
) -> _Plan:
    """``runs_by_row``: the metadata has no run ids (a Small CNN Zoo without ``modeldir``): each row at the
    selected checkpoint (``step``; ``"final"``: the last checkpoint value) is one run, as the NFN loader
    reads that format, and the rows at other checkpoints are not imported."""
    names = list(df.columns)
    ignored = [c for c in names if _INDEX_COLUMN.fullmatch(c)]
    id_col = id_column if id_column is not None else ("model_id" if "model_id" in names else None)
    if runs_by_row:
        id_col = None  # no run ids: not even a model_id column stands in for the missing one
    ck_col = checkpoint_column
    if ck_col is None and "checkpoint_epoch" in names:
        ck_col = "checkpoint_epoch"
    split_col = split_column if split_column in names and split_order is None else None
    if isinstance(step, int) and ck_col is None:
        raise ConfigError(
            f"step={step}: {metadata} has no checkpoint column (checkpoint_epoch); name it with "
            "checkpoint_column"
        )
    for option, col in (("id_column", id_column), ("checkpoint_column", checkpoint_column)):
        if col is not None and col not in names:
            raise InvalidInputError(
                f"{metadata}: {option} {col!r} is not a column (columns: {', '.join(names)})"
            )
    if split_order is not None and split_column in names:
        ignored.append(split_column)  # the split file decides
    skip = {c for c in (id_col, ck_col, split_col) if c is not None} | set(ignored)
    targets = _column_targets(names, columns, skip, ck_col is not None, metadata)
    known = {c: t for c, t in targets.items() if t in FIELD_BY_NAME}
    extras = {c: t for c, t in targets.items() if t not in FIELD_BY_NAME}

    def where(i: int) -> str:
        return f"{metadata} row {i + 1} (weights row {i})"

    runs = _find_runs(df, id_col, ck_col, where, metadata, problems)
    last_value = int(runs.checkpoints[runs.valid].max()) if runs.valid.any() else 0
    if runs_by_row:
        target = last_value if step == "final" else step
        runs.rows = {run: rows for run, rows in runs.rows.items() if runs.checkpoints[rows[0]] == target}
        alignment = (
            f"by row order ({metadata.name} row i describes weights row i, as the NFN loader reads this "
            f"format); no run id column, so each row at {ck_col or 'checkpoint'} {target} is one run"
        )
    elif id_col is not None:
        alignment = f"by row order ({metadata.name} row i describes weights row i); runs by column {id_col!r}"
    else:
        alignment = f"by row order ({metadata.name} row i describes weights row i); each row is its own run"
    run_split, left_out, split_note, split_source = _assign_splits(
        runs, df, split_order=split_order, split_file=split_file, split_col=split_col, ck_col=ck_col,
        fractions=fractions, seed=seed, where=where, metadata=metadata, problems=problems,
    )  # fmt: skip
    selected = _select(runs, run_split, step, max_runs)

    # The selected rows' metadata, a column at a time into Arrow; a row with a bad value is left out.
    keep = np.ones(len(selected), dtype=bool)
    arrays: dict[str, pa.Array] = {}
    for c, t in known.items():
        values = _convert_column(
            c, t, _values(df[c].iloc[selected]), selected, keep, where, accuracy_percent, problems
        )
        arrays[t] = pa.array(values, type=FIELD_BY_NAME[t].type)
    mask = pa.array(keep)
    arrays = {t: a.filter(mask) for t, a in arrays.items()}
    kept = selected[keep]
    extra_types: dict[str, pa.DataType] = {}
    for c, t in extras.items():
        extra_types[t], values = _infer_column(_values(df[c].iloc[kept]), typed=True)
        arrays[t] = pa.array(values, type=extra_types[t])
    extra_types[SOURCE_ROW] = pa.int64()
    arrays[SOURCE_ROW] = pa.array(kept, type=pa.int64())
    ids = [runs.ids[r] for r in kept]
    arrays["model_id"] = pa.array(ids, type=pa.string())
    checkpoints = runs.checkpoints[kept]
    if ck_col is not None:
        arrays["checkpoint_epoch"] = pa.array(checkpoints, type=pa.int32())
    final_of = {run: max(int(runs.checkpoints[r]) for r in rows) for run, rows in runs.rows.items()}
    if runs_by_row:  # a row's run is unknown: its checkpoint is final when it is the zoo's last one
        final_of = dict.fromkeys(final_of, last_value)
    is_final = checkpoints == np.asarray([final_of[i] for i in ids], dtype=np.int64)
    _derived(arrays, layout, is_final if ck_col is not None else np.ones(len(kept), dtype=bool))

    fields = [f for f in arrow_schema(extra_types) if f.name != WEIGHTS]
    columns = [arrays[f.name] if f.name in arrays else pa.nulls(len(kept), f.type) for f in fields]
    columns.append(pa.array([run_split[i] for i in ids], type=pa.string()))
    table = pa.Table.from_arrays(columns, schema=pa.schema([*fields, pa.field("split", pa.string())]))
    descriptions = {t: f"Imported from column `{c}` of `{metadata.name}`." for c, t in extras.items()}
    descriptions[SOURCE_ROW] = "Row of the weights file this checkpoint was read from (0-based)."
    return _Plan(
        table=table,
        source_rows=kept,
        run_starts=[p for p in range(len(ids)) if p == 0 or ids[p] != ids[p - 1]],
        extra_types=extra_types,
        descriptions=descriptions,
        skipped=left_out,
        split_note=split_note,
        split_source=split_source,
        ignored_columns=ignored,
        alignment=alignment,
    )


# ---------------------------------------------------------------------------------------------- output folder
def _refuse_finished(output: Path) -> OutputFolderError:
    return OutputFolderError(
        f"--output {output}: holds a zoo already; choose a new folder, or pass --overwrite true to replace "
        "it (only the files zooprobe wrote there are removed)"
    )


def _check_resumable(output: Path, config: dict[str, Any] | None, overwrite: bool) -> bool:
    """Whether ``output`` may take this import (reads only): new, empty, or (``overwrite``) any zoo folder, or
    an unfinished import of the same ``config`` (then True: resume it). ``config=None``: the first check,
    before the inputs are read."""
    state = check_output(output, ZOO_OUTPUT, overwrite=overwrite)
    if state != "own" or overwrite:
        return False
    if all(p.name in (MARKER, LOCK) for p in output.rglob("*") if p.is_file()):
        return False  # claimed, then killed before anything was written
    if (output / MANIFEST).exists() and not (output / WRITING).exists():
        raise _refuse_finished(output)
    saved_path = output / IMPORT_CONFIG
    if not saved_path.is_file():
        raise OutputFolderError(
            f"--output {output}: holds an unfinished zoo write that is not an import (a `zoo build`?); "
            "choose a new folder, or pass --overwrite true to start over"
        )
    if config is None:
        return True
    try:
        saved = parse_json(saved_path.read_text())
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and isinstance(saved.get("sources"), dict):
        for role, now in config["sources"].items():
            before = saved["sources"].get(role)
            if (
                isinstance(before, dict)
                and now is not None
                and before.get("path") == now["path"]
                and before.get("sha256") != now["sha256"]
            ):
                raise OutputFolderError(
                    f"--output {output}: holds an unfinished import, but its {role} file {now['path']} has "
                    "changed since that import began (its content differs, whatever its size and time); "
                    "resuming would mix rows of the old and the new file: pass --overwrite true to start "
                    "over, or restore the file"
                )
    if saved != config:
        differ = (
            sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
            if isinstance(saved, dict)
            else ["everything"]
        )
        raise OutputFolderError(
            f"--output {output}: holds an unfinished import of other inputs or options (differs in: "
            f"{', '.join(differ)}); run that import again to finish it, choose a new folder, or pass "
            "--overwrite true to start over"
        )
    return True


def source_fingerprint(path: Path) -> dict[str, Any]:
    """What a resumed import checks a source file against: its resolved path, its size and the sha256 of
    its whole content.

    The whole file is hashed, whatever its size (one sequential read: seconds for the 5 GiB of the Small CNN
    Zoo's ``--step all``), rather than sampled blocks: a rewrite in place that keeps the size and the
    modification time (``os.utime``) and changes only values between sampled blocks would pass a sampled
    check, and a resumed import would then mix rows of the old and the new file.
    """
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": digest.hexdigest()}


# ---------------------------------------------------------------------------------------------- streaming
def _part_path(parts: Path, k: int) -> Path:
    return parts / f"import-{k:06d}.parquet"


def _part_done(path: Path) -> bool:
    """A part written completely (parts are renamed into place, so a readable footer means complete)."""
    if not path.is_file():
        return False
    try:
        pq.read_metadata(path)
        return True
    except (pa.ArrowInvalid, OSError):
        path.unlink(missing_ok=True)
        return False


def _release(weights: np.ndarray) -> None:
    """Drop the memory map's pages from this process once a chunk is copied out: they stay in the page
    cache, but no longer count as this process's memory, so resident memory does not grow with the zoo."""
    mapping = getattr(weights, "_mmap", None)
    if isinstance(mapping, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


class _Encoder:
    """`store.encode_weights` for many state dicts of one layout, byte for byte and much faster.

    A safetensors payload is an 8-byte length, a JSON header (names, dtypes, shapes, data offsets, the key
    order) and the tensors' bytes. For state dicts of one layout the header is the same every time, so it is
    taken from `encode_weights` on a first state dict (which also checks the values are finite, as every
    row's are checked before), and each payload is that header plus the row's tensor bytes in header order.
    """

    def __init__(self, state_dict: dict[str, torch.Tensor], where: str) -> None:
        payload = encode_weights(state_dict, where=where)
        n = int.from_bytes(payload[:8], "little")
        header = json.loads(payload[8 : 8 + n])
        spans = sorted((tuple(v["data_offsets"]), k) for k, v in header.items() if k != "__metadata__")
        position = 0
        for (begin, end), key in spans:
            tensor = state_dict[key]
            if begin != position or end - begin != tensor.numel() * tensor.element_size():
                raise AssertionError(f"unexpected safetensors layout of {key!r}: {begin}..{end}")
            position = end
        if len(payload) != 8 + n + position:
            raise AssertionError("unexpected safetensors payload size")
        self.prefix = payload[: 8 + n]
        self.order = [key for _, key in spans]
        self.first = payload

    def encode(self, arrays: Mapping[str, np.ndarray]) -> bytes:
        """The payload of the state dict ``arrays`` (C-contiguous little-endian arrays, the first one's
        names, dtypes and shapes)."""
        return b"".join([self.prefix, *(memoryview(arrays[key]) for key in self.order)])


def _write_part(
    path: Path,
    plan: _Plan,
    span: tuple[int, int],
    weights: np.ndarray,
    layout: list[LayoutEntry],
    weights_path: Path,
) -> int:
    """Convert table rows ``span`` (whole runs) and write them as one part; returns the rows dropped."""
    start, end = span
    rows = plan.source_rows[start:end]
    order = np.argsort(rows, kind="stable")
    data = np.empty((len(rows), weights.shape[1]), dtype=weights.dtype.newbyteorder("<"))
    data[order] = weights[rows[order]]  # sorted row indices: the memory map is read front to back
    _release(weights)
    finite = np.isfinite(data).all(axis=1)
    table = plan.table.slice(start, end - start)
    keep = np.ones(len(rows), dtype=bool)
    dropped: list[dict[str, Any]] = []
    if not finite.all():
        ids = table.column("model_id").to_pylist()
        checkpoints = (
            table.column("checkpoint_epoch").to_pylist() if "checkpoint_epoch" in table.column_names else None
        )
        bounds = [b - start for b in plan.run_starts if start <= b < end] + [end - start]
        for a, b in itertools.pairwise(bounds):
            bad = np.flatnonzero(~finite[a:b])
            if len(bad):
                keep[a:b] = False
                first = a + int(bad[0])
                dropped.append(
                    {
                        "model_id": ids[a],
                        "row": int(rows[first]),
                        "checkpoint": checkpoints[first] if checkpoints else None,
                    }
                )
    tensors = {}
    for e in layout:
        arr = data[:, e.start : e.end].reshape((len(rows), *e.shape))
        if e.axes:
            arr = arr.transpose((0, *(a + 1 for a in e.axes)))
        tensors[e.key] = np.ascontiguousarray(arr)
    payloads: list[bytes] = []
    hashes: list[str] = []
    indices = np.flatnonzero(keep)
    if len(indices):
        first = int(indices[0])
        state_dict = {key: torch.from_numpy(t[first]) for key, t in tensors.items()}
        encoder = _Encoder(state_dict, where=f"{weights_path} row {int(rows[first])}")
        if encoder.encode({key: t[first] for key, t in tensors.items()}) != encoder.first:
            raise AssertionError("the fast safetensors encoding differs from encode_weights")
        for i in indices:
            payload = encoder.encode({key: t[i] for key, t in tensors.items()})
            payloads.append(payload)
            hashes.append(payload_hash(payload))
    table = table.filter(pa.array(keep))
    split = table.column("split")
    table = table.drop_columns(["split"]).append_column(WEIGHTS, pa.array(payloads, type=pa.binary()))
    table = table.append_column("split", split)
    table = table.replace_schema_metadata({"dropped": json.dumps(dropped), "hashes": json.dumps(hashes)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP)
    return len(rows) - len(payloads)


def _finalize(
    output: Path,
    parts: list[Path],
    metadata: pa.Table,
    extra_descriptions: dict[str, str],
    report: FlatImportReport,
    *,
    title: str,
    description: str,
    manifest_extra: dict[str, Any],
    accuracy_percent: bool,
) -> None:
    """Stream the parts into the zoo's data files (the protocol of `store.write_zoo`: a ``.zooprobe-writing``
    marker while writing, data swapped in from a staging folder, the manifest last), then remove the parts.
    ``metadata``: the plan's table (every planned checkpoint's metadata and split) for the dataset card."""
    hash_parts: list[np.ndarray] = []
    id_parts: list[pa.Array] = []
    split_parts: list[pa.Array] = []
    accuracies: list[float] = []
    dropped: list[dict[str, Any]] = []
    for path in parts:
        meta = pq.read_schema(path).metadata or {}
        dropped += json.loads(meta.get(b"dropped", b"[]"))
        hash_parts.append(np.asarray(json.loads(meta.get(b"hashes", b"[]")), dtype="U16"))
        names = ["test_accuracy", "train_accuracy", "val_accuracy"] if accuracy_percent else []
        small = pq.read_table(path, columns=["model_id", "split", *names])
        id_parts.append(small.column("model_id").combine_chunks())
        split_parts.append(small.column("split").combine_chunks())
        for name in names:
            accuracies += [a for a in small.column(name).to_pylist() if a is not None]
    report.dropped = [d["model_id"] for d in dropped]
    hashes = np.concatenate(hash_parts)
    ids = pa.chunked_array(id_parts, type=pa.string())
    splits = pa.chunked_array(split_parts, type=pa.string())
    if len(splits) == 0:
        raise _NothingImported(
            f"{report.source}: no checkpoint to import: every run was dropped (non-finite weights) or "
            f"skipped; nothing was written to {output} (what this import wrote there was removed)"
        )
    counts = dict.fromkeys(SPLITS, 0)
    for item in pc.value_counts(splits).to_pylist():
        counts[item["values"]] = item["counts"]
    # identical weights in several splits: only checkpoints whose hash occurs more than once can be copies
    _, inverse, repeats = np.unique(hashes, return_inverse=True, return_counts=True)
    twins = pa.array(np.flatnonzero(repeats[inverse] > 1))
    messages, manifest_warnings = _warnings_from(
        hashes[twins.to_numpy()].tolist(),
        ids.take(twins).to_pylist(),
        splits.take(twins).to_pylist(),
        accuracies,
        accuracy_percent,
    )
    report.warnings += messages

    staging = begin_zoo_write(output)
    schema = pq.read_schema(parts[0]).remove_metadata()
    schema = schema.remove(schema.get_field_index("split"))
    writers = {s: SplitWriter(staging, s, counts[s], schema) for s in SPLITS if counts[s]}
    for path in parts:
        table = pq.read_table(path).replace_schema_metadata(None)
        for s, writer in writers.items():
            sub = table.filter(pc.equal(table.column("split"), s)).drop_columns(["split"])
            if sub.num_rows == 0:
                continue
            writer.write(sub)
        del table
    for writer in writers.values():
        writer.close()
    # The card reads the metadata of each split: the plan's table (one chunk), less the dropped runs.
    kept = pc.invert(pc.is_in(metadata.column("model_id"), value_set=pa.array(report.dropped, pa.string())))
    tables = {}
    for s in writers:
        rows = metadata.filter(pc.and_(pc.equal(metadata.column("split"), s), kept)).drop_columns(["split"])
        tables[s] = rows.append_column(WEIGHTS, pa.nulls(rows.num_rows, pa.binary()))
    report.imported = sum(counts.values())
    report.runs = int(pc.count_distinct(ids).as_py())
    report.splits = {s: counts[s] for s in SPLITS if counts[s]}
    skipped_text = (
        f"{len(report.skipped)} row(s) or run(s) were skipped; the manifest lists them with reasons."
        if report.skipped
        else "No input was skipped."
    )
    card = dataset_card(
        title,
        f"{description}\n\n{report.imported} checkpoints of {report.runs} training runs. {len(dropped)} "
        f"run(s) with non-finite weights were dropped. {skipped_text}",
        tables,
        extra_descriptions,
        num_bytes={s: w.num_bytes for s, w in writers.items()},
    )
    manifest = base_manifest(
        "import",
        **manifest_extra,
        imported=report.imported,
        runs=report.runs,
        splits=counts,
        skipped=len(report.skipped),
        skipped_rows=[{"where": w, "reason": r} for w, r in report.skipped],
        dropped_nonfinite=len(dropped),
        dropped_runs=dropped,
        **manifest_warnings,
    )
    finish_zoo_write(output, manifest, card)
    for path in parts:
        path.unlink(missing_ok=True)
    (output / IMPORT_CONFIG).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (output / PARTS).rmdir()


class _NothingImported(InvalidInputError):
    """Every planned checkpoint was dropped: an import that leaves no zoo."""


@contextlib.contextmanager
def _discard_when_nothing_imported(output: Path, parts: list[Path], state: str) -> Iterator[None]:
    """On `_NothingImported`, remove what the import wrote into ``output``: its parts, ``.parts/`` and
    ``import_config.json``; in a folder it created (``state`` ``"new"``) or found empty (``"empty"``) also
    its marker, and a folder it created. Nothing else is touched: only zooprobe's own files are named."""
    try:
        yield
    except _NothingImported:
        for path in parts:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (output / PARTS).rmdir()
        (output / IMPORT_CONFIG).unlink(missing_ok=True)
        if state in ("new", "empty") and all(p.name in (MARKER, LOCK) for p in output.iterdir()):
            release_outputs()  # the folder is given back as it was: its lock goes with the marker
            (output / MARKER).unlink(missing_ok=True)
            (output / LOCK).unlink(missing_ok=True)
            if state == "new":
                with contextlib.suppress(OSError):
                    output.rmdir()
        raise


# ---------------------------------------------------------------------------------------------- importers
@holding_outputs  # the folder's lock is released when it returns
def _import(
    *,
    weights: Path,
    layout_path: Path,
    metadata: Path,
    output: Path,
    weights_key: str | None,
    layout_convention: LayoutConvention,
    names: Mapping[str, str] | None,
    columns: Mapping[str, str],
    optional_columns: bool,
    required_columns: Sequence[str],
    id_column: str | None,
    checkpoint_column: str | None,
    step: str | int,
    id_optional: bool = False,
    max_runs: int | None,
    split_column: str,
    split_file: Path | None,
    split_fractions: Sequence[float],
    seed: int,
    skip_invalid: bool,
    accuracy_percent: bool,
    overwrite: bool,
    progress: bool,
    chunk_rows: int,
    importer: str,
    source: Path,
    title: str,
    description: str,
    manifest_extra: dict[str, Any],
) -> FlatImportReport:
    started = time.perf_counter()
    fractions = _check_fractions(split_fractions)
    step = _check_step(step)
    if max_runs is not None and (isinstance(max_runs, bool) or max_runs < 1):
        raise ConfigError(f"max_runs must be a positive number of runs, got {max_runs!r}")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")
    # reads only: a folder in the way fails before the inputs are read
    _check_resumable(output, None, overwrite)

    array = open_weights(weights, weights_key)
    n_rows, width = (int(s) for s in array.shape)
    layout = read_layout(layout_path, width, layout_convention, names)
    df = _read_table(metadata)
    missing = [c for c in required_columns if c not in df.columns]
    if missing:
        raise InvalidInputError(
            f"{metadata}: no column(s) {', '.join(map(repr, missing))} (columns: {', '.join(df.columns)})"
        )
    runs_by_row = id_optional and id_column is not None and id_column not in df.columns
    if len(df) != n_rows:
        alone = (
            f" (there is no {id_column!r} column: rows are matched by their order alone)"
            if runs_by_row
            else ""
        )
        raise InvalidInputError(
            f"{metadata}: {len(df)} rows but {weights} holds {n_rows} vectors; row i of the metadata "
            f"describes vector i of the weights, so both must have the same number of rows{alone}"
        )
    if runs_by_row:
        if step == "all" or (split_file is not None and step != "final"):
            raise InvalidInputError(
                f"{metadata}: no {id_column!r} column, so the checkpoints of one run cannot be grouped and "
                f"--step {step} would put checkpoints of one run in different splits; import one checkpoint "
                "per run: --step final (as the NFN loader does)"
                + (" with a split file" if split_file is not None else " or --step N")
                + f", or add the {id_column!r} column"
            )
        id_column = None
    absent = [c for c in columns if c not in df.columns]
    if absent and not optional_columns:
        raise ConfigError(
            f"columns: {absent} are not columns of {metadata} (columns: {', '.join(df.columns)})"
        )
    columns = {c: t for c, t in columns.items() if c in df.columns}
    split_order = read_split_file(split_file, n_rows) if split_file is not None else None
    problems = _Problems(skip_invalid)
    plan = _plan(
        df,
        metadata,
        layout=layout,
        columns=columns,
        id_column=id_column,
        checkpoint_column=checkpoint_column,
        split_column=split_column,
        step=step,
        max_runs=max_runs,
        split_order=split_order,
        split_file=split_file,
        fractions=fractions,
        seed=seed,
        accuracy_percent=accuracy_percent,
        problems=problems,
        runs_by_row=runs_by_row,
    )
    del df
    if plan.table.num_rows == 0:
        if problems.items:
            raise problems.none_valid(str(metadata))
        raise InvalidInputError(f"{metadata}: no checkpoint matches step={step!r}; nothing to import")

    config = {
        "importer": importer,
        "sources": {
            "weights": source_fingerprint(weights),
            "layout": source_fingerprint(layout_path),
            "metadata": source_fingerprint(metadata),
            "split_file": source_fingerprint(split_file) if split_file is not None else None,
        },
        "options": {
            "weights_key": weights_key,
            "layout_convention": layout_convention,
            "names": dict(names or {}),
            "columns": dict(columns),
            "id_column": id_column,
            "checkpoint_column": checkpoint_column,
            "step": step,
            "max_runs": max_runs,
            "split_column": split_column,
            "split_fractions": list(fractions),
            "seed": seed,
            "skip_invalid": skip_invalid,
            "accuracy_percent": accuracy_percent,
            "chunk_rows": chunk_rows,
            "alignment": plan.alignment,
        },
        "format_version": FORMAT_VERSION,
    }
    resume = _check_resumable(output, config, overwrite)
    existed = output.exists()
    state = claim_output(output, ZOO_OUTPUT, overwrite=overwrite)
    state = state if existed else "new"  # the lock makes the folder before the claim looks at it
    if not resume:
        atomic_write_json(output / IMPORT_CONFIG, config)
    report = FlatImportReport(
        source=str(source),
        output=output,
        skipped=[*problems.items, *plan.skipped],
        warnings=[],
        alignment=plan.alignment,
    )
    parts_dir = output / PARTS
    parts_dir.mkdir(exist_ok=True)
    spans = plan.chunks(chunk_rows)
    report.parts_total = len(spans)
    paths = [_part_path(parts_dir, k) for k in range(len(spans))]
    done = [_part_done(path) for path in paths]
    report.parts_reused = sum(done)
    already = sum(b - a for (a, b), d in zip(spans, done, strict=True) if d)
    label = f"importing {source.name}"
    with (
        _discard_when_nothing_imported(output, paths, state),
        Progress(label, plan.table.num_rows, unit="checkpoints", enabled=progress, done=already) as bar,
    ):
        for span, path, finished in zip(spans, paths, done, strict=True):
            if not finished:
                _write_part(path, plan, span, array, layout, weights)
                bar.advance(span[1] - span[0])
        bar.describe(f"writing {output.name}")
        _finalize(
            output,
            paths,
            plan.table,
            plan.descriptions,
            report,
            title=title,
            description=f"{description} {plan.split_note}",
            manifest_extra={
                "importer": importer,
                "source": str(source),
                "weights_file": str(weights),
                "layout_file": str(layout_path),
                "metadata_file": str(metadata),
                "layout_convention": layout_convention,
                "step": step,
                "max_runs": max_runs,
                "split_source": plan.split_source,
                "alignment": plan.alignment,
                "split_file": str(split_file) if split_file else None,
                "seed": seed,
                "split_fractions": list(fractions),
                "ignored_columns": plan.ignored_columns,
                "tensors": [
                    {
                        "name": e.name,
                        "key": e.key,
                        "start": e.start,
                        "end": e.end,
                        "shape": list(e.tensor_shape),
                    }
                    for e in layout
                ],
                **manifest_extra,
            },
            accuracy_percent=accuracy_percent,
        )
    report.seconds = time.perf_counter() - started
    for message in report.warnings:
        warnings.warn(f"{report.source}: {message}", stacklevel=3)
    return report


def import_flat(
    weights: str | Path,
    layout: str | Path,
    metadata: str | Path,
    output: str | Path,
    *,
    weights_key: str | None = None,
    layout_convention: LayoutConvention = "torch",
    names: Mapping[str, str] | None = None,
    columns: Mapping[str, str] | None = None,
    id_column: str | None = None,
    checkpoint_column: str | None = None,
    step: str | int = "final",
    max_runs: int | None = None,
    split_column: str = "split",
    split_file: str | Path | None = None,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    skip_invalid: bool = False,
    accuracy_percent: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> FlatImportReport:
    """Import a flat-vector zoo (weights matrix + layout + metadata table) into a zoo folder at ``output``.

    See the module docs for the file formats, ``layout_convention`` (``torch`` or ``keras``), runs
    (``id_column``, ``checkpoint_column``, ``step``, ``max_runs``), splits (``split_column``, ``split_file``,
    hash with ``seed``/``split_fractions``) and resuming. ``names`` maps layout names to state-dict keys;
    ``columns`` renames metadata columns (e.g. ``{"l2": "weight_decay"}``). Known fields are checked as in
    `zooprobe.zoo.importers` (``accuracy_percent``, ``skip_invalid``). Runs with non-finite weights are
    dropped and counted in the returned report.
    """
    weights, layout, metadata = Path(weights), Path(layout), Path(metadata)
    return _import(
        weights=weights,
        layout_path=layout,
        metadata=metadata,
        output=Path(output),
        weights_key=weights_key,
        layout_convention=layout_convention,
        names=names,
        columns=dict(columns or {}),
        optional_columns=False,
        required_columns=(),
        id_column=id_column,
        checkpoint_column=checkpoint_column,
        step=step,
        max_runs=max_runs,
        split_column=split_column,
        split_file=Path(split_file) if split_file is not None else None,
        split_fractions=split_fractions,
        seed=seed,
        skip_invalid=skip_invalid,
        accuracy_percent=accuracy_percent,
        overwrite=overwrite,
        progress=progress,
        chunk_rows=chunk_rows,
        importer="flat",
        source=weights,
        title=f"Imported zoo: {weights.stem}",
        description=(
            f"Imported with `zooprobe.zoo.flat.import_flat` from the flat weights file `{weights.name}`, the "
            f"layout `{layout.name}` ({layout_convention} convention) and the metadata `{metadata.name}`."
        ),
        manifest_extra={},
    )


def _cnnzoo_files(directory: Path) -> tuple[Path, Path, Path]:
    if not directory.is_dir():
        raise InvalidInputError(
            f"{directory}: Small CNN Zoo folder not found (or not a folder); download and extract one "
            "dataset's archive first (see docs/zoo.md)"
        )
    weights = directory / cnnzoo.WEIGHTS_FILE
    layout = directory / cnnzoo.LAYOUT_FILE
    metrics = next((directory / m for m in cnnzoo.METRICS_FILES if (directory / m).is_file()), None)
    missing = [p.name for p in (weights, layout) if not p.is_file()] + (
        [" or ".join(cnnzoo.METRICS_FILES)] if metrics is None else []
    )
    if missing:
        raise InvalidInputError(
            f"{directory}: missing {', '.join(missing)}; a Small CNN Zoo folder holds weights.npy, "
            "layout.csv and metrics.csv.gz (one dataset's extracted archive)"
        )
    assert metrics is not None
    return weights, layout, metrics


def import_cnnzoo(
    directory: str | Path,
    output: str | Path,
    *,
    step: str | int = "final",
    max_runs: int | None = None,
    split_file: str | Path | None = None,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    id_column: str = cnnzoo.ID_COLUMN,
    skip_invalid: bool = False,
    accuracy_percent: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> FlatImportReport:
    """Import one dataset of the Small CNN Zoo (``weights.npy``, ``layout.csv``, ``metrics.csv.gz`` in
    ``directory``) into a zoo folder: `import_flat` with the Keras layout convention, the tensors named as
    `zooprobe.zoo.cnnzoo.SmallCNN`'s parameters (``conv1.weight``...; ``zoo.model(i)`` rebuilds the network),
    the metadata mapped by `zooprobe.zoo.cnnzoo.METRICS_COLUMNS` (``config.l2reg`` -> ``weight_decay``,
    ``config.w_init`` -> ``init``, ``step`` -> ``checkpoint_epoch``, ...) and runs identified by ``modeldir``.

    Rows of ``metrics.csv.gz`` describe the rows of ``weights.npy`` in order (their counts must agree). A
    ``metrics.csv.gz`` without the ``modeldir`` column (the format the NFN loader reads by row order alone)
    is imported too: each row at the selected step is then one run (``step="final"``: rows at the last step,
    86, as NFN keeps them; ``step="all"`` is refused, since a run's checkpoints cannot be grouped). The
    report and the manifest (``alignment``) say which was used. ``accuracy_percent``: accuracies are
    percentages (divided by 100), as in `import_flat`.

    ``step``: ``"final"`` (each run's last checkpoint, epoch 86), ``"all"`` (9 per run) or one epoch.
    ``split_file``: an NFN / Neural Graphs split file (``predict_gen_data_splits/*_split.csv``), applied with
    their protocol (module docs); otherwise runs are split by a hash of ``modeldir``.
    """
    directory = Path(directory)
    weights, layout, metrics = _cnnzoo_files(directory)
    raw = _raw_layout(layout)
    names = cnnzoo.state_dict_names([r[0] for r in raw], [r[1] for r in raw], str(layout))
    return _import(
        weights=weights,
        layout_path=layout,
        metadata=metrics,
        output=Path(output),
        weights_key=None,
        layout_convention="keras",
        names=names,
        columns=cnnzoo.METRICS_COLUMNS,
        optional_columns=True,
        required_columns=cnnzoo.REQUIRED_COLUMNS,
        id_column=id_column,
        checkpoint_column=cnnzoo.STEP_COLUMN,
        step=step,
        id_optional=True,
        max_runs=max_runs,
        split_column="split",
        split_file=Path(split_file) if split_file is not None else None,
        split_fractions=split_fractions,
        seed=seed,
        skip_invalid=skip_invalid,
        accuracy_percent=accuracy_percent,
        overwrite=overwrite,
        progress=progress,
        chunk_rows=chunk_rows,
        importer="cnnzoo",
        source=directory,
        title=f"Small CNN Zoo: {directory.name}",
        description=(
            "One dataset of the Small CNN Zoo (Unterthiner et al. 2020, *Predicting Neural Network Accuracy "
            "from Weights*, google-research/google-research `dnn_predict_accuracy`; CC-BY 4.0), imported "
            f"with `zooprobe.zoo.flat.import_cnnzoo` from `{directory.name}`. Keras kernels were transposed "
            "to PyTorch layouts (conv HWIO -> OIHW, dense (in, out) -> (out, in)) and named as "
            "`zooprobe.zoo.cnnzoo.SmallCNN`'s parameters; `checkpoint_epoch` is the zoo's `step` (epochs 0, "
            "1, 2, 3, 20, 40, 60, 80, 86)."
        ),
        manifest_extra={"architecture": cnnzoo.ARCHITECTURE},
    )
