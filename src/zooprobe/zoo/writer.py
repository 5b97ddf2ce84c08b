"""Writing a zoo folder: rows to Arrow tables, `SplitWriter` (bounded row groups, one split's files),
`write_zoo`, and the protocol every writer follows (`begin_zoo_write` ... `finish_zoo_write`, manifest last).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zooprobe.core.environment import library_versions
from zooprobe.core.files import atomic_write_json, atomic_write_text
from zooprobe.errors import InvalidInputError
from zooprobe.zoo.schema import (
    FORMAT_VERSION,
    SPLITS,
    WEIGHTS,
    arrow_schema,
)
from zooprobe.zoo.storage import MANIFEST, ROW_GROUP, ROW_GROUP_BYTES, ROWS_PER_FILE, STAGING, WRITING

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
    interrupted = (root / WRITING).exists()  # an earlier write was cut short: marked until one finishes
    staging = begin_zoo_write(root)
    try:
        for split in SPLITS:
            table = tables.get(split)
            if table is None or table.num_rows == 0:
                continue
            writer = SplitWriter(staging, split, table.num_rows, table.schema, row_group_size)
            writer.write(table)
            writer.close()
    except Exception:  # e.g. a full disk: nothing was swapped in yet, so a zoo already there still loads
        shutil.rmtree(staging, ignore_errors=True)
        if not interrupted:
            (root / WRITING).unlink(missing_ok=True)
        raise
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
