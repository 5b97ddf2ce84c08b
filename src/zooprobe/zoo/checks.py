"""Checks of a zoo folder's files before it is read: data file names and counts against the manifest,
schemas against the zoo schema, row counts per split.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from zooprobe.errors import ZooFormatError
from zooprobe.zoo.schema import (
    FIELDS,
    SPLITS,
)
from zooprobe.zoo.storage import MANIFEST

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
