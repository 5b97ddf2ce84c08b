"""Zoo storage: a folder that is also a Hugging Face dataset repo, and the one loader for it.

Layout::

    README.md                         dataset card (YAML header: configs, features, splits)
    zooprobe_manifest.json            format version, generator config, library versions, counts
    data/train-00000-of-00001.parquet one row per checkpoint, split by model (never by checkpoint)
    data/validation-...parquet
    data/test-...parquet

`Zoo.load` takes a local folder or a Hub repo id (resolved to a local snapshot first), memory-maps the
Parquet files, reads the metadata columns eagerly and decodes weights lazily, a row group at a time.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import InvalidInputError, ZooFormatError
from ..utils import atomic_path, atomic_write_json, atomic_write_text, library_versions
from .schema import FIELD_BY_NAME, FIELDS, FORMAT_VERSION, SPLITS, WEIGHTS, arrow_schema, hf_dtype

MANIFEST = "zooprobe_manifest.json"
WRITING = ".zooprobe-writing"
ROW_GROUP = 64
ROWS_PER_FILE = 4096


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
    return st_save(clean, metadata={"order": json.dumps(list(clean))})


def decode_weights(data: bytes, where: str = "weights") -> dict[str, torch.Tensor]:
    """Inverse of `encode_weights`: the state dict with its original key order."""
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types
        raise InvalidInputError(f"{where}: not a valid safetensors payload ({e})") from e
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    file_order = [k for k in header if k != "__metadata__"]
    try:
        order = json.loads((header.get("__metadata__") or {}).get("order", "null"))
    except json.JSONDecodeError:
        order = None
    if not isinstance(order, list) or sorted(order) != sorted(file_order):
        order = file_order  # not written by zooprobe: keep the file's own order
    return {k: tensors[k] for k in order}


def count_params(state_dict: dict[str, torch.Tensor]) -> int:
    """Trainable-parameter count: floating tensors that are not BatchNorm running statistics."""
    return sum(
        v.numel()
        for k, v in state_dict.items()
        if v.is_floating_point() and not k.endswith(("running_mean", "running_var"))
    )


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


def write_zoo(
    root: Path,
    tables: dict[str, pa.Table],
    manifest: dict[str, Any],
    card: str,
) -> None:
    """Write a zoo folder. New data is written beside the old and swapped in; the manifest comes last.

    While writing, a ``.zooprobe-writing`` marker exists: `Zoo.open` refuses such a folder, so a crash
    never leaves something that loads as a complete zoo.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / WRITING
    marker.touch()
    staging = root / ".data-staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    data = staging
    for split in SPLITS:
        table = tables.get(split)
        if table is None or table.num_rows == 0:
            continue
        n_files = max(1, math.ceil(table.num_rows / ROWS_PER_FILE))
        for i in range(n_files):
            part = table.slice(i * ROWS_PER_FILE, ROWS_PER_FILE)
            with atomic_path(data / f"{split}-{i:05d}-of-{n_files:05d}.parquet") as tmp:
                pq.write_table(part, tmp, row_group_size=ROW_GROUP, compression="zstd")
    (root / MANIFEST).unlink(missing_ok=True)
    if (root / "data").exists():
        shutil.rmtree(root / "data")
    staging.rename(root / "data")
    atomic_write_text(root / "README.md", card)
    atomic_write_json(root / MANIFEST, {"format_version": FORMAT_VERSION, **manifest})
    marker.unlink()


def base_manifest(kind: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "library_versions": library_versions(), **extra}


