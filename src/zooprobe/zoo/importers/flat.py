"""Flat-vector zoos: one weight vector per checkpoint plus a layout; the Small CNN Zoo as a preset.

Many weight-space papers release a zoo as one matrix: a row per checkpoint, the network's parameters
flattened into it, a *layout* saying which range of a row is which tensor (name, shape, start/end or
offset), and a metadata table with one row per weights row. `import_flat` turns such a zoo into a zooprobe
zoo folder; `import_cnnzoo` is its preset for the Small CNN Zoo (Unterthiner et al. 2020; files and network
in `zooprobe.zoo.cnnzoo`).

Inputs:

* **weights**: a ``.npy`` file holding a 2-D float array (rows x values), memory-mapped
  (``np.load(mmap_mode="r")``) and read a chunk of rows at a time, never whole; or a ``.safetensors`` file
  holding such a 2-D tensor (memory-mapped the same way; ``weights_key`` names it when the file has
  several).
* **layout**: CSV with columns ``name`` (or ``varname``), ``shape`` (``(3, 3, 1, 16)``, ``[3, 3, 1, 16]`` or
  ``3x3x1x16``) and ``start_idx``/``end_idx`` (or ``start``/``end``, or ``offset``); or JSON: a list of
  ``{"name", "shape", "offset" | "start" [, "end"]}`` objects (optionally under ``"layout"``), or an object
  mapping each name to ``{"shape", "offset"}``. The entries must cover every value of a row exactly once.
* **metadata**: CSV (``.csv``, ``.csv.gz``), JSONL or Parquet, one row per weights row, in the same order.
  Columns named like zoo fields (or renamed to one with ``columns``) are converted and range-checked as in
  `zooprobe.zoo.importers`; other columns are kept with an inferred type (pandas index columns
  ``Unnamed: N`` are dropped).

**Layout conventions.** ``torch``: tensors are stored as PyTorch holds them and layout names are state-dict
keys. ``keras``: kernels are TensorFlow/Keras layouts and are transposed to PyTorch's: conv2d HWIO -> OIHW
(``transpose(3, 2, 0, 1)``), conv1d WIO -> OIW, conv3d DHWIO -> OIDHW, dense (in, out) -> (out, in); names
``model/layer/kernel:0`` become ``layer.weight`` (``bias`` -> ``bias``, BatchNorm ``gamma``/``beta``/
``moving_mean``/``moving_variance`` -> ``weight``/``bias``/``running_mean``/``running_var``; a first path
component shared by every name, such as ``sequential``, is dropped). ``names`` overrides any key.

**Runs and checkpoints.** ``id_column`` names the run (default: a ``model_id`` column; without one every row
is its own run), ``checkpoint_column`` the checkpoint (default: a ``checkpoint_epoch`` column; stored as
``checkpoint_epoch``). ``step="final"`` imports each run's last checkpoint, ``"all"`` every checkpoint,
an integer only checkpoints with that value. ``max_runs`` keeps the first runs in file order.

**Splits** are by run, never by checkpoint: from a ``split`` column, from a hash of the run id (as the other
importers), or from a ``split_file`` in the NFN / Neural Graphs format: an order of all weights rows, one
index per line, no header, which fixes the shuffle before an iid split. Its protocol, as the NFN code
(``experiments/data_utils.py``, ``ZooDataset``) applies it: reorder the rows by the file, keep the rows at
the zoo's last checkpoint value (``step == 86``) in that order, put the second half (from ``int(0.5 * n)``)
in test, shuffle the first half with Python's ``random.Random(0)`` and put its first ``int(0.8 * half)`` in
train, the rest in validation (40/10/50). A run takes the split of its final-step row, so with
``step="all"`` its earlier checkpoints follow it; a run without a row at that step is not placed by the
protocol and is left out (reported). A leading ``0`` line that repeats a later index is a header pandas
wrote (``to_csv``), and is ignored.

**Streaming and resuming.** Runs are converted a chunk at a time (about ``chunk_rows`` checkpoints, whole
runs) and each chunk is written atomically to ``OUTPUT/.parts/import-NNNNNN.parquet``; memory stays
bounded by a chunk whatever the zoo's size. A killed import resumes when run again with the same inputs
and options (``OUTPUT/import_config.json`` records the options and each input's `source_fingerprint`: an
input rewritten since, even in place with its size and time kept, is refused by name; anything else is
refused too, or started over with ``overwrite``). The parts are then streamed into the zoo's data files
(`zooprobe.zoo.store` format, written under a ``.zooprobe-writing`` marker, the manifest last) and removed.
An import that keeps no checkpoint at all removes what it wrote.

**Non-finite weights.** A run with a NaN or infinite value in any imported checkpoint is dropped whole; the
report and the manifest count and list the dropped runs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zooprobe.core.files import atomic_write_json
from zooprobe.core.outputs import (
    claim_output,
    holding_outputs,
)
from zooprobe.core.progress import Progress
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.zoo.importers.common import FlatImportReport, _check_fractions, _Problems
from zooprobe.zoo.importers.layout import LayoutConvention, LayoutEntry, open_weights, read_layout
from zooprobe.zoo.importers.plan import _check_step, _Plan, _plan
from zooprobe.zoo.importers.splits import read_split_file
from zooprobe.zoo.importers.tables import _read_table
from zooprobe.zoo.importers.writer import (
    IMPORT_CONFIG,
    PARTS,
    _check_resumable,
    _discard_when_nothing_imported,
    _finalize,
    _part_done,
    _part_path,
    _write_part,
    source_fingerprint,
)
from zooprobe.zoo.schema import FORMAT_VERSION
from zooprobe.zoo.store import (
    ZOO_OUTPUT,
)

CHUNK_ROWS = 1024


@dataclass
class FlatImport:
    """Everything one flat-vector import reads and does: the input files and their conventions (set by
    `import_flat` or a preset such as `import_cnnzoo`) and the user's options."""

    weights: Path
    layout_path: Path
    metadata: Path
    output: Path
    weights_key: str | None
    layout_convention: LayoutConvention
    names: Mapping[str, str] | None
    columns: Mapping[str, str]
    optional_columns: bool
    required_columns: Sequence[str]
    id_column: str | None
    checkpoint_column: str | None
    step: str | int
    max_runs: int | None
    split_column: str
    split_file: Path | None
    split_fractions: Sequence[float]
    seed: int
    skip_invalid: bool
    accuracy_percent: bool
    overwrite: bool
    progress: bool
    chunk_rows: int
    importer: str
    source: Path
    title: str
    description: str
    manifest_extra: dict[str, Any]
    id_optional: bool = False
    """The ``id_column`` may be absent: then each row at the selected step is one run (`_plan`)."""


