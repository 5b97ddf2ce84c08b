"""Metadata tables: CSV and JSONL rows for the checkpoint-folder importer (each row with the line it came
from), and CSV/JSONL/Parquet tables as DataFrames for the flat-vector importers.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from zooprobe.core.files import parse_json
from zooprobe.errors import InvalidInputError


# ------------------------------------------------------------------------------------------- metadata files
@dataclass
class _Row:
    number: int
    """1-based data row, as a user counts rows (blank lines and the CSV header not counted)."""
    line: int
    """1-based line in the file where the row starts."""
    values: dict[str, Any]
    problem: str | None = None


def _read_metadata(path: Path) -> tuple[list[str], list[_Row], bool]:
    """Columns, rows, and whether the values are typed (JSONL) or text to be parsed (CSV)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            columns, rows = _read_csv(path)
            return columns, rows, False
        if suffix in (".jsonl", ".ndjson"):
            columns, rows = _read_jsonl(path)
            return columns, rows, True
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{path}: not UTF-8 text ({e})") from e
    except OSError as e:
        raise InvalidInputError(f"{path}: cannot read the metadata file ({e.strerror})") from e
    raise InvalidInputError(
        f"{path}: metadata must be a .csv or .jsonl file (got {suffix or 'no extension'!r})"
    )


def _read_csv(path: Path) -> tuple[list[str], list[_Row]]:
    rows: list[_Row] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise InvalidInputError(f"{path}: empty metadata file (no header and no rows)")
            columns = [h.strip() for h in header]
            _check_header(path, columns)
            last_line = reader.line_num
            for record in reader:
                start, last_line = last_line + 1, reader.line_num
                if not record:  # a blank line
                    continue
                number = len(rows) + 1
                if len(record) != len(columns):
                    problem = f"has {len(record)} cells but the header has {len(columns)} columns"
                    rows.append(_Row(number, start, {}, problem))
                    continue
                rows.append(_Row(number, start, dict(zip(columns, record, strict=True))))
        except csv.Error as e:
            raise InvalidInputError(f"{path} line {reader.line_num}: malformed CSV ({e})") from e
    return columns, rows


def _read_jsonl(path: Path) -> tuple[list[str], list[_Row]]:
    """Columns and rows of a JSONL file (``.gz``: gzip-compressed), values as JSON typed them: ``true`` stays
    a bool (never the number 1), so a field that needs a number refuses it (`_to_float`)."""
    rows: list[_Row] = []
    columns: dict[str, None] = {}
    if path.name.lower().endswith(".gz"):
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8-sig")
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise InvalidInputError(f"{path}: not a readable gzip file ({e})") from e
    else:
        text = path.read_text(encoding="utf-8-sig")
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        number = len(rows) + 1
        try:
            obj = parse_json(line)
        except json.JSONDecodeError as e:
            rows.append(_Row(number, line_no, {}, f"not valid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            rows.append(_Row(number, line_no, {}, f"is a JSON {type(obj).__name__}, not an object"))
            continue
        columns.update(dict.fromkeys(obj))
        rows.append(_Row(number, line_no, obj))
    _check_header(path, list(columns))
    return list(columns), rows


def _check_header(path: Path, columns: list[str]) -> None:
    empty = [i + 1 for i, c in enumerate(columns) if not c]
    if empty:
        raise InvalidInputError(f"{path}: column {empty[0]} has no name; name it or remove it")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise InvalidInputError(f"{path}: duplicate column name(s) {', '.join(map(repr, duplicated))}")


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
