"""Writing an in-memory import (checkpoint folder, Model Zoos): check the output folder, write the zoo
under a temporary name and rename it into place, with its dataset card and manifest.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from zooprobe.core.outputs import (
    OutputFolderError,
    check_output,
    claim_output,
    holding_outputs,
)
from zooprobe.errors import InvalidInputError
from zooprobe.zoo.importers.common import RESERVED_COLUMNS, ImportReport, _row_warnings
from zooprobe.zoo.schema import SPLITS, WEIGHTS
from zooprobe.zoo.store import (
    ZOO_OUTPUT,
    base_manifest,
    dataset_card,
    rows_to_table,
    write_zoo,
)

# ---------------------------------------------------------------------------------------------- output
ZOO_OUTPUT_STALE = ("zoo_config.yaml", ".parts/*.parquet", "import_config.json")
"""Files of `ZOO_OUTPUT` that are not part of a written zoo: an overwrite removes them once it is written."""


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
        # The old zoo is kept until the new one is complete: `write_zoo` stages the new data files beside
        # it and swaps them in at the end, so a write that fails (a full disk) leaves the old zoo loading.
        claim_output(output, ZOO_OUTPUT)
        write_zoo(output, tables, manifest, card)
        for rel in ZOO_OUTPUT_STALE:  # what an earlier build or flat import left there, not this zoo's
            for path in output.glob(rel):
                path.unlink()
        parts = output / ".parts"
        if parts.is_dir() and not any(parts.iterdir()):
            parts.rmdir()
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


def _write_import(
    rows: list[dict[str, Any]],
    extras: tuple[dict[str, pa.DataType], dict[str, str]],
    report: ImportReport,
    flags: tuple[bool, bool],
    about: tuple[str, str, dict[str, Any]],
) -> ImportReport:
    """The last step of an in-memory import: the warnings about the rows taken together (in the report and,
    after ``manifest_extra``, in the manifest), then `_finish`. ``flags``: (overwrite, accuracy_percent);
    ``about``: the dataset card's title and description and the manifest's importer entries."""
    overwrite, accuracy_percent = flags
    title, description, manifest_extra = about
    messages, manifest_warnings = _row_warnings(rows, accuracy_percent)
    report.warnings = messages
    return _finish(
        rows,
        extras,
        report,
        overwrite,
        title=title,
        description=description,
        manifest_extra={**manifest_extra, **manifest_warnings},
    )


def _check_columns(source: Path, columns: Sequence[str]) -> None:
    for name in columns:
        if name == WEIGHTS or name in RESERVED_COLUMNS or name.startswith("_"):
            raise InvalidInputError(
                f"{source}: column {name!r} cannot be imported (the name is reserved by the zoo format); "
                "rename it"
            )
