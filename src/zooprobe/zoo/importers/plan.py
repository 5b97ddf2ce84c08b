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
from zooprobe.zoo.importers.splits import _assign_splits, _find_runs, _Runs, _select
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


@dataclass
class _PlanColumns:
    """What each metadata column is for: run id, checkpoint and split (None: none), the known fields and
    extra columns (metadata column -> zoo column), and the columns ignored."""

    id: str | None
    checkpoint: str | None
    split: str | None
    known: dict[str, str]
    extras: dict[str, str]
    ignored: list[str]


def _plan_columns(
    names: list[str],
    metadata: Path,
    *,
    options: tuple[str | None, str | None, str],
    columns: Mapping[str, str],
    step: str | int,
    split_file_given: bool,
    runs_by_row: bool,
) -> _PlanColumns:
    """The metadata's columns sorted by what they are for (``options``: the id, checkpoint and split column
    options), checked against the options."""
    id_column, checkpoint_column, split_column = options
    ignored = [c for c in names if _INDEX_COLUMN.fullmatch(c)]
    id_col = id_column if id_column is not None else ("model_id" if "model_id" in names else None)
    if runs_by_row:
        id_col = None  # no run ids: not even a model_id column stands in for the missing one
    ck_col = checkpoint_column
    if ck_col is None and "checkpoint_epoch" in names:
        ck_col = "checkpoint_epoch"
    split_col = split_column if split_column in names and not split_file_given else None
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
    if split_file_given and split_column in names:
        ignored.append(split_column)  # the split file decides
    skip = {c for c in (id_col, ck_col, split_col) if c is not None} | set(ignored)
    targets = _column_targets(names, columns, skip, ck_col is not None, metadata)
    known = {c: t for c, t in targets.items() if t in FIELD_BY_NAME}
    extras = {c: t for c, t in targets.items() if t not in FIELD_BY_NAME}
    return _PlanColumns(id_col, ck_col, split_col, known, extras, ignored)


def _align(runs: _Runs, cols: _PlanColumns, metadata: Path, step: str | int, runs_by_row: bool) -> str:
    """How metadata rows were matched to weights rows and grouped into runs; with ``runs_by_row``, keep
    only the rows at the selected checkpoint (each one run)."""
    if runs_by_row:
        target = _last_value(runs) if step == "final" else step
        runs.rows = {run: rows for run, rows in runs.rows.items() if runs.checkpoints[rows[0]] == target}
        return (
            f"by row order ({metadata.name} row i describes weights row i, as the NFN loader reads this "
            f"format); no run id column, so each row at {cols.checkpoint or 'checkpoint'} {target} is one run"
        )
    if cols.id is not None:
        return f"by row order ({metadata.name} row i describes weights row i); runs by column {cols.id!r}"
    return f"by row order ({metadata.name} row i describes weights row i); each row is its own run"


def _last_value(runs: _Runs) -> int:
    """The zoo's last checkpoint value (over the valid rows)."""
    return int(runs.checkpoints[runs.valid].max()) if runs.valid.any() else 0


def _metadata_arrays(
    df: pd.DataFrame,
    selected: np.ndarray,
    cols: _PlanColumns,
    where: Any,
    accuracy_percent: bool,
    problems: _Problems,
) -> tuple[dict[str, pa.Array], dict[str, pa.DataType], np.ndarray]:
    """The selected rows' metadata, a column at a time into Arrow; a row with a bad value is left out.
    Returns the arrays (zoo column -> values), the extra columns' types and the rows kept."""
    keep = np.ones(len(selected), dtype=bool)
    arrays: dict[str, pa.Array] = {}
    for c, t in cols.known.items():
        values = _convert_column(
            c, t, _values(df[c].iloc[selected]), selected, keep, where, accuracy_percent, problems
        )
        arrays[t] = pa.array(values, type=FIELD_BY_NAME[t].type)
    mask = pa.array(keep)
    arrays = {t: a.filter(mask) for t, a in arrays.items()}
    kept = selected[keep]
    extra_types: dict[str, pa.DataType] = {}
    for c, t in cols.extras.items():
        extra_types[t], values = _infer_column(_values(df[c].iloc[kept]), typed=True)
        arrays[t] = pa.array(values, type=extra_types[t])
    extra_types[SOURCE_ROW] = pa.int64()
    arrays[SOURCE_ROW] = pa.array(kept, type=pa.int64())
    return arrays, extra_types, kept


