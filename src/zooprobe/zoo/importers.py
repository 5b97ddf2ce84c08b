"""Importers: turn model zoos people already have into zooprobe zoo folders.

Two sources are supported:

* `import_checkpoint_folder`: a folder of checkpoint files (``.safetensors``, or ``.pt``/``.pth``/``.bin``)
  plus a CSV or JSONL metadata file with one row per checkpoint.
* `import_model_zoos`: the directory layout of the Model Zoos dataset (Schürholt et al. 2022): one directory
  per training run holding ``params.json``, a per-epoch ``result.json`` and ``checkpoint_*/checkpoints``.

Design rules, and why:

* **Everything is read and validated before anything is written**, so a bad input never leaves a half-written
  zoo behind. A new output folder is written under a hidden temporary name next to its final place and
  renamed into place, so even a crash mid-write leaves no folder that `load_zoo` would read as complete.
* **Errors say where**: file, row (1-based data row, plus the line in the file), and field, because that is
  what a user needs to fix the input. ``skip_invalid=True`` turns row-level problems into entries of the
  returned `ImportReport` instead; problems with the input as a whole (a missing file, no rows, no file
  column, no valid row at all) are always errors.
* **Nothing is filled in silently**: missing values stay null. Only values that are exact consequences of
  the data are derived (``num_params`` from the weights, ``is_final`` from the checkpoint epochs, the
  generalization gap from the two accuracies of the Model Zoos results).
* **Checkpoints are untrusted data.** Unpickling can run arbitrary code, so ``torch.load`` is only ever called
  with ``weights_only=True``; a file that needs more is refused, never loaded another way.
* **Splits are by training run** (``model_id``), never by checkpoint, so that checkpoints of one run cannot
  leak between train and test. Without a split column a run's split comes from a hash of its id and the seed:
  the same run lands in the same split whatever else is in the zoo.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import pyarrow as pa
import torch

from zooprobe.core.files import parse_json, read_json
from zooprobe.core.guards import (
    CHECKPOINT_SUFFIXES,
    DEFAULT_MAX_PARAMS,
    check_inside,
    check_max_params,
    read_checkpoint,
    resolves_inside,
)
from zooprobe.core.outputs import OutputFolderError, check_output, claim_output, holding_outputs
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.zoo.schema import FIELD_BY_NAME, SPLITS, WEIGHTS
from zooprobe.zoo.store import (
    MANIFEST,
    ZOO_OUTPUT,
    base_manifest,
    count_params,
    dataset_card,
    describe_split_leaks,
    encode_weights,
    find_split_leaks,
    payload_hash,
    rows_to_table,
    write_zoo,
)

__all__ = ["CHECKPOINT_SUFFIXES", "ImportReport", "import_checkpoint_folder", "import_model_zoos"]


SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
}
RESERVED_COLUMNS = ("split",)
"""Column names a zoo cannot store: `Zoo.metadata()` adds ``split`` itself (and ``_``-prefixed helpers)."""

MAX_LISTED = 20
"""Skipped rows listed in `ImportReport.summary` (all of them go into the manifest)."""

# Model Zoos (Schürholt et al. 2022) names -> zooprobe fields.
MODEL_ZOOS_PARAMS = {
    "model::type": "family",
    "model::nlin": "activation",
    "model::dropout": "dropout",
    "model::init_type": "init",
    "optim::optimizer": "optimizer",
    "optim::lr": "learning_rate",
    "optim::wd": "weight_decay",
    "optim::momentum": "momentum",
    "seed": "seed",
    "training::batchsize": "batch_size",
    "training::epochs_train": "epochs",
}
MODEL_ZOOS_RESULTS = {
    "train_acc": "train_accuracy",
    "test_acc": "test_accuracy",
    "train_loss": "train_loss",
    "test_loss": "test_loss",
    "val_acc": "val_accuracy",
    "validation_acc": "val_accuracy",
    "val_loss": "val_loss",
    "validation_loss": "val_loss",
}
_LOWERCASED = ("family", "activation", "init", "optimizer")
"""Categorical fields normalised to lower case so that "Adam" and "adam" are one class for a probe."""

_CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")
_INT_TEXT = re.compile(r"[+-]?\d+")
_LEADING_ZERO = re.compile(r"[+-]?0\d")
_FLOAT_TEXT = re.compile(r"[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE)
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


# ---------------------------------------------------------------------------------------------- report
@dataclass
class ImportReport:
    """What an import did: checkpoints written, runs and split sizes, and every skipped row/file with why.

    ``skipped`` holds ``(where, reason)`` pairs: ``where`` is the metadata row (file, row, line) or the
    checkpoint/model directory, ``reason`` what was wrong with it.
    """

    source: str
    output: Path
    imported: int = 0
    runs: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Problems that did not stop the import (models copied between splits, ...); also in the manifest."""

    def summary(self) -> str:
        """A few lines for a terminal: what went in, where to, and how many were skipped and why."""
        sizes = ", ".join(f"{s} {n}" for s, n in self.splits.items())
        lines = [
            f"Imported {self.imported} checkpoint(s) of {self.runs} run(s) from {self.source} "
            f"into {self.output}" + (f" ({sizes})." if sizes else ".")
        ]
        lines += [f"Warning: {w}" for w in self.warnings]
        if not self.skipped:
            lines.append("Skipped 0.")
            return "\n".join(lines)
        lines.append(f"Skipped {len(self.skipped)}:")
        lines += [f"  - {where}: {reason}" for where, reason in self.skipped[:MAX_LISTED]]
        if len(self.skipped) > MAX_LISTED:
            lines.append(f"  ... and {len(self.skipped) - MAX_LISTED} more (all are listed in {MANIFEST})")
        return "\n".join(lines)