# ---------------------------------------------------------------------------------------------- card
def dataset_card(
    title: str,
    description: str,
    tables: dict[str, pa.Table],
    extra_descriptions: dict[str, str] | None = None,
    config_yaml: str | None = None,
) -> str:
    """A README.md dataset card whose YAML header `datasets` and the Hub understand."""
    import yaml

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
                {"name": s, "num_bytes": int(tables[s].nbytes), "num_examples": tables[s].num_rows}
                for s in splits
            ],
        },
    }
    extra_descriptions = extra_descriptions or {}
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).rstrip(),
        "---",
        "",
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
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- loading
class Zoo:
    """A zoo (or a selection of one): metadata in memory, weights decoded lazily on access.

    Rows are checkpoints. ``len(zoo)`` counts rows; `select`, `split` and `filter` return new `Zoo`
    views that share the underlying memory-mapped files.
    """

    def __init__(self, root: Path, files: list[Path], meta: pd.DataFrame, manifest: dict[str, Any]) -> None:
        self.root = root
        self.files = files
        self._meta = meta.reset_index(drop=True)
        self.manifest = manifest
        self._handles: dict[int, pq.ParquetFile] = {}
        self._groups: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()

    # ---------------------------------------------------------------- construction
    @classmethod
    def load(cls, source: str | Path, revision: str | None = None) -> Zoo:
        """Open a zoo from a local folder, a Hub dataset repo id, or ``default`` (the built-in zoo)."""
        from ..hub import resolve_source

        root = resolve_source(source, repo_type="dataset", revision=revision, kind="zoo")
        return cls.open(root)

    @classmethod
    def open(cls, root: Path) -> Zoo:
        root = Path(root)
        if (root / WRITING).exists():
            raise ZooFormatError(
                f"{root}: a write into this folder was interrupted; run the command that wrote it again"
            )
        manifest_path = root / MANIFEST
        manifest: dict[str, Any] = {}
        if manifest_path.exists():
            try:
                manifest = json.loads(manifest_path.read_text())
            except json.JSONDecodeError as e:
                raise ZooFormatError(f"{manifest_path}: not valid JSON ({e})") from e
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
        frames = []
        for fi, path in enumerate(files):
            split = path.name.split("-")[0]
            if split not in SPLITS:
                raise ZooFormatError(f"{path}: file name must start with one of {', '.join(SPLITS)}")
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
        order = {s: i for i, s in enumerate(SPLITS)}
        meta = meta.sort_values(
            ["split", "_file", "_row"], key=lambda c: c.map(order) if c.name == "split" else c
        )
        return cls(root, files, meta, manifest)

    def _view(self, meta: pd.DataFrame) -> Zoo:
        z = Zoo(self.root, self.files, meta, self.manifest)
        z._handles = self._handles
        z._groups = self._groups
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
    def _payload(self, i: int) -> bytes:
        row = self._meta.iloc[i]
        fi, r = int(row["_file"]), int(row["_row"])
        pf = self._handles.get(fi)
        if pf is None:
            pf = self._handles[fi] = pq.ParquetFile(self.files[fi], memory_map=True)
        # locate the row group holding row r
        start = 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if r < start + n:
                break
            start += n
        key = (fi, g)
        if key not in self._groups:
            self._groups[key] = pf.read_row_group(g, columns=[WEIGHTS]).column(0).to_pylist()
            while len(self._groups) > 8:
                self._groups.popitem(last=False)
        self._groups.move_to_end(key)
        return self._groups[key][r - start]

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """The state dict of row ``i`` (position in this view)."""
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for a zoo of {len(self)} rows")
        return decode_weights(
            self._payload(i), where=f"{self.files[int(self._meta.iloc[i]['_file'])]} row {i}"
        )

    def content_hash(self, i: int) -> str:
        """sha256 (hex, 16 chars) of row ``i``'s stored weights: identifies a checkpoint across zoos."""
        import hashlib

        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for a zoo of {len(self)} rows")
        return hashlib.sha256(self._payload(i)).hexdigest()[:16]

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
        """Row ``i`` as a runnable `SubjectModel` (zoos generated by zooprobe), loaded strictly."""
        from .data import load_task
        from .models import model_from_metadata

        row = self._meta.iloc[i]
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
        model = model_from_metadata(row.to_dict(), task.input_shape, task.n_classes)
        model.load_state_dict(self.state_dict(i), strict=True)
        return model.eval()


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


def load_zoo(source: str | Path = "default", revision: str | None = None) -> Zoo:
    """Open a zoo: a local folder, a Hub dataset repo id (with optional revision), or ``default``."""
    return Zoo.load(source, revision=revision)
