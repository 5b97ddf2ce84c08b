"""Flat-vector zoos: the plan of an import, every checkpoint's metadata in import order as one Arrow table
(columns converted and range-checked, derived columns filled, the split of each run).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from zooprobe.core.state_dicts import is_running_stat
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.zoo.importers.common import (
    _LOWERCASED,
    RESERVED_COLUMNS,
    _Bad,
    _convert_field,
    _infer_column,
    _Problems,
)
from zooprobe.zoo.importers.layout import LayoutEntry
from zooprobe.zoo.importers.splits import _assign_splits, _find_runs, _select
from zooprobe.zoo.importers.tables import _values
from zooprobe.zoo.schema import FIELD_BY_NAME, WEIGHTS, arrow_schema

CHUNK_ROWS = 1024
SOURCE_ROW = "source_row"
"""Extra column: the row of the weights file each checkpoint was read from."""
_INDEX_COLUMN = re.compile(r"Unnamed: \d+")


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