def _spec(arguments: Mapping[str, Any], **preset: Any) -> FlatImport:
    """The `FlatImport` of one call of a flat importer: ``arguments`` are the public function's arguments as
    passed (its ``locals()`` on entry); each that names a field of `FlatImport` is that field (``output``
    and ``split_file`` made paths), unless ``preset`` (what the importer or its preset fixes) sets it."""
    names = {f.name for f in fields(FlatImport)}
    options = {k: v for k, v in arguments.items() if k in names and k not in preset}
    options["output"] = Path(options["output"])
    split_file = options.get("split_file")
    options["split_file"] = Path(split_file) if split_file is not None else None
    return FlatImport(**options, **preset)


def _check_options(spec: FlatImport) -> tuple[tuple[float, float, float], str | int]:
    """The split fractions and the step, checked; the other numeric options refused when out of range."""
    fractions = _check_fractions(spec.split_fractions)
    step = _check_step(spec.step)
    if spec.max_runs is not None and (isinstance(spec.max_runs, bool) or spec.max_runs < 1):
        raise ConfigError(f"max_runs must be a positive number of runs, got {spec.max_runs!r}")
    if spec.chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {spec.chunk_rows}")
    return fractions, step


def _check_rows(spec: FlatImport, df: pd.DataFrame, n_rows: int, step: str | int) -> bool:
    """Check the metadata table against the weights; whether runs are rows (no run id column)."""
    id_column, metadata, split_file = spec.id_column, spec.metadata, spec.split_file
    missing = [c for c in spec.required_columns if c not in df.columns]
    if missing:
        raise InvalidInputError(
            f"{metadata}: no column(s) {', '.join(map(repr, missing))} (columns: {', '.join(df.columns)})"
        )
    runs_by_row = spec.id_optional and id_column is not None and id_column not in df.columns
    if len(df) != n_rows:
        alone = (
            f" (there is no {id_column!r} column: rows are matched by their order alone)"
            if runs_by_row
            else ""
        )
        raise InvalidInputError(
            f"{metadata}: {len(df)} rows but {spec.weights} holds {n_rows} vectors; row i of the metadata "
            f"describes vector i of the weights, so both must have the same number of rows{alone}"
        )
    if runs_by_row and (step == "all" or (split_file is not None and step != "final")):
        raise InvalidInputError(
            f"{metadata}: no {id_column!r} column, so the checkpoints of one run cannot be grouped and "
            f"--step {step} would put checkpoints of one run in different splits; import one checkpoint "
            "per run: --step final (as the NFN loader does)"
            + (" with a split file" if split_file is not None else " or --step N")
            + f", or add the {id_column!r} column"
        )
    absent = [c for c in spec.columns if c not in df.columns]
    if absent and not spec.optional_columns:
        raise ConfigError(
            f"columns: {absent} are not columns of {metadata} (columns: {', '.join(df.columns)})"
        )
    return runs_by_row


