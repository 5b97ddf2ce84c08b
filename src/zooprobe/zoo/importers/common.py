"""The shared part of every importer: the report, row-level problems, value conversion and range checks,
splits by run, and reading checkpoint files of unknown origin.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from zooprobe.core.guards import (
    DEFAULT_MAX_PARAMS,
    read_checkpoint,
)
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.zoo.schema import FIELD_BY_NAME, SPLITS, WEIGHTS
from zooprobe.zoo.store import (
    MANIFEST,
    describe_split_leaks,
    encode_weights,
    find_split_leaks,
    payload_hash,
)

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


# ---------------------------------------------------------------------------------------------- report
@dataclass
class FlatImportReport(ImportReport):
    """`ImportReport` plus the runs dropped for non-finite weights and what a resumed import reused."""

    dropped: list[str] = field(default_factory=list)
    """Run ids dropped whole because a checkpoint had NaN or infinite weights."""
    parts_reused: int = 0
    parts_total: int = 0
    seconds: float = 0.0
    alignment: str = ""
    """How metadata rows were matched to weights rows, and runs found (also the manifest's ``alignment``)."""

    def summary(self) -> str:
        lines = super().summary().split("\n")
        extra = [f"Rows aligned {self.alignment}."] if self.alignment else []
        if self.dropped:
            shown = ", ".join(repr(r) for r in self.dropped[:MAX_LISTED])
            more = f" and {len(self.dropped) - MAX_LISTED} more" if len(self.dropped) > MAX_LISTED else ""
            extra.append(
                f"Dropped {len(self.dropped)} run(s) with non-finite weights (NaN or inf): {shown}{more} "
                f"(all are listed in {MANIFEST})."
            )
        else:
            extra.append("Dropped 0 runs with non-finite weights.")
        if self.parts_reused:
            extra.append(f"Resumed: {self.parts_reused} of {self.parts_total} part(s) were already written.")
        return "\n".join([lines[0], *extra, *lines[1:], f"Took {self.seconds:.1f} s."])
