"""`import_checkpoint_folder`: a folder of checkpoint files plus a CSV or JSONL metadata file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from zooprobe.core.guards import (
    CHECKPOINT_SUFFIXES,
    DEFAULT_MAX_PARAMS,
    check_max_params,
    contained_path,
)
from zooprobe.errors import InvalidInputError
from zooprobe.zoo.importers.common import (
    ImportReport,
    _Bad,
    _check_fractions,
    _convert_field,
    _encode,
    _hash_split,
    _infer_column,
    _is_missing,
    _Problems,
    _read_checkpoint,
    _split_label,
    _to_text,
    _warn,
)
from zooprobe.zoo.importers.output import _check_columns, _check_output, _write_import
from zooprobe.zoo.importers.tables import _read_metadata
from zooprobe.zoo.schema import FIELD_BY_NAME, WEIGHTS
from zooprobe.zoo.store import (
    count_params,
)


# ---------------------------------------------------------------------------------------- checkpoint folder
@dataclass
class _Record:
    """One metadata row on its way into the zoo."""

    where: str
    number: int
    path: Path
    model_id: str
    split: str | None
    known: dict[str, Any]
    extras: dict[str, Any]
    weights: bytes = b""
    num_params: int = 0

    @property
    def epoch(self) -> int | None:
        return self.known.get("checkpoint_epoch")


def _checkpoint_path(folder: Path, name: Any) -> Path:
    """The checkpoint named in a metadata cell; it must be a supported file inside ``folder`` (the
    containment rule is `contained_path`'s)."""
    if _is_missing(name):
        raise _Bad("no checkpoint file named")
    try:
        path = contained_path(
            folder,
            name,
            "checkpoint",
            where="the checkpoint folder",
            fix="checkpoints must stay inside the folder: copy the file in, or import from the folder that "
            "holds it",
        )
    except InvalidInputError as e:
        raise _Bad(str(e)) from None
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise _Bad(f"{path}: unsupported checkpoint type; supported: {', '.join(CHECKPOINT_SUFFIXES)}")
    if not path.is_file():
        raise _Bad(f"{path}: checkpoint file not found")
    return path


def _check_inputs(folder: Path, metadata: Path, output: Path, overwrite: bool) -> None:
    if not folder.is_dir():
        raise InvalidInputError(f"{folder}: checkpoint folder not found (or not a folder)")
    if not metadata.is_file():
        raise InvalidInputError(f"{metadata}: metadata file not found")
    _check_output(output, overwrite)


def _read_rows(metadata: Path) -> tuple[list[str], list[Any], bool]:
    columns, rows, typed = _read_metadata(metadata)
    if not rows:
        raise InvalidInputError(f"{metadata}: no data rows (the metadata file is empty or has only a header)")
    return columns, rows, typed


@dataclass
class _Columns:
    """Which metadata column plays which part."""

    file: str
    id: str | None
    split: str | None
    known: list[str]
    extras: list[str]


def _pick_columns(
    metadata: Path, columns: list[str], file_column: str, id_column: str | None, split_column: str
) -> _Columns:
    """The file, run id and split columns, the known fields and the extra columns (checked)."""
    if file_column not in columns:
        raise InvalidInputError(
            f"{metadata}: no {file_column!r} column naming the checkpoint files "
            f"(columns: {', '.join(columns)}); pass file_column= to name it"
        )
    if id_column is not None and id_column not in columns:
        raise InvalidInputError(
            f"{metadata}: id_column {id_column!r} is not a column (columns: {', '.join(columns)})"
        )
    id_col = id_column if id_column is not None else ("model_id" if "model_id" in columns else None)
    if id_col not in (None, "model_id") and "model_id" in columns:
        raise InvalidInputError(
            f"{metadata}: both a 'model_id' column and id_column {id_col!r}; drop one so the run id is "
            "unambiguous"
        )
    split_col = split_column if split_column in columns else None
    consumed = {c for c in (id_col, split_col) if c is not None}
    _check_columns(metadata, [c for c in columns if c not in consumed])
    known = [c for c in columns if c in FIELD_BY_NAME and c not in consumed and c != "model_id"]
    extras = [c for c in columns if c not in FIELD_BY_NAME and c not in consumed]
    return _Columns(file_column, id_col, split_col, known, extras)


def _read_records(
    rows: list[Any], metadata: Path, folder: Path, cols: _Columns, accuracy_percent: bool, problems: _Problems
) -> list[_Record]:
    """One record per metadata row (bad rows go to ``problems``)."""
    records: list[_Record] = []
    for row in rows:
        where = f"{metadata} row {row.number} (line {row.line})"
        try:
            if row.problem:
                raise _Bad(row.problem)
            values = row.values
            path = _checkpoint_path(folder, values.get(cols.file))
            if cols.id is None:
                model_id = path.stem
            elif _is_missing(values.get(cols.id)):
                raise _Bad(f"no run id in column {cols.id!r}")
            else:
                model_id = _to_text(values[cols.id]).strip()
            records.append(
                _Record(
                    where=where,
                    number=row.number,
                    path=path,
                    model_id=model_id,
                    split=_split_label(values.get(cols.split)) if cols.split else None,
                    known={c: _convert_field(c, values.get(c), accuracy_percent) for c in cols.known},
                    extras={c: values.get(c) for c in cols.extras},
                )
            )
        except _Bad as e:
            problems.add(where, str(e))
    return records


def _group_runs(records: list[_Record], problems: _Problems) -> tuple[list[_Record], dict[str, int | None]]:
    """Runs: one row per (model_id, checkpoint_epoch), one split per model_id. Returns the records kept
    and each run's last epoch (None for a run of one checkpoint)."""
    runs: dict[str, list[_Record]] = {}
    kept: list[_Record] = []
    for rec in records:
        prior = runs.setdefault(rec.model_id, [])
        clash = next((p for p in prior if rec.epoch is None or p.epoch in (None, rec.epoch)), None)
        if clash is not None:
            problems.add(
                rec.where,
                f"model_id {rec.model_id!r} is also in row {clash.number}; rows of one run need distinct "
                "checkpoint_epoch values",
            )
        elif prior and rec.split != prior[0].split:
            problems.add(
                rec.where,
                f"model_id {rec.model_id!r} is in split {rec.split!r} here but {prior[0].split!r} in row "
                f"{prior[0].number}; all checkpoints of a run must be in one split",
            )
        else:
            prior.append(rec)
            kept.append(rec)
    # A run's last epoch is decided before checkpoints are read: if its last checkpoint turns out unreadable
    # (and is skipped), no earlier checkpoint is passed off as the final one.
    final_epoch = {
        mid: (max(r.epoch for r in recs if r.epoch is not None) if len(recs) > 1 else None)
        for mid, recs in runs.items()
    }
    return kept, final_epoch


def _read_weights(kept: list[_Record], max_params: int, problems: _Problems) -> list[_Record]:
    """The records whose checkpoint reads (its weights and parameter count filled in)."""
    valid: list[_Record] = []
    for rec in kept:
        try:
            state_dict = _read_checkpoint(rec.path, max_params)
            rec.weights = _encode(state_dict, rec.path)
            rec.num_params = count_params(state_dict)
        except InvalidInputError as e:
            problems.add(rec.where, str(e))
            continue
        valid.append(rec)
    return valid


def _zoo_rows(
    valid: list[_Record],
    extras: list[str],
    typed: bool,
    final_epoch: dict[str, int | None],
    split: tuple[int, tuple[float, float, float]],
) -> tuple[list[dict[str, Any]], dict[str, pa.DataType]]:
    """The zoo's rows (``split``: seed and fractions of the hash split) and the extra columns' types."""
    seed, fractions = split
    extra_types: dict[str, pa.DataType] = {}
    extra_values: dict[str, list[Any]] = {}
    for c in extras:
        extra_types[c], extra_values[c] = _infer_column([r.extras[c] for r in valid], typed)
    out_rows: list[dict[str, Any]] = []
    for i, rec in enumerate(valid):
        row_out: dict[str, Any] = {"model_id": rec.model_id, **rec.known}
        row_out.update({c: extra_values[c][i] for c in extras})
        if row_out.get("num_params") is None:
            row_out["num_params"] = rec.num_params
        if row_out.get("is_final") is None:
            last = final_epoch[rec.model_id]
            row_out["is_final"] = last is None or rec.epoch == last
        row_out[WEIGHTS] = rec.weights
        row_out["_split"] = rec.split or _hash_split(rec.model_id, seed, fractions)
        out_rows.append(row_out)
    return out_rows, extra_types


def _descriptions(folder: Path, metadata: Path, cols: _Columns) -> dict[str, str]:
    """The dataset card's descriptions of the columns beyond zooprobe's fields."""
    descriptions = {c: f"Imported from column `{c}` of `{metadata.name}`." for c in cols.extras}
    descriptions[cols.file] = f"Checkpoint file the row was imported from (relative to `{folder.name}`)."
    return descriptions


def _about(
    folder: Path, metadata: Path, split_col: str | None, split: tuple[int, tuple[float, float, float]]
) -> tuple[str, str, dict[str, Any]]:
    """The dataset card's title and description, and the manifest's importer entries."""
    seed, fractions = split
    split_note = (
        f"Splits come from column `{split_col}` of the metadata."
        if split_col
        else f"Splits were assigned per run by hashing `model_id` (seed {seed}, fractions {list(fractions)})."
    )
    description = (
        f"Imported with `zooprobe.zoo.importers.import_checkpoint_folder` from the checkpoint folder "
        f"`{folder.name}` and the metadata file `{metadata.name}`. Weights are stored exactly as read "
        f"(names, dtypes, values). {split_note}"
    )
    manifest = {
        "importer": "checkpoint_folder",
        "source": str(folder),
        "metadata": str(metadata),
        "split_source": f"column {split_col}" if split_col else "hash",
        "seed": seed,
        "split_fractions": list(fractions),
    }
    return f"Imported zoo: {folder.name}", description, manifest


def import_checkpoint_folder(
    folder: str | Path,
    metadata: str | Path,
    output: str | Path,
    *,
    file_column: str = "file",
    id_column: str | None = None,
    split_column: str = "split",
    skip_invalid: bool = False,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    overwrite: bool = False,
    accuracy_percent: bool = False,
    max_params: int = DEFAULT_MAX_PARAMS,
) -> ImportReport:
    """Import a folder of checkpoint files described by a CSV or JSONL metadata file into a zoo at ``output``.

    Each metadata row names one checkpoint (``file_column``, relative to ``folder``). Columns named like
    zoo fields (`schema.FIELDS`: ``test_accuracy``, ``optimizer``, ...) are converted to the field's type;
    other columns are kept with an inferred type (int64, float64, bool or string). ``model_id`` comes from
    ``id_column``, else from a ``model_id`` column, else from the checkpoint's file name stem; several rows
    may share a model_id only with distinct ``checkpoint_epoch`` values (checkpoints of one run). The split
    comes from ``split_column`` when the file has it (train / validation (val, valid) / test), else from a
    hash of model_id with ``seed`` and ``split_fractions``. ``num_params`` is filled from the weights when
    missing, ``is_final`` marks a run's only or last checkpoint.

    Known fields must lie in their declared range (`schema.Field`: accuracies in [0, 1], losses >= 0,
    learning rate > 0, ...); ``accuracy_percent=True`` reads accuracies as percentages in [0, 100].
    Checkpoints with identical weights in more than one split are imported with a warning
    (`ImportReport.warnings`, the manifest's ``split_leaks``).

    Raises `InvalidInputError` naming file, row and field for bad input; with ``skip_invalid`` bad rows are
    skipped and listed in the returned report instead. ``output`` must be new or empty (``overwrite=True``
    replaces an existing zoo). Checkpoints are read by `zooprobe.core.checkpoints.read_checkpoint` (as
    ``zooprobe predict`` reads them); one holding more than ``max_params`` values is refused unread.
    """
    folder, metadata, output = Path(folder), Path(metadata), Path(output)
    fractions = _check_fractions(split_fractions)
    check_max_params(max_params)
    _check_inputs(folder, metadata, output, overwrite)
    columns, rows, typed = _read_rows(metadata)
    cols = _pick_columns(metadata, columns, file_column, id_column, split_column)

    problems = _Problems(skip_invalid)
    records = _read_records(rows, metadata, folder, cols, accuracy_percent, problems)
    kept, final_epoch = _group_runs(records, problems)
    valid = _read_weights(kept, max_params, problems)
    if not valid:
        raise problems.none_valid(str(metadata))
    out_rows, extra_types = _zoo_rows(valid, cols.extras, typed, final_epoch, (seed, fractions))

    report = _write_import(
        out_rows,
        (extra_types, _descriptions(folder, metadata, cols)),
        ImportReport(source=str(folder), output=output, skipped=problems.items),
        (overwrite, accuracy_percent),
        _about(folder, metadata, cols.split, (seed, fractions)),
    )
    return _warn(report)