def _read_inputs(
    spec: FlatImport, step: str | int, fractions: tuple[float, float, float], problems: _Problems
) -> tuple[FlatImport, np.ndarray, list[LayoutEntry], _Plan]:
    """Read and check every input (nothing is written): the spec as imported (``step`` checked, an absent
    run id column dropped, only present ``columns``), the weights matrix, the layout and the plan."""
    array = open_weights(spec.weights, spec.weights_key)
    n_rows, width = (int(s) for s in array.shape)
    layout = read_layout(spec.layout_path, width, spec.layout_convention, spec.names)
    df = _read_table(spec.metadata)
    runs_by_row = _check_rows(spec, df, n_rows, step)
    spec = replace(
        spec,
        step=step,
        id_column=None if runs_by_row else spec.id_column,
        columns={c: t for c, t in spec.columns.items() if c in df.columns},
    )
    split_order = read_split_file(spec.split_file, n_rows) if spec.split_file is not None else None
    plan = _plan(
        df,
        spec.metadata,
        layout=layout,
        columns=spec.columns,
        id_column=spec.id_column,
        checkpoint_column=spec.checkpoint_column,
        split_column=spec.split_column,
        step=step,
        max_runs=spec.max_runs,
        split_order=split_order,
        split_file=spec.split_file,
        fractions=fractions,
        seed=spec.seed,
        accuracy_percent=spec.accuracy_percent,
        problems=problems,
        runs_by_row=runs_by_row,
    )
    del df
    if plan.table.num_rows == 0:
        if problems.items:
            raise problems.none_valid(str(spec.metadata))
        raise InvalidInputError(f"{spec.metadata}: no checkpoint matches step={step!r}; nothing to import")
    return spec, array, layout, plan


def _import_config(spec: FlatImport, fractions: tuple[float, float, float], plan: _Plan) -> dict[str, Any]:
    """What a resumed import must match (``import_config.json``): source fingerprints and options."""
    split_file = spec.split_file
    return {
        "importer": spec.importer,
        "sources": {
            "weights": source_fingerprint(spec.weights),
            "layout": source_fingerprint(spec.layout_path),
            "metadata": source_fingerprint(spec.metadata),
            "split_file": source_fingerprint(split_file) if split_file is not None else None,
        },
        "options": {
            "weights_key": spec.weights_key,
            "layout_convention": spec.layout_convention,
            "names": dict(spec.names or {}),
            "columns": dict(spec.columns),
            "id_column": spec.id_column,
            "checkpoint_column": spec.checkpoint_column,
            "step": spec.step,
            "max_runs": spec.max_runs,
            "split_column": spec.split_column,
            "split_fractions": list(fractions),
            "seed": spec.seed,
            "skip_invalid": spec.skip_invalid,
            "accuracy_percent": spec.accuracy_percent,
            "chunk_rows": spec.chunk_rows,
            "alignment": plan.alignment,
        },
        "format_version": FORMAT_VERSION,
    }


def _manifest_extra(
    spec: FlatImport, fractions: tuple[float, float, float], layout: list[LayoutEntry], plan: _Plan
) -> dict[str, Any]:
    """The manifest's record of this import: its sources, options, splits and the layout's tensors."""
    return {
        "importer": spec.importer,
        "source": str(spec.source),
        "weights_file": str(spec.weights),
        "layout_file": str(spec.layout_path),
        "metadata_file": str(spec.metadata),
        "layout_convention": spec.layout_convention,
        "step": spec.step,
        "max_runs": spec.max_runs,
        "split_source": plan.split_source,
        "alignment": plan.alignment,
        "split_file": str(spec.split_file) if spec.split_file else None,
        "seed": spec.seed,
        "split_fractions": list(fractions),
        "ignored_columns": plan.ignored_columns,
        "tensors": [
            {"name": e.name, "key": e.key, "start": e.start, "end": e.end, "shape": list(e.tensor_shape)}
            for e in layout
        ],
        **spec.manifest_extra,
    }