class _Bad(Exception):
    """A row-level problem; its message is the reason, the caller adds where it happened."""


class _Problems:
    """Row-level problems: raised at once (the default) or collected for the report (``skip_invalid``)."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, reason: str) -> None:
        if not self.skip:
            raise InvalidInputError(f"{where}: {reason}")
        self.items.append((where, reason))

    def none_valid(self, source: str) -> InvalidInputError:
        """The error for an import where every row was skipped (never worth writing an empty zoo)."""
        shown = "; ".join(f"{w}: {r}" for w, r in self.items[:3])
        more = f" (and {len(self.items) - 3} more)" if len(self.items) > 3 else ""
        return InvalidInputError(
            f"{source}: no valid checkpoint to import; all {len(self.items)} skipped: {shown}{more}"
        )


# ---------------------------------------------------------------------------------------------- values
def _is_missing(value: Any) -> bool:
    """Empty cells, JSON null and NaN are missing values (NaN is how pandas writes a missing number)."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    return isinstance(value, float) and math.isnan(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _Bad(f"{value!r} is not a boolean (use true/false, 1/0 or yes/no)")


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        raise _Bad(f"{value!r} is a boolean, not a number")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        raise _Bad(f"{value!r} is not a number")
    if math.isnan(number):
        return None
    if math.isinf(number):
        raise _Bad(f"{value!r} is infinite")
    return number