def _run_arrays(
    arrays: dict[str, pa.Array],
    runs: _Runs,
    kept: np.ndarray,
    cols: _PlanColumns,
    layout: list[LayoutEntry],
    runs_by_row: bool,
) -> list[str]:
    """Add the run and checkpoint columns and the derived ones to ``arrays``; the run id of each kept row."""
    ids = [runs.ids[r] for r in kept]
    arrays["model_id"] = pa.array(ids, type=pa.string())
    checkpoints = runs.checkpoints[kept]
    if cols.checkpoint is not None:
        arrays["checkpoint_epoch"] = pa.array(checkpoints, type=pa.int32())
    final_of = {run: max(int(runs.checkpoints[r]) for r in rows) for run, rows in runs.rows.items()}
    if runs_by_row:  # a row's run is unknown: its checkpoint is final when it is the zoo's last one
        final_of = dict.fromkeys(final_of, _last_value(runs))
    is_final = checkpoints == np.asarray([final_of[i] for i in ids], dtype=np.int64)
    _derived(arrays, layout, is_final if cols.checkpoint is not None else np.ones(len(kept), dtype=bool))
    return ids


def _plan_table(
    arrays: dict[str, pa.Array],
    extra_types: dict[str, pa.DataType],
    ids: list[str],
    run_split: Mapping[str, str],
) -> pa.Table:
    """The plan's table: the zoo's columns but weights (absent ones null), then ``split``."""
    fields = [f for f in arrow_schema(extra_types) if f.name != WEIGHTS]
    columns = [arrays[f.name] if f.name in arrays else pa.nulls(len(ids), f.type) for f in fields]
    columns.append(pa.array([run_split[i] for i in ids], type=pa.string()))
    return pa.Table.from_arrays(columns, schema=pa.schema([*fields, pa.field("split", pa.string())]))


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
    cols = _plan_columns(
        list(df.columns), metadata, options=(id_column, checkpoint_column, split_column), columns=columns,
        step=step, split_file_given=split_order is not None, runs_by_row=runs_by_row,
    )  # fmt: skip

    def where(i: int) -> str:
        return f"{metadata} row {i + 1} (weights row {i})"

    runs = _find_runs(df, cols.id, cols.checkpoint, where, metadata, problems)
    alignment = _align(runs, cols, metadata, step, runs_by_row)
    run_split, left_out, split_note, split_source = _assign_splits(
        runs, df, split_order=split_order, split_file=split_file, split_col=cols.split,
        ck_col=cols.checkpoint, fractions=fractions, seed=seed, where=where, metadata=metadata,
        problems=problems,
    )  # fmt: skip
    selected = _select(runs, run_split, step, max_runs)
    arrays, extra_types, kept = _metadata_arrays(df, selected, cols, where, accuracy_percent, problems)
    ids = _run_arrays(arrays, runs, kept, cols, layout, runs_by_row)
    descriptions = {t: f"Imported from column `{c}` of `{metadata.name}`." for c, t in cols.extras.items()}
    descriptions[SOURCE_ROW] = "Row of the weights file this checkpoint was read from (0-based)."
    table = _plan_table(arrays, extra_types, ids, run_split)
    return _Plan(
        table=table,
        source_rows=kept,
        run_starts=[p for p in range(len(ids)) if p == 0 or ids[p] != ids[p - 1]],
        extra_types=extra_types,
        descriptions=descriptions,
        skipped=left_out,
        split_note=split_note,
        split_source=split_source,
        ignored_columns=cols.ignored,
        alignment=alignment,
    )
