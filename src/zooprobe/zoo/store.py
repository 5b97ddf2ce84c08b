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
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from zooprobe.core.files import read_json
from zooprobe.errors import ZooFormatError
from zooprobe.zoo import cnnzoo

# The zoo folder's other parts live in their own modules; their names stay importable from here.
from zooprobe.zoo.card import dataset_card
from zooprobe.zoo.checks import _check_data_files, _check_row_counts, _check_schema
from zooprobe.zoo.data import load_task
from zooprobe.zoo.leaks import SplitLeak, describe_split_leaks, find_split_leaks
from zooprobe.zoo.models import model_from_metadata
from zooprobe.zoo.schema import (
    FORMAT_VERSION,
    SPLITS,
    WEIGHTS,
)
from zooprobe.zoo.storage import (
    GROUP_CACHE_BYTES,
    GROUP_CACHE_GROUPS,
    MANIFEST,
    ROW_GROUP,
    ROW_GROUP_BYTES,
    ROWS_PER_FILE,
    STAGING,
    WRITING,
    ZOO_OUTPUT,
    count_params,
    decode_weights,
    encode_weights,
    payload_hash,
)
from zooprobe.zoo.writer import (
    RESERVED,
    SplitWriter,
    base_manifest,
    begin_zoo_write,
    check_row_group_size,
    finish_zoo_write,
    rows_to_table,
    write_zoo,
)

__all__ = [
    "GROUP_CACHE_BYTES",
    "GROUP_CACHE_GROUPS",
    "MANIFEST",
    "RESERVED",
    "ROWS_PER_FILE",
    "ROW_GROUP",
    "ROW_GROUP_BYTES",
    "STAGING",
    "WRITING",
    "ZOO_OUTPUT",
    "RowGroupCache",
    "SplitLeak",
    "SplitWriter",
    "Zoo",
    "base_manifest",
    "begin_zoo_write",
    "check_row_group_size",
    "count_params",
    "dataset_card",
    "decode_weights",
    "describe_split_leaks",
    "encode_weights",
    "find_split_leaks",
    "finish_zoo_write",
    "payload_hash",
    "rows_to_table",
    "split_leaks",
    "write_zoo",
]


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

    def selection_key(self) -> str:
        """sha256 of `fingerprint`, the data files' modification times and the stored rows this view
        selects, in order: two views with the same key read the same weights in the same order."""
        rows = self._meta[["_file", "_row"]].to_numpy(dtype=np.int64)
        times = json.dumps([Path(f).stat().st_mtime_ns for f in self.files])
        return hashlib.sha256((self.fingerprint() + times).encode() + rows.tobytes()).hexdigest()

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


def split_leaks(zoo: Zoo) -> list[SplitLeak]:
    """`find_split_leaks` over every row of `zoo` (a view: e.g. ``zoo.final()``). Reads every payload once."""
    meta = zoo.metadata()
    hashes = [zoo.content_hash(i) for i in range(len(zoo))]
    return find_split_leaks(hashes, meta["model_id"].astype(str).tolist(), meta["split"].tolist())
