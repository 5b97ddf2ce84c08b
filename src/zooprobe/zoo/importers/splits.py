"""Flat-vector zoos: runs and checkpoints of the metadata rows, and their splits (a split column, a hash of
the run id, or an NFN / Neural Graphs split file with its protocol).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zooprobe.errors import InvalidInputError
from zooprobe.zoo.importers.common import (
    _Bad,
    _convert_field,
    _hash_split,
    _is_missing,
    _Problems,
    _split_label,
    _to_text,
)
from zooprobe.zoo.importers.tables import _values
from zooprobe.zoo.schema import SPLITS

NFN_TEST_FRACTION = 0.5
NFN_TRAIN_OF_TRAINVAL = 0.8


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
class _Runs:
    """Run id and checkpoint of every metadata row; ``valid`` rows have both (and are no duplicate);
    ``rows``: run id -> its valid rows, runs in order of first appearance."""

    ids: list[str]
    checkpoints: np.ndarray
    valid: np.ndarray
    rows: dict[str, list[int]]


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
    if split_order is not None:
        return _splits_from_file(runs, split_order, split_file, ck_col, metadata)
    if split_col is not None:
        run_split = _splits_from_column(runs, df, split_col, where, problems)
        return run_split, [], f"Splits come from column `{split_col}` of the metadata.", f"column {split_col}"
    run_split = {run: _hash_split(run, seed, fractions) for run in runs.rows}
    note = f"Splits were assigned per run by hashing the run id (seed {seed}, fractions {list(fractions)})."
    return run_split, [], note, "hash"


def _splits_from_file(
    runs: _Runs, split_order: np.ndarray, split_file: Path | None, ck_col: str | None, metadata: Path
) -> tuple[dict[str, str], list[tuple[str, str]], str, str]:
    """Splits by an NFN split file: each run follows its row at the last checkpoint (runs without one are
    left out)."""
    run_split: dict[str, str] = {}
    left_out: list[tuple[str, str]] = []
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


def _splits_from_column(
    runs: _Runs, df: pd.DataFrame, split_col: str, where: Any, problems: _Problems
) -> dict[str, str]:
    """Splits by a metadata column: every checkpoint of a run must name the same split."""
    run_split: dict[str, str] = {}
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
    return run_split


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