def _to_int(value: Any, bits: int) -> int:
    if isinstance(value, bool):
        raise _Bad(f"{value!r} is a boolean, not an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        try:
            as_float = _to_float(value) if isinstance(value, float | str) else None
        except _Bad:
            as_float = None
        if as_float is None or not as_float.is_integer():
            raise _Bad(f"{value!r} is not an integer")
        number = int(as_float)
    if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
        raise _Bad(f"{value!r} does not fit a {bits}-bit integer")
    return number


def _to_text(value: Any) -> str:
    """Strings stay as they are; other JSON values become their JSON text (``1``, ``true``, ``[1, 2]``)."""
    return value if isinstance(value, str) else json.dumps(value)


def _convert(value: Any, type_: pa.DataType) -> Any:
    """``value`` as a Python value of Arrow type ``type_``, or None when missing; `_Bad` when impossible."""
    if _is_missing(value):
        return None
    if pa.types.is_boolean(type_):
        return _to_bool(value)
    if pa.types.is_integer(type_):
        return _to_int(value, type_.bit_width)
    if pa.types.is_floating(type_):
        return _to_float(value)
    if pa.types.is_string(type_):
        return _to_text(value)
    raise _Bad(f"values of type {type_} cannot be imported")


def _convert_field(name: str, value: Any, accuracy_percent: bool = False) -> Any:
    """A known zoo field's value converted to its schema type and checked against its declared range
    (`schema.Field`); the error names the field, the value and the valid range.

    ``accuracy_percent``: accuracies (and their differences) are percentages, divided by 100 here.
    """
    spec = FIELD_BY_NAME[name]
    try:
        converted = _convert(value, spec.type)
    except _Bad as e:
        raise _Bad(f"field {name!r}: {e} (expected {spec.type})") from None
    return _check_range(name, converted, accuracy_percent)


def _check_range(name: str, value: Any, accuracy_percent: bool) -> Any:
    """``value`` (already converted) inside field ``name``'s declared range, as a fraction for accuracies."""
    spec = FIELD_BY_NAME[name]
    if value is None:
        return None
    if spec.accuracy and accuracy_percent:
        low = -100 if spec.low is not None and spec.low < 0 else 0
        if not low <= value <= 100:
            raise _Bad(
                f"field {name!r}: {value!r} is not a percentage in [{low}, 100] (accuracy_percent=True reads "
                "accuracies as percentages); fix the value"
            )
        value = value / 100
    problem = spec.range_problem(value)
    if problem is None:
        return value
    hint = "fix the value"
    if spec.accuracy and not accuracy_percent and 1 < abs(value) <= 100:
        hint = (
            "accuracies are fractions; if the file gives percentages, import with accuracy_percent=True "
            "(--accuracy_percent true), otherwise fix the value"
        )
    raise _Bad(f"field {name!r}: {problem}; {hint}")


def _infer_column(values: list[Any], typed: bool) -> tuple[pa.DataType, list[Any]]:
    """Type and converted values of an imported column that is not a known zoo field.

    ``typed`` values come from JSON and keep their JSON type; text values (CSV cells) are parsed. The
    narrowest of bool, int64, float64, string that fits every value wins; text with leading zeros
    (``007``) stays a string because it is an identifier, not a number.
    """
    present = [v for v in values if not _is_missing(v)]
    if typed:
        if present and all(isinstance(v, bool) for v in present):
            return pa.bool_(), [None if _is_missing(v) else v for v in values]
        if present and all(
            isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63 for v in present
        ):
            return pa.int64(), [None if _is_missing(v) else v for v in values]
        if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
            return pa.float64(), [None if _is_missing(v) else float(v) for v in values]
        return pa.string(), [None if _is_missing(v) else _to_text(v) for v in values]
    text = [v.strip() for v in present]
    if present and not any(_LEADING_ZERO.match(t) for t in text):
        if all(_INT_TEXT.fullmatch(t) for t in text) and all(-(2**63) <= int(t) < 2**63 for t in text):
            return pa.int64(), [None if _is_missing(v) else int(v) for v in values]
        if all(_FLOAT_TEXT.fullmatch(t) for t in text):
            floats = [None if _is_missing(v) else float(v) for v in values]
            return pa.float64(), [None if f is None or math.isnan(f) else f for f in floats]
    if present and all(t.lower() in ("true", "false") for t in text):
        return pa.bool_(), [None if _is_missing(v) else v.strip().lower() == "true" for v in values]
    return pa.string(), [None if _is_missing(v) else v for v in values]


def _row_warnings(rows: list[dict[str, Any]], accuracy_percent: bool) -> tuple[list[str], dict[str, Any]]:
    """Warnings about the valid rows taken together (they do not stop the import), and what the manifest
    records: `_warnings_from` for row dicts."""
    accuracies = (
        [
            r[name]
            for r in rows
            for name, spec in FIELD_BY_NAME.items()
            if spec.accuracy and spec.low == 0 and r.get(name) is not None
        ]
        if accuracy_percent
        else []
    )
    return _warnings_from(
        [payload_hash(r[WEIGHTS]) for r in rows],
        [str(r["model_id"]) for r in rows],
        [r["_split"] for r in rows],
        accuracies,
        accuracy_percent,
    )


def _warnings_from(
    hashes: Sequence[str],
    model_ids: Sequence[str],
    splits: Sequence[str],
    accuracies: Sequence[float],
    accuracy_percent: bool,
) -> tuple[list[str], dict[str, Any]]:
    """Warnings about the imported checkpoints taken together (they do not stop an import), and what the
    manifest records: checkpoints with identical weights (content ``hashes``) in more than one split
    (`store.find_split_leaks`), and, with ``accuracy_percent``, percentages that look like fractions
    (``accuracies``: every accuracy imported, already divided by 100)."""
    messages: list[str] = []
    leaks = find_split_leaks(list(hashes), [str(m) for m in model_ids], list(splits))
    if leaks:
        messages.append(
            f"{len(leaks)} checkpoint(s) have identical weights in more than one split "
            f"({describe_split_leaks(leaks)}): a head would be scored on models it was trained on, so "
            "`zooprobe train` and `zooprobe bench` refuse this zoo unless allow_split_leaks=True; remove the "
            "copies (or put them in one split) and import again"
        )
    if accuracy_percent and accuracies and max(accuracies) <= 0.01:
        messages.append(
            "accuracy_percent=True but every accuracy was at most 1 (now at most 0.01): the input "
            "probably gives fractions already; import again without accuracy_percent"
        )
    return messages, {
        "warnings": messages,
        "split_leaks": [leak.to_dict() for leak in leaks],
        "accuracy_percent": accuracy_percent,
    }


def _warn(report: ImportReport) -> ImportReport:
    for message in report.warnings:
        warnings.warn(f"{report.source}: {message}", stacklevel=3)
    return report


# ---------------------------------------------------------------------------------------------- splits
def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise ConfigError(
            f"split_fractions must be three non-negative numbers (train, validation, test) that sum to 1, "
            f"got {fractions!r}"
        )
    return values[0], values[1], values[2]


def _hash_split(model_id: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """The split of a run from a hash of (seed, model_id): deterministic and independent of the other runs."""
    digest = hashlib.sha256(f"zooprobe-split\0{seed}\0{model_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for split, fraction in zip(SPLITS, fractions, strict=True):
        edge += fraction
        if u < edge:
            return split
    return next(s for s, f in zip(reversed(SPLITS), reversed(fractions), strict=True) if f > 0)


def _split_label(value: Any) -> str:
    text = "" if _is_missing(value) else str(value).strip().lower()
    if text not in SPLIT_ALIASES:
        raise _Bad(f"split {value!r} is not one of train, validation (or val, valid), test")
    return SPLIT_ALIASES[text]


# ---------------------------------------------------------------------------------------------- checkpoints
def _read_checkpoint(path: Path, max_params: int = DEFAULT_MAX_PARAMS) -> dict[str, torch.Tensor]:
    """A flat state dict from a checkpoint file, by `zooprobe.core.checkpoints.read_checkpoint`: the reader
    ``zooprobe predict`` uses too (same container unwrapping, tensor order, safety checks and limits)."""
    return read_checkpoint(path, max_params=max_params).state_dict


def _read_torch(path: Path, max_params: int = DEFAULT_MAX_PARAMS) -> dict[str, torch.Tensor]:
    """`_read_checkpoint` for a torch file whatever its name (Model Zoos' ``checkpoints`` has no suffix)."""
    return read_checkpoint(path, max_params=max_params, kind="torch").state_dict


def _encode(state_dict: dict[str, torch.Tensor], path: Path) -> bytes:
    """`encode_weights` (which refuses non-finite values), with any other failure named by file."""
    try:
        return encode_weights(state_dict, where=str(path))
    except InvalidInputError:
        raise
    except Exception as e:
        raise InvalidInputError(f"{path}: cannot store the tensors ({type(e).__name__}: {e})") from e


def _has_conv(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(v.is_floating_point() and v.dim() >= 3 for v in state_dict.values())


# ---------------------------------------------------------------------------------------------- output
def _check_output(output: Path, overwrite: bool) -> None:
    """Refuse an output folder zooprobe may not write a zoo into (reads only; `zooprobe.core.outputs`).

    A folder holding a zoo is replaced only with ``overwrite`` (and only zooprobe's own files in it); a
    folder holding anything else is always refused, since it could be the very checkpoints being imported.
    """
    if check_output(output, ZOO_OUTPUT, overwrite=overwrite) == "own" and not overwrite:
        raise OutputFolderError(
            f"--output {output}: holds a zoo already; choose a new folder, or pass --overwrite true to "
            "replace it (only the files zooprobe wrote there are removed)"
        )


def _drop_stale_temporaries(output: Path) -> None:
    """Remove temporary folders of earlier imports into `output` whose process no longer runs (a kill)."""
    for tmp in output.parent.glob(f".{output.name}.importing-*"):
        try:
            pid = int(tmp.name.rsplit(".importing-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


@holding_outputs  # the folder's lock is released when it returns
def _write_output(
    output: Path, tables: dict[str, pa.Table], manifest: dict[str, Any], card: str, overwrite: bool
) -> None:
    """Write the zoo; a new folder appears whole (written under a temporary name, then renamed)."""
    _check_output(output, overwrite)  # again: the folder may have changed while the input was read
    if output.exists() and any(output.iterdir()):  # an existing zoo, and overwrite=True
        claim_output(output, ZOO_OUTPUT, overwrite=True)
        write_zoo(output, tables, manifest, card)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    _drop_stale_temporaries(output)
    tmp = output.parent / f".{output.name}.importing-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        claim_output(tmp, ZOO_OUTPUT)
        write_zoo(tmp, tables, manifest, card)
        if output.exists():
            output.rmdir()  # empty (checked above)
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _finish(
    rows: list[dict[str, Any]],
    extras: tuple[dict[str, pa.DataType], dict[str, str]],
    report: ImportReport,
    overwrite: bool,
    *,
    title: str,
    description: str,
    manifest_extra: dict[str, Any],
) -> ImportReport:
    """Tables per split, dataset card and manifest from validated rows (`extras`: the types and descriptions
    of the columns beyond zooprobe's fields); then write `report.output` and fill the report."""
    extra_types, extra_descriptions = extras
    output = report.output
    by_split = {s: [r for r in rows if r["_split"] == s] for s in SPLITS}
    tables = {
        s: rows_to_table([{k: v for k, v in r.items() if k != "_split"} for r in split_rows], extra_types)
        for s, split_rows in by_split.items()
        if split_rows
    }
    report.imported = len(rows)
    report.runs = len({r["model_id"] for r in rows})
    report.splits = {s: t.num_rows for s, t in tables.items()}
    skipped_text = (
        f"{len(report.skipped)} row(s) were skipped as invalid; the manifest lists them with reasons."
        if report.skipped
        else "No input was skipped."
    )
    card = dataset_card(
        title,
        f"{description}\n\n{report.imported} checkpoints of {report.runs} training runs. {skipped_text}",
        tables,
        extra_descriptions,
    )
    manifest = base_manifest(
        "import",
        **manifest_extra,
        imported=report.imported,
        runs=report.runs,
        splits=report.splits,
        skipped=len(report.skipped),
        skipped_rows=[{"where": w, "reason": r} for w, r in report.skipped],
    )
    _write_output(output, tables, manifest, card, overwrite)
    return report


def _check_columns(source: Path, columns: Sequence[str]) -> None:
    for name in columns:
        if name == WEIGHTS or name in RESERVED_COLUMNS or name.startswith("_"):
            raise InvalidInputError(
                f"{source}: column {name!r} cannot be imported (the name is reserved by the zoo format); "
                "rename it"
            )


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


def _resolves_inside(root: Path, path: Path) -> bool:
    """Whether ``path``, every symbolic link followed, is ``root`` (its real path) or lies under it: the one
    containment rule for paths an input names (``..`` is refused before; a link must not lead out either)."""
    return resolves_inside(root, path)


def _checkpoint_path(folder: Path, name: Any) -> Path:
    """The checkpoint named in a metadata cell; it must be a supported file inside ``folder``."""
    if _is_missing(name):
        raise _Bad("no checkpoint file named")
    text = str(name).strip().replace("\\", "/")
    relative = PurePosixPath(text)
    if relative.is_absolute() or ".." in relative.parts:
        raise _Bad(f"checkpoint path {text!r} must be relative to the checkpoint folder and stay inside it")
    path = folder.joinpath(*relative.parts)
    if not _resolves_inside(folder, path):
        raise _Bad(
            f"checkpoint path {text!r} leads outside the checkpoint folder through a symbolic link (to "
            f"{path.resolve()}); checkpoints must stay inside the folder: copy the file in, or import from "
            "the folder that holds it"
        )
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise _Bad(f"{path}: unsupported checkpoint type; supported: {', '.join(CHECKPOINT_SUFFIXES)}")
    if not path.is_file():
        raise _Bad(f"{path}: checkpoint file not found")
    return path


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
    if not folder.is_dir():
        raise InvalidInputError(f"{folder}: checkpoint folder not found (or not a folder)")
    if not metadata.is_file():
        raise InvalidInputError(f"{metadata}: metadata file not found")
    _check_output(output, overwrite)

    columns, rows, typed = _read_metadata(metadata)
    if not rows:
        raise InvalidInputError(f"{metadata}: no data rows (the metadata file is empty or has only a header)")
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

    problems = _Problems(skip_invalid)
    records: list[_Record] = []
    for row in rows:
        where = f"{metadata} row {row.number} (line {row.line})"
        try:
            if row.problem:
                raise _Bad(row.problem)
            values = row.values
            path = _checkpoint_path(folder, values.get(file_column))
            if id_col is None:
                model_id = path.stem
            elif _is_missing(values.get(id_col)):
                raise _Bad(f"no run id in column {id_col!r}")
            else:
                model_id = _to_text(values[id_col]).strip()
            records.append(
                _Record(
                    where=where,
                    number=row.number,
                    path=path,
                    model_id=model_id,
                    split=_split_label(values.get(split_col)) if split_col else None,
                    known={c: _convert_field(c, values.get(c), accuracy_percent) for c in known},
                    extras={c: values.get(c) for c in extras},
                )
            )
        except _Bad as e:
            problems.add(where, str(e))

    # Runs: one row per (model_id, checkpoint_epoch), one split per model_id.
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
    if not valid:
        raise problems.none_valid(str(metadata))

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

    descriptions = {c: f"Imported from column `{c}` of `{metadata.name}`." for c in extras}
    descriptions[file_column] = f"Checkpoint file the row was imported from (relative to `{folder.name}`)."
    split_note = (
        f"Splits come from column `{split_col}` of the metadata."
        if split_col
        else f"Splits were assigned per run by hashing `model_id` (seed {seed}, fractions {list(fractions)})."
    )
    messages, manifest_warnings = _row_warnings(out_rows, accuracy_percent)
    report = ImportReport(source=str(folder), output=output, skipped=problems.items, warnings=messages)
    report = _finish(
        out_rows,
        (extra_types, descriptions),
        report,
        overwrite,
        title=f"Imported zoo: {folder.name}",
        description=(
            f"Imported with `zooprobe.zoo.importers.import_checkpoint_folder` from the checkpoint folder "
            f"`{folder.name}` and the metadata file `{metadata.name}`. Weights are stored exactly as read "
            f"(names, dtypes, values). {split_note}"
        ),
        manifest_extra={
            "importer": "checkpoint_folder",
            "source": str(folder),
            "metadata": str(metadata),
            "split_source": f"column {split_col}" if split_col else "hash",
            "seed": seed,
            "split_fractions": list(fractions),
            **manifest_warnings,
        },
    )
    return _warn(report)


# ---------------------------------------------------------------------------------------------- Model Zoos
def _read_params(path: Path) -> dict[str, Any]:
    return read_json(path, "params.json", _Bad)


def _read_results(path: Path) -> dict[int, tuple[int, dict[str, Any]]]:
    """Per-epoch results: ``training_iteration`` -> (line number, record). A repeated epoch keeps its last
    line, which is what a resumed run reported after restoring that checkpoint."""
    if not path.is_file():
        raise _Bad(f"{path}: result.json not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _Bad(f"{path}: cannot read ({e})") from e
    results: dict[int, tuple[int, dict[str, Any]]] = {}
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = parse_json(line)
        except json.JSONDecodeError as e:
            raise _Bad(f"{path} line {line_no}: not valid JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(record, dict):
            raise _Bad(f"{path} line {line_no}: expected a JSON object, got a {type(record).__name__}")
        try:
            epoch = _to_int(record.get("training_iteration"), 32)
        except _Bad as e:
            raise _Bad(f"{path} line {line_no}: 'training_iteration' (the epoch): {e}") from None
        results[epoch] = (line_no, record)
    return results


def _checkpoint_dirs(model_dir: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for entry in sorted(model_dir.iterdir()):
        match = _CHECKPOINT_DIR.fullmatch(entry.name)
        if not match or not entry.is_dir():
            continue
        epoch = int(match.group(1))
        if epoch in found:
            raise _Bad(f"{found[epoch].name} and {entry.name} both hold epoch {epoch}")
        found[epoch] = entry
    if not found:
        raise _Bad("no checkpoint_NNN directory")
    return found


def _map_params(params: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Known fields, extra columns (``::`` -> ``__``) and each extra column's source key, from params.json."""
    known: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in params.items():
        name = MODEL_ZOOS_PARAMS.get(key)
        if name is not None:
            try:
                converted = _convert_field(name, value)
            except _Bad as e:
                raise _Bad(f"{path}: key {key!r}: {e}") from None
            known[name] = converted.lower() if name in _LOWERCASED and converted is not None else converted
            continue
        column = key.replace("::", "__")
        if (
            column in FIELD_BY_NAME
            or column == WEIGHTS
            or column in RESERVED_COLUMNS
            or column.startswith("_")
        ):
            column = f"params__{column.lstrip('_')}"
        if column in sources:
            raise _Bad(f"{path}: keys {sources[column]!r} and {key!r} both become column {column!r}")
        extras[column] = value
        sources[column] = key
    if known.get("dropout") is not None:
        known["has_dropout"] = known["dropout"] > 0
    return known, extras, sources


def _result_fields(
    entry: tuple[int, dict[str, Any]] | None, path: Path, accuracy_percent: bool = False
) -> dict[str, Any]:
    """Accuracy/loss fields of one epoch's result line (all null when the epoch has no line), checked
    against their declared ranges (accuracies as percentages with ``accuracy_percent``)."""
    if entry is None:
        return {}
    line_no, record = entry
    out: dict[str, Any] = {}
    for key, name in MODEL_ZOOS_RESULTS.items():
        if key in record and out.get(name) is None:
            try:
                out[name] = _convert_field(name, record[key], accuracy_percent)
            except _Bad as e:
                raise _Bad(f"{path} line {line_no}: key {key!r}: {e}") from None
    if out.get("train_accuracy") is not None and out.get("test_accuracy") is not None:
        out["generalization_gap"] = out["train_accuracy"] - out["test_accuracy"]
    return out


def import_model_zoos(
    root: str | Path,
    output: str | Path,
    *,
    epochs: Literal["last", "all"] = "last",
    skip_invalid: bool = False,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    overwrite: bool = False,
    accuracy_percent: bool = False,
) -> ImportReport:
    """Import a zoo in the Model Zoos layout (Schürholt et al. 2022) into a zooprobe zoo at ``output``.

    ``root`` holds one directory per training run with ``params.json`` (hyperparameters, ``model::nlin``
    style keys), ``result.json`` (one JSON line per epoch, ``training_iteration`` = epoch) and
    ``checkpoint_NNN/checkpoints`` (a state dict saved with ``torch.save``; read with ``weights_only=True``).
    Hyperparameters map to zoo fields (activation, dropout, init, optimizer, learning_rate, ...), the epoch's
    result line to accuracies and losses; every other params.json key becomes a column with ``::`` replaced by
    ``__``. A checkpoint whose epoch has no result line keeps null metrics.

    ``epochs="last"`` imports each run's last checkpoint, ``"all"`` every checkpoint; runs are split by
    model_id (the directory name) either way. Errors and ``skip_invalid`` as in `import_checkpoint_folder`:
    a problem with a run's files skips the run, a problem with one checkpoint skips that checkpoint. Value
    ranges, ``accuracy_percent`` and the warning about identical weights in several splits as there too.
    """
    root, output = Path(root), Path(output)
    fractions = _check_fractions(split_fractions)
    if epochs not in ("last", "all"):
        raise ConfigError(f"epochs must be 'last' or 'all', got {epochs!r}")
    if not root.is_dir():
        raise InvalidInputError(f"{root}: Model Zoos folder not found (or not a folder)")
    _check_output(output, overwrite)
    model_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not model_dirs:
        raise InvalidInputError(f"{root}: no model directories (expected one directory per training run)")

    problems = _Problems(skip_invalid)
    rows: list[dict[str, Any]] = []
    extras_per_row: list[dict[str, Any]] = []
    extra_sources: dict[str, str] = {}
    for model_dir in model_dirs:
        try:
            known, extras, sources = _map_params(
                _read_params(model_dir / "params.json"), model_dir / "params.json"
            )
            results = _read_results(model_dir / "result.json")
            checkpoints = _checkpoint_dirs(model_dir)
        except _Bad as e:
            problems.add(str(model_dir), str(e))
            continue
        last = max(checkpoints)
        for epoch in [last] if epochs == "last" else sorted(checkpoints):
            ckpt_file = checkpoints[epoch] / "checkpoints"
            try:
                metrics = _result_fields(results.get(epoch), model_dir / "result.json", accuracy_percent)
                if not ckpt_file.is_file():
                    raise _Bad(f"{ckpt_file}: checkpoint file not found")
                state_dict = _read_torch(check_inside(root, ckpt_file, "checkpoint"))
                weights = _encode(state_dict, ckpt_file)
            except (_Bad, InvalidInputError) as e:
                problems.add(str(checkpoints[epoch]), str(e))
                continue
            row: dict[str, Any] = {"model_id": model_dir.name, **known, **metrics}
            row.update(
                checkpoint_epoch=epoch,
                is_final=epoch == last,
                has_conv_layers=_has_conv(state_dict),
                num_params=count_params(state_dict),
            )
            row[WEIGHTS] = weights
            row["_split"] = _hash_split(model_dir.name, seed, fractions)
            rows.append(row)
            extras_per_row.append(extras)
            for column, key in sources.items():
                extra_sources.setdefault(column, key)
    if not rows:
        raise problems.none_valid(str(root))

    extra_types: dict[str, pa.DataType] = {}
    for column in extra_sources:
        extra_types[column], values = _infer_column([e.get(column) for e in extras_per_row], typed=True)
        for row, value in zip(rows, values, strict=True):
            row[column] = value
    descriptions = {c: f"Imported from params.json key `{k}`." for c, k in extra_sources.items()}
    messages, manifest_warnings = _row_warnings(rows, accuracy_percent)
    report = ImportReport(source=str(root), output=output, skipped=problems.items, warnings=messages)
    report = _finish(
        rows,
        (extra_types, descriptions),
        report,
        overwrite,
        title=f"Imported Model Zoos zoo: {root.name}",
        description=(
            f"Imported with `zooprobe.zoo.importers.import_model_zoos` from the Model Zoos folder "
            f"`{root.name}` (layout of Schürholt et al. 2022), "
            f"{'every checkpoint' if epochs == 'all' else 'the last checkpoint'} of each run. "
            "Weights are stored exactly as read. "
            f"Splits were assigned per run by hashing `model_id` (seed {seed}, fractions {list(fractions)})."
        ),
        manifest_extra={
            "importer": "model_zoos",
            "source": str(root),
            "epochs": epochs,
            "split_source": "hash",
            "seed": seed,
            "split_fractions": list(fractions),
            **manifest_warnings,
        },
    )
    return _warn(report)
