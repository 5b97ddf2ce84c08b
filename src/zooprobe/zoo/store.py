"""Zoo storage: a folder that is also a Hugging Face dataset repo, and the one loader for it.

Layout::

    README.md                         dataset card (YAML header: configs, features, splits)
    zooprobe_manifest.json            format version, generator config, library versions, counts
    data/train-00000-of-00001.parquet one row per checkpoint, split by model (never by checkpoint)
    data/validation-...parquet
    data/test-...parquet

`Zoo.load` takes a local folder or a Hub repo id (resolved to a local snapshot first), reads the metadata
columns eagerly and decodes weights lazily, a row group at a time.

Large zoos: only metadata (a few hundred bytes a row) and one 16-character content hash per row read so far
stay in memory. Weights are read from the files a row group at a time into a `RowGroupCache` bounded by
count and bytes (`GROUP_CACHE_GROUPS`, `GROUP_CACHE_BYTES`), so walking a zoo in row order holds at most
that much however large the zoo is. A row group is the unit of reading: `SplitWriter` (behind `write_zoo`,
zoo builds, merges and imports) keeps groups at `ROW_GROUP` rows and at most `ROW_GROUP_BYTES` of weights
unless told otherwise (``row_group_size``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from zooprobe.core.environment import library_versions
from zooprobe.core.files import atomic_write_json, atomic_write_text, parse_json, read_json
from zooprobe.core.outputs import OutputKind
from zooprobe.core.state_dicts import is_running_stat
from zooprobe.core.tensorfile import load_safetensors_bytes, safetensors_bytes
from zooprobe.errors import InvalidInputError, ZooFormatError
from zooprobe.hub import render_card
from zooprobe.zoo import cnnzoo
from zooprobe.zoo.data import load_task
from zooprobe.zoo.models import model_from_metadata
from zooprobe.zoo.schema import (
    FIELD_BY_NAME,
    FIELDS,
    FORMAT_VERSION,
    SPLITS,
    WEIGHTS,
    arrow_schema,
    hf_dtype,
)

MANIFEST = "zooprobe_manifest.json"
WRITING = ".zooprobe-writing"
STAGING = ".data-staging"
ROW_GROUP = 64
"""Most rows per Parquet row group `SplitWriter` writes (fewer for large models: `ROW_GROUP_BYTES`)."""
ROW_GROUP_BYTES = 64 * 2**20
"""`SplitWriter` closes a row group before its weights would exceed this (a larger row is a group alone)."""
ROWS_PER_FILE = 4096
GROUP_CACHE_GROUPS = 8
"""Row groups of weights a `Zoo` keeps read (shared by its views), least recently used dropped first..."""
GROUP_CACHE_BYTES = 256 * 2**20
"""...and at most this many bytes of them (the group being read is always kept, however large)."""

ZOO_OUTPUT = OutputKind(
    "zoo",
    owned=(
        MANIFEST,
        "README.md",
        "data/*.parquet",
        WRITING,
        f"{STAGING}/*",
        "zoo_config.yaml",  # zoo build: the generator configuration
        ".parts/cohort-*.parquet",  # zoo build: finished cohorts of an unfinished build
        ".parts/import-*.parquet",  # zoo import-flat/import-cnnzoo: finished chunks of an unfinished import
        "import_config.json",  # zoo import-flat/import-cnnzoo: inputs and options of an unfinished import
    ),
    signature=(MANIFEST, "zoo_config.yaml"),
)
"""The files zooprobe writes into a zoo folder (see `zooprobe.core.outputs`)."""


# ---------------------------------------------------------------------------------------------- weights
def encode_weights(state_dict: dict[str, torch.Tensor], where: str = "state dict") -> bytes:
    """Serialise a state dict losslessly (safetensors), refusing non-finite values.

    Safetensors orders tensors by itself; the original key order is kept in the file's metadata.
    """
    if not state_dict:
        raise InvalidInputError(f"{where}: empty state dict (no tensors)")
    clean: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise InvalidInputError(f"{where}: entry {k!r} is a {type(v).__name__}, not a tensor")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise InvalidInputError(f"{where}: tensor {k!r} has non-finite values (NaN or inf)")
        clean[k] = v.detach().cpu().contiguous().clone()  # clone: tied/shared tensors must not alias
    return safetensors_bytes(clean, metadata={"order": json.dumps(list(clean))})


def decode_weights(data: bytes, where: str = "weights") -> dict[str, torch.Tensor]:
    """Inverse of `encode_weights`: the state dict with its original key order."""
    tensors, header = load_safetensors_bytes(data, where)  # the header validated before any tensor is read
    file_order = list(header.tensors)
    try:
        order = parse_json(header.metadata.get("order", "null"))
    except json.JSONDecodeError:
        order = None
    if not isinstance(order, list) or sorted(order) != sorted(file_order):
        order = file_order  # not written by zooprobe: keep the file's own order
    return {k: tensors[k] for k in order}


def count_params(state_dict: dict[str, torch.Tensor]) -> int:
    """Trainable-parameter count: floating tensors that are not BatchNorm running statistics."""
    return sum(v.numel() for k, v in state_dict.items() if v.is_floating_point() and not is_running_stat(k))


# ---------------------------------------------------------------------------------------------- writing
RESERVED = ("split", "_file", "_row")


def rows_to_table(rows: list[dict[str, Any]], extra: dict[str, pa.DataType] | None = None) -> pa.Table:
    """Build a table with the zoo schema from row dicts (missing known fields become nulls)."""
    clash = sorted(set(extra or {}) & set(RESERVED))
    if clash:
        raise InvalidInputError(f"column name(s) {clash} are reserved by zooprobe; rename them")
    schema = arrow_schema(extra)
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def check_row_group_size(row_group_size: int | None) -> None:
    """Refuse a ``row_group_size`` that is not None or an integer >= 1."""
    if row_group_size is None:
        return
    if isinstance(row_group_size, bool) or not isinstance(row_group_size, int) or row_group_size < 1:
        raise InvalidInputError(f"row_group_size must be an integer >= 1, got {row_group_size!r}")


class SplitWriter:
    """Writes one split's rows, as they come, into ``SPLIT-NNNNN-of-NNNNN.parquet`` files of `ROWS_PER_FILE`
    rows (``total``: the split's rows, which fixes the file names).

    Rows are held back until a row group is full, so the groups do not depend on how the rows arrive: of
    ``row_group_size`` rows, or by default `ROW_GROUP` rows or fewer where they would hold more than
    `ROW_GROUP_BYTES` of weights (a row larger than that is a group of its own). Memory: one row group.
    ``num_bytes``: the Arrow bytes written so far (the dataset card's split size).
    """

    def __init__(
        self, folder: Path, split: str, total: int, schema: pa.Schema, row_group_size: int | None = None
    ) -> None:
        check_row_group_size(row_group_size)
        self.folder, self.split, self.schema, self.total = Path(folder), split, schema, total
        self.group_rows = row_group_size or ROW_GROUP
        self.by_bytes = row_group_size is None and WEIGHTS in schema.names
        self.n_files = max(1, math.ceil(total / ROWS_PER_FILE))
        self.index = 0  # the file being written
        self.in_file = 0  # rows written to it
        self.rows = 0  # rows written in all
        self.num_bytes = 0
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.pending_bytes = 0

    def write(self, table: pa.Table) -> None:
        if table.schema.names != self.schema.names:
            raise InvalidInputError(
                f"SplitWriter({self.split}): columns {table.schema.names} differ from {self.schema.names}"
            )
        if self.rows + self.pending_rows + table.num_rows > self.total:
            raise InvalidInputError(
                f"SplitWriter({self.split}): more than the {self.total} rows it was told to expect"
            )
        sizes = (
            pc.binary_length(table.column(WEIGHTS)).to_numpy(zero_copy_only=False).astype(np.int64)
            if self.by_bytes
            else None
        )
        offset = 0
        while offset < table.num_rows:
            limit = min(self.group_rows, ROWS_PER_FILE - self.in_file)  # rows the open group may reach
            take = min(limit - self.pending_rows, table.num_rows - offset)
            full = self.pending_rows + take == limit
            if sizes is not None:
                cumulative = np.cumsum(sizes[offset : offset + take])
                fits = int(np.searchsorted(cumulative, ROW_GROUP_BYTES - self.pending_bytes, side="right"))
                if fits < take:  # the group is full by bytes; a lone oversized row is a group of its own
                    take, full = fits or (0 if self.pending_rows else 1), True
            if take:
                self.pending.append(table.slice(offset, take))
                self.pending_rows += take
                if sizes is not None:
                    self.pending_bytes += int(sizes[offset : offset + take].sum())
                offset += take
            if full:
                self._flush()

    def _flush(self) -> None:
        if not self.pending_rows:
            return
        group = pa.concat_tables(self.pending) if len(self.pending) > 1 else self.pending[0]
        if self.writer is None:
            name = f"{self.split}-{self.index:05d}-of-{self.n_files:05d}.parquet"
            self.writer = pq.ParquetWriter(self.folder / name, self.schema, compression="zstd")
        self.writer.write_table(group, row_group_size=group.num_rows)
        self.num_bytes += int(group.nbytes)
        self.in_file += group.num_rows
        self.rows += group.num_rows
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0
        if self.in_file == ROWS_PER_FILE:
            self._close_file()

    def _close_file(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.index += 1
            self.in_file = 0

    def close(self) -> None:
        """Write the last row group and close the last file."""
        self._flush()
        self._close_file()
        if self.rows != self.total:
            raise InvalidInputError(
                f"SplitWriter({self.split}): {self.rows} rows written, {self.total} expected (its file names "
                "count the files of that many rows)"
            )


def write_zoo(
    root: Path,
    tables: dict[str, pa.Table],
    manifest: dict[str, Any],
    card: str,
    row_group_size: int | None = None,
) -> None:
    """Write a zoo folder. New data is written beside the old and swapped in; the manifest comes last.

    ``row_group_size``: rows per Parquet row group (the unit `Zoo` reads weights in); by default `ROW_GROUP`
    rows, fewer for large models (`SplitWriter`). Small groups make random access to a large zoo cheap
    (fine-tuning that streams models reads a whole group for any row of it).

    While writing, a ``.zooprobe-writing`` marker exists: `Zoo.open` refuses such a folder, so a crash
    never leaves something that loads as a complete zoo (running the writing command again finishes it).
    Only zooprobe's own files are replaced (``data/*.parquet``, ``README.md``, the manifest): `root` must be
    a folder zooprobe may write (`zooprobe.core.outputs.claim_output` with `ZOO_OUTPUT`).
    """
    root = Path(root)
    check_row_group_size(row_group_size)  # a bad size fails before anything is written
    staging = begin_zoo_write(root)
    for split in SPLITS:
        table = tables.get(split)
        if table is None or table.num_rows == 0:
            continue
        writer = SplitWriter(staging, split, table.num_rows, table.schema, row_group_size)
        writer.write(table)
        writer.close()
    finish_zoo_write(root, manifest, card)


def begin_zoo_write(root: Path) -> Path:
    """Start writing the zoo folder `root` (see `write_zoo`): the ``.zooprobe-writing`` marker, and a fresh
    staging folder for the new data files, which is returned."""
    root.mkdir(parents=True, exist_ok=True)
    (root / WRITING).touch()
    staging = root / STAGING
    if staging.exists():
        shutil.rmtree(staging)  # zooprobe's own hidden staging folder, left by an interrupted write
    staging.mkdir()
    return staging


def finish_zoo_write(root: Path, manifest: dict[str, Any], card: str) -> None:
    """End a `begin_zoo_write`: swap the staged data files in for the old ones, write the card, the
    manifest last, and remove the marker."""
    staging = root / STAGING
    (root / MANIFEST).unlink(missing_ok=True)
    data = root / "data"
    data.mkdir(exist_ok=True)
    for old in data.glob("*.parquet"):
        old.unlink()
    for new in sorted(staging.iterdir()):
        new.rename(data / new.name)
    staging.rmdir()
    atomic_write_text(root / "README.md", card)
    atomic_write_json(root / MANIFEST, {"format_version": FORMAT_VERSION, **manifest})
    (root / WRITING).unlink()


def base_manifest(kind: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "library_versions": library_versions(), **extra}


# ---------------------------------------------------------------------------------------------- card
def dataset_card(
    title: str,
    description: str,
    tables: dict[str, pa.Table],
    extra_descriptions: dict[str, str] | None = None,
    config_yaml: str | None = None,
    num_bytes: Mapping[str, int] | None = None,
) -> str:
    """A README.md dataset card whose YAML header `datasets` and the Hub understand.

    ``num_bytes``: bytes per split, for writers that stream the weights and pass `tables` without them."""
    if not tables:
        raise InvalidInputError("a dataset card needs at least one split with rows")
    schema = next(t.schema for t in tables.values())
    splits = [s for s in SPLITS if s in tables and tables[s].num_rows > 0]
    n_rows = sum(tables[s].num_rows for s in splits)
    size = "n<1K" if n_rows < 1000 else "1K<n<10K" if n_rows < 10_000 else "10K<n<100K"
    header = {
        "license": "mit",
        "pretty_name": title,
        "tags": ["model-zoo", "weight-space-learning", "zooprobe"],
        "size_categories": [size],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits],
            }
        ],
        "dataset_info": {
            "features": [{"name": f.name, "dtype": hf_dtype(f.type)} for f in schema],
            "splits": [
                {
                    "name": s,
                    "num_bytes": int((num_bytes or {}).get(s, tables[s].nbytes)),
                    "num_examples": tables[s].num_rows,
                }
                for s in splits
            ],
        },
    }
    extra_descriptions = extra_descriptions or {}
    lines = [
        f"# {title}",
        "",
        description.strip(),
        "",
        "## Loading",
        "",
        "```python",
        "import zooprobe",
        'zoo = zooprobe.load_zoo("PATH_OR_REPO_ID")   # local folder or Hub repo id',
        'train = zoo.split("train")',
        "print(train.metadata().head())",
        "state_dict = train.state_dict(0)         # decoded lazily from the safetensors bytes",
        "```",
        "",
        "The folder is a plain Hugging Face dataset: `datasets.load_dataset(PATH_OR_REPO_ID)` gives the",
        "same rows (the `weights` column holds safetensors bytes; `safetensors.torch.load(row['weights'])`",
        "decodes it).",
        "",
        "## Splits",
        "",
        "Splits are by training run (`model_id`): all checkpoints of a run are in the same split.",
        "",
        "| split | rows | runs |",
        "|---|---|---|",
    ]
    for s in splits:
        runs = len(set(tables[s].column("model_id").to_pylist()))
        lines.append(f"| {s} | {tables[s].num_rows} | {runs} |")
    lines += ["", "## Fields", "", "| field | type | description |", "|---|---|---|"]
    for f in schema:
        desc = (
            FIELD_BY_NAME[f.name].description
            if f.name in FIELD_BY_NAME
            else extra_descriptions.get(f.name, "")
        )
        lines.append(f"| `{f.name}` | {hf_dtype(f.type)} | {desc or 'Imported field.'} |")
    if config_yaml:
        lines += ["", "## Generator configuration", "", "```yaml", config_yaml.rstrip(), "```"]
    lines += ["", "## License", "", "MIT.", ""]
    return render_card(header, lines)


# ---------------------------------------------------------------------------------------------- loading
class RowGroupCache:
    """The weights payloads of recently read row groups, least recently used dropped first: at most
    ``max_groups`` groups and ``max_bytes`` bytes, except that the group read last is always kept (a single
    group larger than ``max_bytes`` is the floor). One is shared by a `Zoo` and all its views; set its limits
    (``zoo.cache.max_bytes = ...``) to trade memory for re-reads."""

    def __init__(self, max_groups: int = GROUP_CACHE_GROUPS, max_bytes: int = GROUP_CACHE_BYTES) -> None:
        self.max_groups = max_groups
        self.max_bytes = max_bytes
        self.nbytes = 0
        """Bytes of the payloads held now."""
        self._groups: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._groups)

    def get(self, key: tuple[int, int]) -> list[bytes] | None:
        payloads = self._groups.get(key)
        if payloads is not None:
            self._groups.move_to_end(key)
        return payloads

    def put(self, key: tuple[int, int], payloads: list[bytes]) -> None:
        old = self._groups.pop(key, None)
        if old is not None:
            self.nbytes -= sum(len(b) for b in old)
        self._groups[key] = payloads
        self.nbytes += sum(len(b) for b in payloads)
        while len(self._groups) > 1 and (
            len(self._groups) > max(1, self.max_groups) or self.nbytes > self.max_bytes
        ):
            _, dropped = self._groups.popitem(last=False)
            self.nbytes -= sum(len(b) for b in dropped)

    def clear(self) -> None:
        self._groups.clear()
        self.nbytes = 0


class Zoo:
    """A zoo (or a selection of one): metadata in memory, weights decoded lazily on access.

    Rows are checkpoints. ``len(zoo)`` counts rows; `select`, `split` and `filter` return new `Zoo`
    views that share the underlying memory-mapped files.
    """

    def __init__(
        self,
        root: Path,
        files: list[Path],
        meta: pd.DataFrame,
        manifest: dict[str, Any],
        source: str | None = None,
    ) -> None:
        self.root = root
        self.files = files
        self._meta = meta.reset_index(drop=True)
        self.manifest = manifest
        self.source = source if source is not None else str(root)
        """What the user named to get this zoo (a folder, a Hub repo id, ``default``); recorded by
        pretraining and head training so a run says which zoo it used."""
        self._handles: dict[int, pq.ParquetFile] = {}
        self._group_starts: dict[int, np.ndarray] = {}
        self._hashes: dict[tuple[int, int], str] = {}
        self._where: tuple[np.ndarray, np.ndarray] | None = None
        self.cache = RowGroupCache()
        """The row groups of weights read last (`RowGroupCache`; shared with every view)."""

    # ---------------------------------------------------------------- construction
    @classmethod
    def open(cls, root: str | Path, source: str | None = None) -> Zoo:
        """Open the zoo folder `root` (`zooprobe.load_zoo` also takes Hub repo ids and built-in names)."""
        root = Path(root)
        if (root / WRITING).exists():
            raise ZooFormatError(
                f"{root}: a write into this folder was interrupted; run the command that wrote it again"
            )
        manifest_path = root / MANIFEST
        manifest: dict[str, Any] = {}
        if manifest_path.exists():
            manifest = read_json(manifest_path, "zoo manifest", ZooFormatError)  # an object, or refused
            version = manifest.get("format_version")
            if version != FORMAT_VERSION:
                raise ZooFormatError(
                    f"{manifest_path}: zoo format version {version!r} is not supported "
                    f"(this zooprobe reads version {FORMAT_VERSION}); upgrade zooprobe or rebuild the zoo"
                )
        files = sorted((root / "data").glob("*.parquet")) if (root / "data").is_dir() else []
        if not files:
            hint = (
                " (an unfinished build? run `zooprobe zoo build` again to resume)"
                if (root / ".parts").exists()
                else ""
            )
            raise ZooFormatError(f"{root}: no data/*.parquet files, so this folder is not a zoo{hint}")
        splits_of = _check_data_files(root, files, manifest)
        frames = []
        for fi, path in enumerate(files):
            split = splits_of[path]
            try:
                pf = pq.ParquetFile(path, memory_map=True)
                names = pf.schema_arrow.names
                _check_schema(path, pf.schema_arrow)
                df = pf.read(columns=[n for n in names if n != WEIGHTS]).to_pandas()
            except (pa.ArrowInvalid, OSError) as e:
                raise ZooFormatError(f"{path}: unreadable Parquet file ({e})") from e
            df.insert(0, "split", split)
            df["_file"] = fi
            df["_row"] = np.arange(len(df))
            frames.append(df)
        meta = pd.concat(frames, ignore_index=True)
        _check_row_counts(root, meta, manifest)
        order = {s: i for i, s in enumerate(SPLITS)}
        meta = meta.sort_values(
            ["split", "_file", "_row"], key=lambda c: c.map(order) if c.name == "split" else c
        )
        return cls(root, files, meta, manifest, source)

    def _view(self, meta: pd.DataFrame) -> Zoo:
        z = Zoo(self.root, self.files, meta, self.manifest, self.source)
        z._handles = self._handles
        z._group_starts = self._group_starts
        z._hashes = self._hashes
        z.cache = self.cache
        return z

    # ---------------------------------------------------------------- selection
    def __len__(self) -> int:
        return len(self._meta)

    def __repr__(self) -> str:
        counts = self._meta["split"].value_counts().to_dict()
        return f"Zoo({str(self.root)!r}, rows={len(self)}, splits={counts})"

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if (self._meta["split"] == s).any()]

    @property
    def columns(self) -> list[str]:
        return [c for c in self._meta.columns if not c.startswith("_")]

    def metadata(self) -> pd.DataFrame:
        """Metadata of every row (no weights) as a DataFrame; the index is the row position."""
        return self._meta.drop(columns=["_file", "_row"])

    def split(self, name: str) -> Zoo:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        return self._view(self._meta[self._meta["split"] == name])

    def select(self, rows: Sequence[int] | np.ndarray | pd.Series) -> Zoo:
        """Rows by position, or by a boolean mask over `metadata()`."""
        if isinstance(rows, pd.Series) and rows.dtype == bool:
            return self._view(self._meta[rows.to_numpy()])
        arr = np.asarray(rows)
        if arr.dtype == bool:
            return self._view(self._meta[arr])
        return self._view(self._meta.iloc[arr])

    def filter(self, predicate: Callable[[pd.DataFrame], Any] | None = None, **equals: Any) -> Zoo:
        """Rows matching ``column=value`` (or ``column=[values]``) and an optional DataFrame predicate.

        Example: ``zoo.filter(dataset="digits", has_conv_layers=True)``.
        """
        meta = self._meta
        mask = np.ones(len(meta), dtype=bool)
        for col, value in equals.items():
            if col not in meta.columns:
                raise KeyError(f"unknown field {col!r}; fields are {', '.join(self.columns)}")
            values = value if isinstance(value, list | tuple | set) else [value]
            mask &= meta[col].isin(list(values)).to_numpy()
        if predicate is not None:
            mask &= np.asarray(predicate(meta), dtype=bool)
        return self._view(meta[mask])

    def final(self) -> Zoo:
        """Only the last checkpoint of every run (the trained models)."""
        if "is_final" not in self._meta.columns:
            return self
        return self._view(self._meta[self._meta["is_final"].fillna(True).astype(bool)])

    # ---------------------------------------------------------------- weights
    def _handle(self, fi: int) -> pq.ParquetFile:
        """The open data file `fi`. Not memory-mapped: a mapping would keep every page read so far resident
        (counted in the process's memory) until the file is closed."""
        pf = self._handles.get(fi)
        if pf is None:
            pf = self._handles[fi] = pq.ParquetFile(self.files[fi], memory_map=False)
        return pf

    def _starts(self, fi: int) -> np.ndarray:
        """First row of every row group of data file `fi`, and the file's row count last."""
        starts = self._group_starts.get(fi)
        if starts is None:
            md = self._handle(fi).metadata
            sizes = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
            starts = self._group_starts[fi] = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        return starts

    def _file_row(self, i: int) -> tuple[int, int]:
        """(data file, row in the file) of row ``i``, from numpy copies of those columns (a pandas row
        lookup per model cost more than decoding its weights)."""
        if self._where is None:
            self._where = (
                self._meta["_file"].to_numpy(dtype=np.int64),
                self._meta["_row"].to_numpy(dtype=np.int64),
            )
        return int(self._where[0][i]), int(self._where[1][i])

    def _locate(self, i: int) -> tuple[int, int, int]:
        """(data file, row group, row within the group) of row ``i``."""
        fi, r = self._file_row(i)
        starts = self._starts(fi)
        g = int(np.searchsorted(starts, r, side="right")) - 1
        return fi, g, r - int(starts[g])

    def _payload(self, i: int) -> bytes:
        fi, g, j = self._locate(i)
        key = (fi, g)
        payloads = self.cache.get(key)
        if payloads is None:
            payloads = self._handle(fi).read_row_group(g, columns=[WEIGHTS]).column(0).to_pylist()
            self.cache.put(key, payloads)
        return payloads[j]

    def row_groups(self) -> np.ndarray:
        """The row group (a number unique within the zoo) that holds each row of this view: rows of one group
        are read together, so reading a large zoo group by group reads every group once."""
        if not len(self):
            return np.zeros(0, dtype=np.int64)
        files = self._meta["_file"].to_numpy(dtype=np.int64)
        rows = self._meta["_row"].to_numpy(dtype=np.int64)
        groups = np.empty(len(self), dtype=np.int64)
        offset = 0
        for fi in range(len(self.files)):
            starts = self._starts(fi)
            mine = files == fi
            if mine.any():
                groups[mine] = offset + np.searchsorted(starts, rows[mine], side="right") - 1
            offset += len(starts) - 1
        return groups

    def weight_bytes(self) -> int:
        """The stored (uncompressed) size of this view's weights in bytes, from the Parquet metadata (each row
        counted as its row group's mean; nothing is read). Decoded state dicts take about as much."""
        total = 0.0
        for fi in sorted({int(f) for f in self._meta["_file"].unique()}):
            md = self._handle(fi).metadata
            if not md.num_row_groups:
                continue
            first = md.row_group(0)
            col = next(c for c in range(first.num_columns) if first.column(c).path_in_schema == WEIGHTS)
            starts = self._starts(fi)
            rows = self._meta.loc[self._meta["_file"] == fi, "_row"].to_numpy(dtype=np.int64)
            counts = np.bincount(np.searchsorted(starts, rows, side="right") - 1, minlength=len(starts) - 1)
            for g, n in enumerate(counts):
                if n:
                    group = md.row_group(g)
                    total += n * group.column(col).total_uncompressed_size / max(group.num_rows, 1)
        return int(total)

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """The state dict of row ``i`` (position in this view)."""
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for a zoo of {len(self)} rows")
        return decode_weights(self._payload(i), where=f"{self.files[self._file_row(i)[0]]} row {i}")

    def content_hash(self, i: int) -> str:
        """sha256 (hex, 16 chars) of row ``i``'s stored weights: identifies a checkpoint across zoos."""
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for a zoo of {len(self)} rows")
        key = self._file_row(i)
        h = self._hashes.get(key)
        if h is None:  # kept (16 characters a row): split-leak, overlap and cache checks each hash every row
            h = self._hashes[key] = payload_hash(self._payload(i))
        return h

    def fingerprint(self) -> str:
        """sha256 of the zoo's manifest and its data files' names and sizes (identifies the whole zoo, not
        this selection: views of one zoo share it)."""
        files = [[Path(f).name, Path(f).stat().st_size] for f in self.files]
        payload = json.dumps({"manifest": self.manifest, "files": files}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a dict of metadata plus ``state_dict``."""
        meta = {k: v for k, v in self._meta.iloc[i].items() if not str(k).startswith("_")}
        meta["state_dict"] = self.state_dict(i)
        return meta

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def state_dicts(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(len(self)):
            yield self.state_dict(i)

    def model(self, i: int) -> torch.nn.Module:
        """Row ``i`` as a runnable `SubjectModel` (zoos generated by zooprobe), or `cnnzoo.SmallCNN` (imported
        Small CNN Zoo), loaded strictly."""

        row = self._meta.iloc[i]
        if self.manifest.get("architecture") == cnnzoo.ARCHITECTURE:
            return cnnzoo.model_from_state_dict(self.state_dict(i), row.to_dict(), where=f"row {i}")
        missing = [
            c
            for c in ("dataset", "family", "depth", "width", "activation")
            if c not in row or pd.isna(row[c])
        ]
        if missing:
            raise ZooFormatError(
                f"row {i} lacks {missing}: only zoos generated by zooprobe can be rebuilt as modules"
            )
        task = load_task(str(row["dataset"]))
        pool_every = int((self.manifest.get("generator_config") or {}).get("pool_every") or 0)
        model = model_from_metadata(row.to_dict(), task.input_shape, task.n_classes, pool_every)
        model.load_state_dict(self.state_dict(i), strict=True)
        return model.eval()


# ---------------------------------------------------------------------------------------------- leaks
def payload_hash(data: bytes) -> str:
    """The content hash of a stored weights payload, as `Zoo.content_hash` gives it for a row."""
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class SplitLeak:
    """Checkpoints with identical stored weights (one content hash) in more than one split."""

    hash: str
    model_ids: tuple[str, ...]
    splits: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"hash": self.hash, "model_ids": list(self.model_ids), "splits": list(self.splits)}


def find_split_leaks(
    hashes: Sequence[str], model_ids: Sequence[str], splits: Sequence[str]
) -> list[SplitLeak]:
    """Content hashes that occur in more than one split (one entry per hash, in order of first occurrence).

    A copy of a training model in validation or test is scored on what the head was trained on, so its
    metrics are inflated; copies within one split are not a leak.
    """
    rows: dict[str, list[tuple[str, str]]] = {}
    for h, mid, split in zip(hashes, model_ids, splits, strict=True):
        rows.setdefault(h, []).append((str(mid), str(split)))
    leaks = []
    for h, members in rows.items():
        in_splits = {split for _, split in members}
        if len(in_splits) > 1:
            ids = tuple(dict.fromkeys(mid for mid, _ in members))
            leaks.append(SplitLeak(h, ids, tuple(s for s in SPLITS if s in in_splits)))
    return leaks


def split_leaks(zoo: Zoo) -> list[SplitLeak]:
    """`find_split_leaks` over every row of `zoo` (a view: e.g. ``zoo.final()``). Reads every payload once."""
    meta = zoo.metadata()
    hashes = [zoo.content_hash(i) for i in range(len(zoo))]
    return find_split_leaks(hashes, meta["model_id"].astype(str).tolist(), meta["split"].tolist())


def describe_split_leaks(leaks: Sequence[SplitLeak], limit: int = 3) -> str:
    """A few leaks for a message: ``'m3' (train) = 'm9' (test); ...``."""
    shown = []
    for leak in leaks[:limit]:
        ids = " = ".join(repr(mid) for mid in leak.model_ids[:4])
        shown.append(f"{ids} in {'/'.join(leak.splits)}")
    more = f"; and {len(leaks) - limit} more" if len(leaks) > limit else ""
    return "; ".join(shown) + more


# ---------------------------------------------------------------------------------------------- checks
DATA_FILE = re.compile(
    r"(?P<split>train|validation|test)-(?P<index>\d{5})-of-(?P<total>\d{5})(-[0-9a-f]{8,64})?"
)
"""Names of a zoo's data files (``data/train-00000-of-00001.parquet``; older `datasets` pushes add a hex
fingerprint after the count)."""


def _check_data_files(root: Path, files: list[Path], manifest: dict[str, Any]) -> dict[Path, str]:
    """The split of every data file, after checking that the files are exactly complete sets.

    Every ``data/*.parquet`` file is read as part of the zoo, so a stray copy (``train-copy.parquet``), a
    leftover of an older write (``train-00001-of-00002.parquet`` next to ``...-of-00001``) or a missing part
    would silently change the zoo: each is a `ZooFormatError` naming the file.
    """
    data = root / "data"
    recorded = _recorded_counts(manifest)
    note = (
        f" ({MANIFEST} records " + ", ".join(f"{s} {recorded.get(s, 0)}" for s in SPLITS) + " rows)"
        if recorded
        else ""
    )
    found: dict[str, dict[int, list[Path]]] = {}
    totals: dict[str, set[int]] = {}
    splits_of: dict[Path, str] = {}
    for path in files:
        match = DATA_FILE.fullmatch(path.name.removesuffix(".parquet"))
        if match is None:
            raise ZooFormatError(
                f"{root}: stray file data/{path.name}: a zoo's data files are named "
                "SPLIT-NNNNN-of-NNNNN.parquet (SPLIT: train, validation or test, e.g. "
                f"data/train-00000-of-00001.parquet); move it out of {data}, it would be read as more "
                f"models{note}"
            )
        split, index, total = match["split"], int(match["index"]), int(match["total"])
        found.setdefault(split, {}).setdefault(index, []).append(path)
        totals.setdefault(split, set()).add(total)
        splits_of[path] = split
    for split, by_index in found.items():
        if len(totals[split]) > 1:
            shown = ", ".join(f"of-{t:05d}" for t in sorted(totals[split]))
            raise ZooFormatError(
                f"{root}: data/ holds {split} files of different sets ({shown}): one set is left over from "
                "an older write; remove it, or write the zoo again"
            )
        total = totals[split].pop()
        twice = [paths for paths in by_index.values() if len(paths) > 1]
        if twice:
            raise ZooFormatError(
                f"{root}: data/{twice[0][0].name} and data/{twice[0][1].name} are the same part of the "
                f"{split} split; remove the stray one"
            )
        outside = sorted(i for i in by_index if i >= total)
        missing = [i for i in range(total) if i not in by_index]
        if outside or missing:
            problem = (
                f"data/{by_index[outside[0]][0].name} is not part of a set of {total}"
                if outside
                else f"data/{split}-{missing[0]:05d}-of-{total:05d}.parquet is missing"
            )
            raise ZooFormatError(
                f"{root}: {problem} ({len(by_index)} {split} file(s) found); restore the missing part or "
                "write the zoo again"
            )
    return splits_of


def _recorded_counts(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Rows per split as the manifest recorded them: ``counts`` (generated zoos) or ``splits`` (imported)."""
    for key in ("counts", "splits"):
        value = manifest.get(key)
        if isinstance(value, dict):
            return value
    return None


def _check_row_counts(root: Path, meta: pd.DataFrame, manifest: dict[str, Any]) -> None:
    """Rows per split must be what the manifest recorded when the zoo was written (generated zoos:
    ``counts``, imported zoos: ``splits``). A zoo without a manifest (a plain `datasets` folder) is not
    checked."""
    recorded = _recorded_counts(manifest)
    if recorded is None:
        return
    actual = meta["split"].value_counts().to_dict()
    for split in SPLITS:
        expected = recorded.get(split, 0)
        if not isinstance(expected, int) or isinstance(expected, bool):
            raise ZooFormatError(
                f"{root / MANIFEST}: row count of split {split!r} is {expected!r}, not a number"
            )
        have = int(actual.get(split, 0))
        if have != expected:
            names = sorted({p.name for p in root.glob(f"data/{split}-*.parquet")})
            raise ZooFormatError(
                f"{root}: split {split!r} has {have} row(s) in data/ ({', '.join(names) or 'no files'}) but "
                f"{MANIFEST} records {expected}: a data "
                "file was added, removed or replaced after the zoo was written; restore the original files "
                "or write the zoo again"
            )


def _check_schema(path: Path, schema: pa.Schema) -> None:
    names = schema.names
    for f in FIELDS:
        if f.required and f.name not in names:
            raise ZooFormatError(f"{path}: required field {f.name!r} is missing")
        if f.name in names:
            actual = schema.field(f.name).type
            if not _compatible(actual, f.type):
                raise ZooFormatError(f"{path}: field {f.name!r} has type {actual}, expected {f.type}")


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual == expected or pa.types.is_null(actual):
        return True
    for check in (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean):
        if check(expected):
            return check(actual)
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if pa.types.is_binary(expected):
        return pa.types.is_binary(actual) or pa.types.is_large_binary(actual)
    return False
