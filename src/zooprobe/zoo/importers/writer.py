"""Flat-vector zoos: the resumable writer. Chunks of whole runs become parquet parts under ``.parts/``, then
are streamed into the zoo's data files; an unfinished import resumes with the same inputs and options.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import mmap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from zooprobe.core.files import atomic_path, parse_json
from zooprobe.core.outputs import (
    LOCK,
    MARKER,
    OutputFolderError,
    check_output,
    release_outputs,
)
from zooprobe.errors import InvalidInputError
from zooprobe.zoo.importers.common import FlatImportReport, _warnings_from
from zooprobe.zoo.importers.layout import LayoutEntry
from zooprobe.zoo.importers.plan import _Plan
from zooprobe.zoo.schema import SPLITS, WEIGHTS
from zooprobe.zoo.store import (
    MANIFEST,
    ROW_GROUP,
    WRITING,
    ZOO_OUTPUT,
    SplitWriter,
    base_manifest,
    begin_zoo_write,
    dataset_card,
    encode_weights,
    finish_zoo_write,
    payload_hash,
)

IMPORT_CONFIG = "import_config.json"
PARTS = ".parts"


# ---------------------------------------------------------------------------------------------- output folder
def _refuse_finished(output: Path) -> OutputFolderError:
    return OutputFolderError(
        f"--output {output}: holds a zoo already; choose a new folder, or pass --overwrite true to replace "
        "it (only the files zooprobe wrote there are removed)"
    )


def _check_resumable(output: Path, config: dict[str, Any] | None, overwrite: bool) -> bool:
    """Whether ``output`` may take this import (reads only): new, empty, or (``overwrite``) any zoo folder, or
    an unfinished import of the same ``config`` (then True: resume it). ``config=None``: the first check,
    before the inputs are read."""
    state = check_output(output, ZOO_OUTPUT, overwrite=overwrite)
    if state != "own" or overwrite:
        return False
    if all(p.name in (MARKER, LOCK) for p in output.rglob("*") if p.is_file()):
        return False  # claimed, then killed before anything was written
    if (output / MANIFEST).exists() and not (output / WRITING).exists():
        raise _refuse_finished(output)
    saved_path = output / IMPORT_CONFIG
    if not saved_path.is_file():
        raise OutputFolderError(
            f"--output {output}: holds an unfinished zoo write that is not an import (a `zoo build`?); "
            "choose a new folder, or pass --overwrite true to start over"
        )
    if config is None:
        return True
    try:
        saved = parse_json(saved_path.read_text())
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and isinstance(saved.get("sources"), dict):
        for role, now in config["sources"].items():
            before = saved["sources"].get(role)
            if (
                isinstance(before, dict)
                and now is not None
                and before.get("path") == now["path"]
                and before.get("sha256") != now["sha256"]
            ):
                raise OutputFolderError(
                    f"--output {output}: holds an unfinished import, but its {role} file {now['path']} has "
                    "changed since that import began (its content differs, whatever its size and time); "
                    "resuming would mix rows of the old and the new file: pass --overwrite true to start "
                    "over, or restore the file"
                )
    if saved != config:
        differ = (
            sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
            if isinstance(saved, dict)
            else ["everything"]
        )
        raise OutputFolderError(
            f"--output {output}: holds an unfinished import of other inputs or options (differs in: "
            f"{', '.join(differ)}); run that import again to finish it, choose a new folder, or pass "
            "--overwrite true to start over"
        )
    return True


def source_fingerprint(path: Path) -> dict[str, Any]:
    """What a resumed import checks a source file against: its resolved path, its size and the sha256 of
    its whole content.

    The whole file is hashed, whatever its size (one sequential read: seconds for the 5 GiB of the Small CNN
    Zoo's ``--step all``), rather than sampled blocks: a rewrite in place that keeps the size and the
    modification time (``os.utime``) and changes only values between sampled blocks would pass a sampled
    check, and a resumed import would then mix rows of the old and the new file.
    """
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": digest.hexdigest()}


# ---------------------------------------------------------------------------------------------- streaming
def _part_path(parts: Path, k: int) -> Path:
    return parts / f"import-{k:06d}.parquet"


def _part_done(path: Path) -> bool:
    """A part written completely (parts are renamed into place, so a readable footer means complete)."""
    if not path.is_file():
        return False
    try:
        pq.read_metadata(path)
        return True
    except (pa.ArrowInvalid, OSError):
        path.unlink(missing_ok=True)
        return False


def _release(weights: np.ndarray) -> None:
    """Drop the memory map's pages from this process once a chunk is copied out: they stay in the page
    cache, but no longer count as this process's memory, so resident memory does not grow with the zoo."""
    mapping = getattr(weights, "_mmap", None)
    if isinstance(mapping, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


class _Encoder:
    """`store.encode_weights` for many state dicts of one layout, byte for byte and much faster.

    A safetensors payload is an 8-byte length, a JSON header (names, dtypes, shapes, data offsets, the key
    order) and the tensors' bytes. For state dicts of one layout the header is the same every time, so it is
    taken from `encode_weights` on a first state dict (which also checks the values are finite, as every
    row's are checked before), and each payload is that header plus the row's tensor bytes in header order.
    """

    def __init__(self, state_dict: dict[str, torch.Tensor], where: str) -> None:
        payload = encode_weights(state_dict, where=where)
        n = int.from_bytes(payload[:8], "little")
        header = json.loads(payload[8 : 8 + n])
        spans = sorted((tuple(v["data_offsets"]), k) for k, v in header.items() if k != "__metadata__")
        position = 0
        for (begin, end), key in spans:
            tensor = state_dict[key]
            if begin != position or end - begin != tensor.numel() * tensor.element_size():
                raise AssertionError(f"unexpected safetensors layout of {key!r}: {begin}..{end}")
            position = end
        if len(payload) != 8 + n + position:
            raise AssertionError("unexpected safetensors payload size")
        self.prefix = payload[: 8 + n]
        self.order = [key for _, key in spans]
        self.first = payload

    def encode(self, arrays: Mapping[str, np.ndarray]) -> bytes:
        """The payload of the state dict ``arrays`` (C-contiguous little-endian arrays, the first one's
        names, dtypes and shapes)."""
        return b"".join([self.prefix, *(memoryview(arrays[key]) for key in self.order)])


def _nonfinite_runs(
    plan: _Plan, span: tuple[int, int], rows: np.ndarray, finite: np.ndarray, keep: np.ndarray
) -> list[dict[str, Any]]:
    """The runs of ``span`` with a non-finite value in any checkpoint (``finite``: per row), each described
    by its first bad checkpoint; their rows are cleared in ``keep``."""
    start, end = span
    table = plan.table.slice(start, end - start)
    ids = table.column("model_id").to_pylist()
    checkpoints = (
        table.column("checkpoint_epoch").to_pylist() if "checkpoint_epoch" in table.column_names else None
    )
    dropped: list[dict[str, Any]] = []
    bounds = [b - start for b in plan.run_starts if start <= b < end] + [end - start]
    for a, b in itertools.pairwise(bounds):
        bad = np.flatnonzero(~finite[a:b])
        if len(bad):
            keep[a:b] = False
            first = a + int(bad[0])
            dropped.append(
                {
                    "model_id": ids[a],
                    "row": int(rows[first]),
                    "checkpoint": checkpoints[first] if checkpoints else None,
                }
            )
    return dropped


def _payloads(
    data: np.ndarray, layout: list[LayoutEntry], keep: np.ndarray, rows: np.ndarray, weights_path: Path
) -> tuple[list[bytes], list[str]]:
    """The safetensors payload of every kept row of ``data`` (tensors cut out by ``layout``, transposed to
    PyTorch's layout) and its content hash."""
    tensors = {}
    for e in layout:
        arr = data[:, e.start : e.end].reshape((len(rows), *e.shape))
        if e.axes:
            arr = arr.transpose((0, *(a + 1 for a in e.axes)))
        tensors[e.key] = np.ascontiguousarray(arr)
    payloads: list[bytes] = []
    hashes: list[str] = []
    indices = np.flatnonzero(keep)
    if len(indices):
        first = int(indices[0])
        state_dict = {key: torch.from_numpy(t[first]) for key, t in tensors.items()}
        encoder = _Encoder(state_dict, where=f"{weights_path} row {int(rows[first])}")
        if encoder.encode({key: t[first] for key, t in tensors.items()}) != encoder.first:
            raise AssertionError("the fast safetensors encoding differs from encode_weights")
        for i in indices:
            payload = encoder.encode({key: t[i] for key, t in tensors.items()})
            payloads.append(payload)
            hashes.append(payload_hash(payload))
    return payloads, hashes


def _write_part(
    path: Path,
    plan: _Plan,
    span: tuple[int, int],
    weights: np.ndarray,
    layout: list[LayoutEntry],
    weights_path: Path,
) -> int:
    """Convert table rows ``span`` (whole runs) and write them as one part; returns the rows dropped."""
    start, end = span
    rows = plan.source_rows[start:end]
    order = np.argsort(rows, kind="stable")
    data = np.empty((len(rows), weights.shape[1]), dtype=weights.dtype.newbyteorder("<"))
    data[order] = weights[rows[order]]  # sorted row indices: the memory map is read front to back
    _release(weights)
    finite = np.isfinite(data).all(axis=1)
    keep = np.ones(len(rows), dtype=bool)
    dropped = [] if finite.all() else _nonfinite_runs(plan, span, rows, finite, keep)
    payloads, hashes = _payloads(data, layout, keep, rows, weights_path)
    table = plan.table.slice(start, end - start).filter(pa.array(keep))
    split = table.column("split")
    table = table.drop_columns(["split"]).append_column(WEIGHTS, pa.array(payloads, type=pa.binary()))
    table = table.append_column("split", split)
    table = table.replace_schema_metadata({"dropped": json.dumps(dropped), "hashes": json.dumps(hashes)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP)
    return len(rows) - len(payloads)


@dataclass
class _Parts:
    """What the parts hold, read from their metadata and small columns: every checkpoint's content hash,
    run id and split, the accuracies (with ``accuracy_percent``) and the runs dropped as non-finite."""

    hashes: np.ndarray
    ids: pa.ChunkedArray
    splits: pa.ChunkedArray
    accuracies: list[float]
    dropped: list[dict[str, Any]]


def _read_parts(parts: list[Path], accuracy_percent: bool) -> _Parts:
    hash_parts: list[np.ndarray] = []
    id_parts: list[pa.Array] = []
    split_parts: list[pa.Array] = []
    accuracies: list[float] = []
    dropped: list[dict[str, Any]] = []
    for path in parts:
        meta = pq.read_schema(path).metadata or {}
        dropped += json.loads(meta.get(b"dropped", b"[]"))
        hash_parts.append(np.asarray(json.loads(meta.get(b"hashes", b"[]")), dtype="U16"))
        names = ["test_accuracy", "train_accuracy", "val_accuracy"] if accuracy_percent else []
        small = pq.read_table(path, columns=["model_id", "split", *names])
        id_parts.append(small.column("model_id").combine_chunks())
        split_parts.append(small.column("split").combine_chunks())
        for name in names:
            accuracies += [a for a in small.column(name).to_pylist() if a is not None]
    return _Parts(
        hashes=np.concatenate(hash_parts),
        ids=pa.chunked_array(id_parts, type=pa.string()),
        splits=pa.chunked_array(split_parts, type=pa.string()),
        accuracies=accuracies,
        dropped=dropped,
    )


def _part_warnings(read: _Parts, accuracy_percent: bool) -> tuple[list[str], dict[str, Any]]:
    """`_warnings_from` over the parts: identical weights in several splits (only checkpoints whose hash
    occurs more than once can be copies), percentages that look like fractions."""
    _, inverse, repeats = np.unique(read.hashes, return_inverse=True, return_counts=True)
    twins = pa.array(np.flatnonzero(repeats[inverse] > 1))
    return _warnings_from(
        read.hashes[twins.to_numpy()].tolist(),
        read.ids.take(twins).to_pylist(),
        read.splits.take(twins).to_pylist(),
        read.accuracies,
        accuracy_percent,
    )


def _stream_parts(staging: Path, parts: list[Path], counts: dict[str, int]) -> dict[str, SplitWriter]:
    """Write the parts' rows into the staging folder's data files, a split file each (closed)."""
    schema = pq.read_schema(parts[0]).remove_metadata()
    schema = schema.remove(schema.get_field_index("split"))
    writers = {s: SplitWriter(staging, s, counts[s], schema) for s in SPLITS if counts[s]}
    for path in parts:
        table = pq.read_table(path).replace_schema_metadata(None)
        for s, writer in writers.items():
            sub = table.filter(pc.equal(table.column("split"), s)).drop_columns(["split"])
            if sub.num_rows == 0:
                continue
            writer.write(sub)
        del table
    for writer in writers.values():
        writer.close()
    return writers


def _card_tables(metadata: pa.Table, dropped: list[str], splits: Iterable[str]) -> dict[str, pa.Table]:
    """The metadata of each split for the card: the plan's table (one chunk), less the dropped runs."""
    kept = pc.invert(pc.is_in(metadata.column("model_id"), value_set=pa.array(dropped, pa.string())))
    tables = {}
    for s in splits:
        rows = metadata.filter(pc.and_(pc.equal(metadata.column("split"), s), kept)).drop_columns(["split"])
        tables[s] = rows.append_column(WEIGHTS, pa.nulls(rows.num_rows, pa.binary()))
    return tables


def _remove_parts(output: Path, parts: list[Path]) -> None:
    for path in parts:
        path.unlink(missing_ok=True)
    (output / IMPORT_CONFIG).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (output / PARTS).rmdir()


def _finalize(
    output: Path,
    parts: list[Path],
    metadata: pa.Table,
    extra_descriptions: dict[str, str],
    report: FlatImportReport,
    *,
    title: str,
    description: str,
    manifest_extra: dict[str, Any],
    accuracy_percent: bool,
) -> None:
    """Stream the parts into the zoo's data files (the protocol of `store.write_zoo`: a ``.zooprobe-writing``
    marker while writing, data swapped in from a staging folder, the manifest last), then remove the parts.
    ``metadata``: the plan's table (every planned checkpoint's metadata and split) for the dataset card."""
    read = _read_parts(parts, accuracy_percent)
    dropped = read.dropped
    report.dropped = [d["model_id"] for d in dropped]
    if len(read.splits) == 0:
        raise _NothingImported(
            f"{report.source}: no checkpoint to import: every run was dropped (non-finite weights) or "
            f"skipped; nothing was written to {output} (what this import wrote there was removed)"
        )
    counts = _split_counts(read.splits)
    messages, manifest_warnings = _part_warnings(read, accuracy_percent)
    report.warnings += messages

    writers = _stream_parts(begin_zoo_write(output), parts, counts)
    tables = _card_tables(metadata, report.dropped, writers)
    report.imported = sum(counts.values())
    report.runs = int(pc.count_distinct(read.ids).as_py())
    report.splits = {s: counts[s] for s in SPLITS if counts[s]}
    card = dataset_card(
        title,
        _card_description(description, report, len(dropped)),
        tables,
        extra_descriptions,
        num_bytes={s: w.num_bytes for s, w in writers.items()},
    )
    manifest = base_manifest(
        "import",
        **manifest_extra,
        imported=report.imported,
        runs=report.runs,
        splits=counts,
        skipped=len(report.skipped),
        skipped_rows=[{"where": w, "reason": r} for w, r in report.skipped],
        dropped_nonfinite=len(dropped),
        dropped_runs=dropped,
        **manifest_warnings,
    )
    finish_zoo_write(output, manifest, card)
    _remove_parts(output, parts)


def _split_counts(splits: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """Checkpoints per split (every split named, 0 where none)."""
    counts = dict.fromkeys(SPLITS, 0)
    for item in pc.value_counts(splits).to_pylist():
        counts[item["values"]] = item["counts"]
    return counts


def _card_description(description: str, report: FlatImportReport, n_dropped: int) -> str:
    """The dataset card's description of an import: what was imported, dropped and skipped."""
    skipped_text = (
        f"{len(report.skipped)} row(s) or run(s) were skipped; the manifest lists them with reasons."
        if report.skipped
        else "No input was skipped."
    )
    return (
        f"{description}\n\n{report.imported} checkpoints of {report.runs} training runs. {n_dropped} "
        f"run(s) with non-finite weights were dropped. {skipped_text}"
    )


class _NothingImported(InvalidInputError):
    """Every planned checkpoint was dropped: an import that leaves no zoo."""


@contextlib.contextmanager
def _discard_when_nothing_imported(output: Path, parts: list[Path], state: str) -> Iterator[None]:
    """On `_NothingImported`, remove what the import wrote into ``output``: its parts, ``.parts/`` and
    ``import_config.json``; in a folder it created (``state`` ``"new"``) or found empty (``"empty"``) also
    its marker, and a folder it created. Nothing else is touched: only zooprobe's own files are named."""
    try:
        yield
    except _NothingImported:
        for path in parts:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (output / PARTS).rmdir()
        (output / IMPORT_CONFIG).unlink(missing_ok=True)
        if state in ("new", "empty") and all(p.name in (MARKER, LOCK) for p in output.iterdir()):
            release_outputs()  # the folder is given back as it was: its lock goes with the marker
            (output / MARKER).unlink(missing_ok=True)
            (output / LOCK).unlink(missing_ok=True)
            if state == "new":
                with contextlib.suppress(OSError):
                    output.rmdir()
        raise


# ---------------------------------------------------------------------------------------------- importers