def _write(
    spec: FlatImport,
    array: np.ndarray,
    layout: list[LayoutEntry],
    plan: _Plan,
    report: FlatImportReport,
    state: str,
    manifest_extra: dict[str, Any],
) -> None:
    """Write the parts not written yet (whole runs, about ``chunk_rows`` checkpoints each), then the zoo."""
    output = spec.output
    parts_dir = output / PARTS
    parts_dir.mkdir(exist_ok=True)
    spans = plan.chunks(spec.chunk_rows)
    report.parts_total = len(spans)
    paths = [_part_path(parts_dir, k) for k in range(len(spans))]
    done = [_part_done(path) for path in paths]
    report.parts_reused = sum(done)
    already = sum(b - a for (a, b), d in zip(spans, done, strict=True) if d)
    label = f"importing {spec.source.name}"
    with (
        _discard_when_nothing_imported(output, paths, state),
        Progress(label, plan.table.num_rows, unit="checkpoints", enabled=spec.progress, done=already) as bar,
    ):
        for span, path, finished in zip(spans, paths, done, strict=True):
            if not finished:
                _write_part(path, plan, span, array, layout, spec.weights)
                bar.advance(span[1] - span[0])
        bar.describe(f"writing {output.name}")
        _finalize(
            output,
            paths,
            plan.table,
            plan.descriptions,
            report,
            title=spec.title,
            description=f"{spec.description} {plan.split_note}",
            manifest_extra=manifest_extra,
            accuracy_percent=spec.accuracy_percent,
        )


@holding_outputs  # the folder's lock is released when it returns
def _import(spec: FlatImport) -> FlatImportReport:
    """Run one flat-vector import: check, read and plan everything, then claim the output folder (or resume
    the unfinished import in it) and write the parts and the zoo."""
    started = time.perf_counter()
    fractions, step = _check_options(spec)
    # reads only: a folder in the way fails before the inputs are read
    _check_resumable(spec.output, None, spec.overwrite)
    problems = _Problems(spec.skip_invalid)
    spec, array, layout, plan = _read_inputs(spec, step, fractions, problems)
    config = _import_config(spec, fractions, plan)
    output = spec.output
    resume = _check_resumable(output, config, spec.overwrite)
    existed = output.exists()
    state = claim_output(output, ZOO_OUTPUT, overwrite=spec.overwrite)
    state = state if existed else "new"  # the lock makes the folder before the claim looks at it
    if not resume:
        atomic_write_json(output / IMPORT_CONFIG, config)
    report = FlatImportReport(
        source=str(spec.source),
        output=output,
        skipped=[*problems.items, *plan.skipped],
        warnings=[],
        alignment=plan.alignment,
    )
    _write(spec, array, layout, plan, report, state, _manifest_extra(spec, fractions, layout, plan))
    report.seconds = time.perf_counter() - started
    for message in report.warnings:
        warnings.warn(f"{report.source}: {message}", stacklevel=3)
    return report


def import_flat(
    weights: str | Path,
    layout: str | Path,
    metadata: str | Path,
    output: str | Path,
    *,
    weights_key: str | None = None,
    layout_convention: LayoutConvention = "torch",
    names: Mapping[str, str] | None = None,
    columns: Mapping[str, str] | None = None,
    id_column: str | None = None,
    checkpoint_column: str | None = None,
    step: str | int = "final",
    max_runs: int | None = None,
    split_column: str = "split",
    split_file: str | Path | None = None,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    skip_invalid: bool = False,
    accuracy_percent: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> FlatImportReport:
    """Import a flat-vector zoo (weights matrix + layout + metadata table) into a zoo folder at ``output``.

    See the module docs for the file formats, ``layout_convention`` (``torch`` or ``keras``), runs
    (``id_column``, ``checkpoint_column``, ``step``, ``max_runs``), splits (``split_column``, ``split_file``,
    hash with ``seed``/``split_fractions``) and resuming. ``names`` maps layout names to state-dict keys;
    ``columns`` renames metadata columns (e.g. ``{"l2": "weight_decay"}``). Known fields are checked as in
    `zooprobe.zoo.importers` (``accuracy_percent``, ``skip_invalid``). Runs with non-finite weights are
    dropped and counted in the returned report.
    """
    arguments = dict(locals())  # the options as passed (nothing assigned before this line)
    weights, layout, metadata = Path(weights), Path(layout), Path(metadata)
    spec = _spec(
        arguments,
        weights=weights,
        layout_path=layout,
        metadata=metadata,
        columns=dict(columns or {}),
        optional_columns=False,
        required_columns=(),
        importer="flat",
        source=weights,
        title=f"Imported zoo: {weights.stem}",
        description=(
            f"Imported with `zooprobe.zoo.flat.import_flat` from the flat weights file `{weights.name}`, the "
            f"layout `{layout.name}` ({layout_convention} convention) and the metadata `{metadata.name}`."
        ),
        manifest_extra={},
    )
    return _import(spec)
