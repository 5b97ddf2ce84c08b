"""`import_model_zoos`: the directory layout of the Model Zoos dataset (Schürholt et al. 2022)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from zooprobe.core.files import parse_json, read_json
from zooprobe.core.guards import check_inside
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.zoo.importers.common import (
    _CHECKPOINT_DIR,
    _LOWERCASED,
    RESERVED_COLUMNS,
    ImportReport,
    _Bad,
    _check_fractions,
    _convert_field,
    _encode,
    _has_conv,
    _hash_split,
    _infer_column,
    _Problems,
    _read_torch,
    _to_int,
    _warn,
)
from zooprobe.zoo.importers.output import _check_output, _write_import
from zooprobe.zoo.schema import FIELD_BY_NAME, WEIGHTS
from zooprobe.zoo.store import (
    count_params,
)

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
        if epoch is not None and epoch < 0:
            raise _Bad(f"{path} line {line_no}: 'training_iteration' (the epoch) is {epoch}; it must be >= 0")
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


def _model_dirs(root: Path, output: Path, epochs: str, overwrite: bool) -> list[Path]:
    """The run directories under ``root`` (the inputs checked first)."""
    if epochs not in ("last", "all"):
        raise ConfigError(f"epochs must be 'last' or 'all', got {epochs!r}")
    if not root.is_dir():
        raise InvalidInputError(f"{root}: Model Zoos folder not found (or not a folder)")
    _check_output(output, overwrite)
    model_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not model_dirs:
        raise InvalidInputError(f"{root}: no model directories (expected one directory per training run)")
    return model_dirs


def _run_rows(
    root: Path,
    model_dir: Path,
    epochs: str,
    accuracy_percent: bool,
    split: tuple[int, tuple[float, float, float]],
    problems: _Problems,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
    """The rows of one run (its last or every checkpoint), its extra values and their params.json keys; a
    problem with the run's files skips the run, one with a checkpoint that checkpoint (``problems``)."""
    seed, fractions = split
    try:
        known, extras, sources = _map_params(
            _read_params(model_dir / "params.json"), model_dir / "params.json"
        )
        results = _read_results(model_dir / "result.json")
        checkpoints = _checkpoint_dirs(model_dir)
    except _Bad as e:
        problems.add(str(model_dir), str(e))
        return [], {}, {}
    rows: list[dict[str, Any]] = []
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
    return rows, extras, sources


def _add_extras(
    rows: list[dict[str, Any]], extras_per_row: list[dict[str, Any]], extra_sources: dict[str, str]
) -> tuple[dict[str, pa.DataType], dict[str, str]]:
    """Fill the extra columns into ``rows`` (types inferred); their types and descriptions."""
    extra_types: dict[str, pa.DataType] = {}
    for column in extra_sources:
        extra_types[column], values = _infer_column([e.get(column) for e in extras_per_row], typed=True)
        for row, value in zip(rows, values, strict=True):
            row[column] = value
    descriptions = {c: f"Imported from params.json key `{k}`." for c, k in extra_sources.items()}
    return extra_types, descriptions


def _about(
    root: Path, epochs: str, split: tuple[int, tuple[float, float, float]]
) -> tuple[str, str, dict[str, Any]]:
    """The dataset card's title and description, and the manifest's importer entries."""
    seed, fractions = split
    description = (
        f"Imported with `zooprobe.zoo.importers.import_model_zoos` from the Model Zoos folder "
        f"`{root.name}` (layout of Schürholt et al. 2022), "
        f"{'every checkpoint' if epochs == 'all' else 'the last checkpoint'} of each run. "
        "Weights are stored exactly as read. "
        f"Splits were assigned per run by hashing `model_id` (seed {seed}, fractions {list(fractions)})."
    )
    manifest = {
        "importer": "model_zoos",
        "source": str(root),
        "epochs": epochs,
        "split_source": "hash",
        "seed": seed,
        "split_fractions": list(fractions),
    }
    return f"Imported Model Zoos zoo: {root.name}", description, manifest


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
    model_dirs = _model_dirs(root, output, epochs, overwrite)
    problems = _Problems(skip_invalid)
    rows: list[dict[str, Any]] = []
    extras_per_row: list[dict[str, Any]] = []
    extra_sources: dict[str, str] = {}
    for model_dir in model_dirs:
        run, extras, sources = _run_rows(
            root, model_dir, epochs, accuracy_percent, (seed, fractions), problems
        )
        rows += run
        extras_per_row += [extras] * len(run)
        if run:
            for column, key in sources.items():
                extra_sources.setdefault(column, key)
    if not rows:
        raise problems.none_valid(str(root))

    report = _write_import(
        rows,
        _add_extras(rows, extras_per_row, extra_sources),
        ImportReport(source=str(root), output=output, skipped=problems.items),
        (overwrite, accuracy_percent),
        _about(root, epochs, (seed, fractions)),
    )
    return _warn(report)
