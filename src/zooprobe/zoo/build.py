"""``zooprobe zoo build``: generate a zoo, resumably and shardably.

Work is done per cohort (see `space.py`). Each finished cohort is written atomically to
``OUTPUT/.parts/cohort-NNNNNN.parquet``; an interrupted build skips finished cohorts when run again.
``--shard i/n`` builds the cohorts ``k`` with ``k % n == i`` only, so any scheduler can run shards on many
machines (into one shared folder, or separate folders merged with ``zooprobe zoo merge``). On one machine,
``--workers N`` trains N cohorts at a time in worker processes (`workers.py`; by default one per core for
builds of at least 128 runs). When every cohort is present the parts are merged into the final dataset
folder (`finalize`, streaming: a zoo larger than memory builds and merges).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import yaml

from zooprobe.core.files import atomic_write_text, read_yaml
from zooprobe.core.outputs import check_output, claim_output, holding_outputs
from zooprobe.core.progress import Progress
from zooprobe.core.torchrun import process_group, torchrun_env
from zooprobe.errors import ConfigError, ZooFormatError
from zooprobe.zoo.content import content_key, corpus_sha256, row_digest, rows_sha256
from zooprobe.zoo.data import load_task
from zooprobe.zoo.parts import (
    CONFIG_FILE,
    PARTS,
    BuildReport,
    _part_finished,
    _part_path,
    _part_schema,
    _read_part,
    _write_part,
    parse_shard,
)
from zooprobe.zoo.schema import SPLITS, WEIGHTS
from zooprobe.zoo.space import ModelSpec, ZooConfig, sample_cohort
from zooprobe.zoo.store import (
    MANIFEST,
    STAGING,
    WRITING,
    ZOO_OUTPUT,
    SplitWriter,
    base_manifest,
    begin_zoo_write,
    check_row_group_size,
    dataset_card,
    finish_zoo_write,
)
from zooprobe.zoo.train import CohortResult, train_cohort, train_single
from zooprobe.zoo.workers import CohortWorkers, check_workers, resolve_workers, threads_per_worker

PART_CACHE_BYTES = 256 * 2**20
"""`finalize` keeps parts it will copy rows from again up to this many bytes (it reads a part again beyond).
Generated zoos number their runs cohort by cohort, so each part is copied in one go and none is kept."""
_PART, _ROW = "__part", "__row"  # finalize's columns: where a row is in the parts


def _check_config(root: Path, cfg: ZooConfig) -> None:
    """Refuse to mix cohorts of different configurations in one folder (reads only)."""
    path = root / CONFIG_FILE
    if not path.exists():
        if (root / MANIFEST).exists() or (root / PARTS).exists():
            raise ZooFormatError(
                f"{root} holds a zoo but no {CONFIG_FILE}, so it cannot be resumed; use another --output "
                "folder or pass --overwrite true"
            )
        return
    saved = read_yaml(path, "zoo build configuration")
    if not isinstance(saved, dict):
        raise ZooFormatError(f"{path}: not a zoo build configuration (a mapping); use --overwrite true")
    if saved != cfg.to_dict():
        diff = sorted(k for k in set(saved) | set(cfg.to_dict()) if saved.get(k) != cfg.to_dict().get(k))
        raise ConfigError(
            f"{root} holds a zoo built with a different configuration (differs in: {', '.join(diff)}); "
            "use another --output folder or pass --overwrite true"
        )


def _claim(root: Path, cfg: ZooConfig, overwrite: bool) -> None:
    """Check `root` (reads only), then claim it as a zoo folder and record the configuration."""
    if check_output(root, ZOO_OUTPUT, overwrite=overwrite) == "own" and not overwrite:
        _check_config(root, cfg)
    claim_output(root, ZOO_OUTPUT, overwrite=overwrite)
    if not (root / CONFIG_FILE).exists():
        atomic_write_text(root / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def finished_zoo(root: Path) -> bool:
    """A zoo was written completely: a manifest and no interrupted-write marker (a kill between writing the
    manifest and removing the marker leaves both: then the zoo is written again from its parts)."""
    return (root / MANIFEST).exists() and not (root / WRITING).exists()


def _drop_leftovers(root: Path) -> None:
    """Folders a finished zoo no longer needs, left by a kill after the zoo was written."""
    for name in (PARTS, STAGING):
        folder = root / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def build_part(cfg: ZooConfig, k: int, part: Path, batched: bool = True) -> dict[str, Any]:
    """Train cohort ``k`` and write its part file (a worker's ``build`` job); returns what the build
    reports."""
    specs = sample_cohort(cfg, k)
    result = _train(specs, cfg, batched)
    _write_part(part, result)
    return {
        "cohort": k,
        "models": len(specs),
        "diverged": [s.model_id for s in result.diverged],
        "seconds": result.seconds,
    }


def train_part(cfg: ZooConfig, k: int, batched: bool = True) -> dict[str, Any]:
    """Train cohort ``k`` without writing it (``zoo bench``): its training seconds and each run's final test
    accuracy."""
    result = _train(sample_cohort(cfg, k), cfg, batched)
    final = {c.spec.model_id: c.metrics["test_accuracy"] for c in result.checkpoints if c.is_final}
    return {"cohort": k, "seconds": result.seconds, "test_accuracy": final}


def _train(
    specs: list[ModelSpec], cfg: ZooConfig, batched: bool, on_epoch: Callable[[int, int], None] | None = None
) -> CohortResult:
    data = load_task(specs[0].arch.task)
    with _denormals_flushed(bool(cfg.flush_denormals)):
        if batched:
            return train_cohort(specs, data, cfg.max_train_samples, on_epoch)  # type: ignore[arg-type]
        results = [train_single(s, data, cfg.max_train_samples) for s in specs]  # type: ignore[arg-type]
    return CohortResult(
        [c for r in results for c in r.checkpoints],
        [s for r in results for s in r.diverged],
        sum(r.seconds for r in results),
    )


@contextlib.contextmanager
def _denormals_flushed(on: bool) -> Iterator[None]:
    """Flush subnormal floats to zero inside the block when `on` (`ZooConfig.flush_denormals`)."""
    if not on:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@holding_outputs  # the folder's lock is released when it returns
def build_zoo(
    config: ZooConfig,
    output: str | Path,
    shard: str | None = None,
    batched: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    row_group_size: int | None = None,
    workers: int | None = None,
) -> BuildReport:
    """Generate (or resume) the zoo of ``config`` into ``output``; finalize when every cohort is done.

    ``row_group_size``: rows per Parquet row group of the final files (`store.write_zoo`; default: 64, fewer
    for large models). ``workers``: processes training cohorts side by side (`zooprobe.zoo.workers`; ``None``
    or 0: one per core for builds of at least 128 runs).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the processes share the cohorts out: process ``i`` of ``n`` builds
    shard ``i/n`` into the shared ``output`` (on several nodes, a shared file system), in one process each
    unless ``workers`` says otherwise; process 0 claims the folder first and merges once every shard is
    done. Every process returns the same finished report, with its own ``rank``."""
    cfg = config.resolved()
    root = Path(output)
    rank, world, _ = torchrun_env()
    if world > 1:
        if shard not in (None, ""):
            raise ConfigError(
                f"--shard {shard}: under torchrun the {world} processes share the cohorts out themselves "
                "(process i of n builds shard i/n); drop --shard"
            )
        shard = f"{rank}/{world}"
        workers = workers or 1  # torchrun already starts the processes asked for
    sh = parse_shard(shard)
    check_workers(workers)
    check_row_group_size(row_group_size)  # before hours of training, not at the end
    with process_group(world) as wait_for_all:
        if rank == 0:
            _claim(root, cfg, overwrite)
        wait_for_all()  # the others start once process 0 has claimed (or emptied) the folder
        if rank:
            _claim(root, cfg, overwrite=False)
        report = _build(
            cfg, root, sh, batched, progress and rank == 0, row_group_size, workers, finish=world == 1
        )
        if world > 1:
            wait_for_all()  # every shard is built
            if rank == 0 and not finished_zoo(root):
                finalize(root, cfg, [root / PARTS], row_group_size)
            wait_for_all()
            report.finalized = finished_zoo(root)
    report.rank, report.world_size = rank, world
    return report


def _build(
    cfg: ZooConfig,
    root: Path,
    sh: tuple[int, int] | None,
    batched: bool,
    progress: bool,
    row_group_size: int | None,
    workers: int | None,
    finish: bool,
) -> BuildReport:
    """Build the cohorts of shard `sh` (all: None) that are not done yet into ``root/.parts``; with `finish`,
    merge the zoo when every cohort is there."""
    report = BuildReport(root=root, cohorts_total=cfg.n_cohorts)
    if finished_zoo(root):
        _drop_leftovers(root)
        report.finalized = True
        report.cohorts_skipped = cfg.n_cohorts
        return report
    if (root / WRITING).exists() and not (root / PARTS).is_dir():
        raise ZooFormatError(
            f"{root}: an interrupted write left no parts to finish it from; pass --overwrite true to build "
            "the zoo again"
        )
    parts = root / PARTS
    parts.mkdir(exist_ok=True)
    mine = [k for k in range(cfg.n_cohorts) if sh is None or k % sh[1] == sh[0]]
    todo = [k for k in mine if not _part_finished(_part_path(parts, k))]
    report.cohorts_skipped = len(mine) - len(todo)
    size = cfg.runs_per_cohort
    n_models = {k: min(size, cfg.n_models - k * size) for k in mine}  # type: ignore[operator]
    start = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    already = sum(n_models[k] for k in mine if k not in todo)
    n_workers = resolve_workers(workers, len(todo), sum(n_models[k] for k in todo))
    report.workers = n_workers
    with Progress(
        "building zoo", sum(n_models.values()), unit="models", enabled=progress, done=already
    ) as bar:
        if n_workers == 1:
            _build_here(cfg, todo, parts, batched, bar, report)
        else:
            _build_in_workers(cfg, todo, parts, batched, n_workers, bar, report)
    report.seconds = time.perf_counter() - start
    if finish and all(_part_path(parts, k).exists() for k in range(cfg.n_cohorts)):
        finalize(root, cfg, [parts], row_group_size)
        report.finalized = True
    return report


def _build_here(
    cfg: ZooConfig, todo: list[int], parts: Path, batched: bool, bar: Progress, report: BuildReport
) -> None:
    """Train and write the cohorts `todo` one after another in this process."""
    for k in todo:
        specs = sample_cohort(cfg, k)
        a = specs[0].arch
        label = f"cohort {k}: {a.task} {a.family} depth {a.depth} width {a.width}"
        bar.describe(label)
        result = _train(specs, cfg, batched, lambda e, n, label=label: bar.describe(f"{label} epoch {e}/{n}"))
        _write_part(_part_path(parts, k), result)
        report.cohorts_built += 1
        report.diverged += [s.model_id for s in result.diverged]
        bar.advance(len(specs))


def _build_in_workers(
    cfg: ZooConfig,
    todo: list[int],
    parts: Path,
    batched: bool,
    n_workers: int,
    bar: Progress,
    report: BuildReport,
) -> None:
    """Train and write the cohorts `todo` in `n_workers` worker processes (`zooprobe.zoo.workers`)."""
    threads = threads_per_worker(n_workers)
    bar.describe(f"starting {n_workers} worker processes ({threads} thread(s) each)")
    tasks = {sample_cohort(cfg, k)[0].arch.task for k in todo}
    jobs = [{"op": "build", "cohort": k, "part": str(_part_path(parts, k)), "batched": batched} for k in todo]
    with CohortWorkers(n_workers, threads, cfg.to_dict(), tasks) as pool:
        bar.describe(f"{n_workers} workers")
        for answer in pool.run(jobs):
            report.cohorts_built += 1
            report.diverged += answer["diverged"]
            bar.advance(answer["models"])
            bar.describe(f"{n_workers} workers: cohort {answer['cohort']} done")


def finalize(root: Path, cfg: ZooConfig, part_dirs: list[Path], row_group_size: int | None = None) -> None:
    """Merge every cohort part into the final dataset folder (``row_group_size``: see `store.write_zoo`),
    then drop ``root/.parts``.

    Streams, so a zoo larger than memory merges: the parts' metadata columns are read and sorted first (by
    run, then epoch), then the rows are copied in that order, a part at a time, into one `store.SplitWriter`
    per split. Memory holds the metadata, at most `PART_CACHE_BYTES` of parts and a row group per split."""
    check_row_group_size(row_group_size)
    paths = _cohort_parts(cfg, part_dirs)
    schema = _part_schema()
    meta, diverged, hashes = _sorted_metadata(paths, schema)
    split_col = meta.column("split")
    counts = {s: int(pc.sum(pc.equal(split_col, s)).as_py() or 0) for s in SPLITS}
    data_schema = schema.remove(schema.get_field_index("split"))

    staging = begin_zoo_write(root)
    writers = {
        s: SplitWriter(staging, s, counts[s], data_schema, row_group_size) for s in SPLITS if counts[s]
    }
    unhashed = _copy_rows(meta, paths, writers, hashes)
    hashes |= {i: rows_sha256(unhashed.get(i, {})) for i in range(len(paths)) if i not in hashes}
    n_runs = int(pc.count_distinct(meta.column("model_id")).as_py())
    card = _generated_card(cfg, meta, data_schema, writers, n_runs, len(diverged))
    manifest = base_manifest(
        "generated",
        generator_config=cfg.to_dict(),
        tasks={t: load_task(t).describe() for t in cfg.tasks},  # type: ignore[union-attr]
        counts=counts | {"runs": n_runs, "diverged": len(diverged)},
        diverged=diverged,
        content={"cohorts": {str(k): h for k, h in hashes.items()}, "corpus": corpus_sha256(hashes)},
    )
    finish_zoo_write(root, manifest, card)
    local_parts = root / PARTS
    if local_parts in part_dirs and local_parts.exists():
        for part in local_parts.glob("cohort-*.parquet"):
            part.unlink()
        _drop_leftovers(root)


def _cohort_parts(cfg: ZooConfig, part_dirs: list[Path]) -> list[Path]:
    """The part file of every cohort, from the first of `part_dirs` that has it."""
    paths = []
    for k in range(cfg.n_cohorts):
        found = [d / _part_path(d, k).name for d in part_dirs if (d / _part_path(d, k).name).exists()]
        if not found:
            raise ZooFormatError(
                f"cohort {k} is missing from {', '.join(map(str, part_dirs))}; build it first"
            )
        paths.append(found[0])
    return paths


def _sorted_metadata(paths: list[Path], schema: pa.Schema) -> tuple[pa.Table, list[str], dict[int, str]]:
    """The metadata columns of every part with where each row is (`_PART`, `_ROW`), sorted by run then
    epoch; the diverged runs; the content hash each part recorded (by part)."""
    small_columns = [name for name in schema.names if name != WEIGHTS]
    metas, diverged, hashes = [], [], {}
    for i, path in enumerate(paths):
        small = _read_part(path, small_columns)
        diverged += json.loads((small.schema.metadata or {}).get(b"diverged", b"[]"))
        recorded = (small.schema.metadata or {}).get(b"sha256")
        if recorded:
            hashes[i] = recorded.decode()
        n = small.num_rows
        metas.append(
            small.replace_schema_metadata(None)
            .append_column(_PART, pa.array(np.full(n, i, dtype=np.int64)))
            .append_column(_ROW, pa.array(np.arange(n, dtype=np.int64)))
        )
    meta = pa.concat_tables(metas).sort_by([("model_id", "ascending"), ("checkpoint_epoch", "ascending")])
    return meta, diverged, hashes


def _copy_rows(
    meta: pa.Table, paths: list[Path], writers: dict[str, SplitWriter], hashes: dict[int, str]
) -> dict[int, dict[tuple[str, int], str]]:
    """Copy the rows in the order of `meta` into the split writers (closed after), keeping a part while
    rows of its are still to come (up to `PART_CACHE_BYTES`); the row digests of parts without a recorded
    hash (hashed as they are copied)."""
    part_of, row_of = meta.column(_PART).to_numpy(), meta.column(_ROW).to_numpy()
    starts = [0, *(np.flatnonzero(np.diff(part_of)) + 1).tolist()]
    ends = [*starts[1:], len(part_of)]
    runs = list(zip(starts, ends, strict=True)) if len(part_of) else []  # [a, b): rows from one part
    last_run = {int(part_of[a]): r for r, (a, _) in enumerate(runs)}  # a part is dropped after its last run
    cache: OrderedDict[int, pa.Table] = OrderedDict()  # parts needed again, least recently used first
    unhashed: dict[int, dict[tuple[str, int], str]] = {}
    for r, (a, b) in enumerate(runs):
        i = int(part_of[a])
        table = cache.pop(i, None)
        if table is None:
            table = _read_part(paths[i]).replace_schema_metadata(None)
        run = table.take(pa.array(row_of[a:b]))
        if last_run[i] > r:
            cache[i] = table
            while sum(t.nbytes for t in cache.values()) > PART_CACHE_BYTES:
                cache.popitem(last=False)
        del table
        if i not in hashes:  # a part written before parts recorded their hash: hashed as it is copied
            unhashed.setdefault(i, {}).update({content_key(row): row_digest(row) for row in run.to_pylist()})
        for s, writer in writers.items():
            sub = run.filter(pc.equal(run.column("split"), s))
            if sub.num_rows:
                writer.write(sub.drop_columns(["split"]))
    for writer in writers.values():
        writer.close()
    cache.clear()
    return unhashed


def _generated_card(
    cfg: ZooConfig,
    meta: pa.Table,
    data_schema: pa.Schema,
    writers: dict[str, SplitWriter],
    n_runs: int,
    n_diverged: int,
) -> str:
    """The dataset card of a generated zoo; it reads each split's metadata (the sorted metadata, with an
    empty weights column)."""
    split_col = meta.column("split")
    by_split = {}
    for s in SPLITS:
        rows = meta.filter(pc.equal(split_col, s))
        by_split[s] = pa.Table.from_arrays(
            [
                pa.nulls(rows.num_rows, pa.binary()) if n == WEIGHTS else rows.column(n)
                for n in data_schema.names
            ],
            schema=data_schema,
        )
    cfg_yaml = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    description = (
        f"A zoo of {n_runs} small neural networks (MLPs and CNNs) generated offline by zooprobe "
        f"(preset `{cfg.preset}`, seed {cfg.seed}) on {', '.join(cfg.tasks)} "  # type: ignore[arg-type]
        "with randomly sampled architectures and training hyperparameters. Each row is one checkpoint "
        f"with its metadata and its exact weights. {n_diverged} sampled run(s) diverged "
        "(non-finite weights) and are not included."
    )
    return dataset_card(
        f"zooprobe zoo ({cfg.preset}, seed {cfg.seed})",
        description,
        by_split,
        config_yaml=cfg_yaml,
        num_bytes={s: w.num_bytes for s, w in writers.items()},
    )


@holding_outputs  # the folder's lock is released when it returns
def merge_zoo(output: str | Path, inputs: list[str | Path], row_group_size: int | None = None) -> BuildReport:
    """Merge shard folders built with the same configuration into one zoo at ``output`` (``row_group_size``:
    see `store.write_zoo`)."""
    if not inputs:
        raise ConfigError("give at least one shard folder to merge")
    configs = []
    for d in map(Path, inputs):
        path = d / CONFIG_FILE
        if not path.exists():
            raise ZooFormatError(f"{d} is not a zoo build folder (no {CONFIG_FILE})")
        configs.append(read_yaml(path, "zoo build configuration"))
    if any(c != configs[0] for c in configs[1:]):
        raise ConfigError("the shard folders were built with different configurations; they cannot be merged")
    cfg = ZooConfig.from_dict(configs[0]).resolved()
    root = Path(output)
    part_dirs = [Path(d) / PARTS for d in inputs]
    missing = [k for k in range(cfg.n_cohorts) if not any(_part_path(d, k).exists() for d in part_dirs)]
    if missing:
        raise ZooFormatError(
            f"{len(missing)} of {cfg.n_cohorts} cohorts (e.g. {missing[:5]}) are in none of the shard "
            f"folders {', '.join(map(str, inputs))}; build the missing shards first (zoo build --shard i/n)"
        )
    check_row_group_size(row_group_size)
    _claim(root, cfg, overwrite=False)
    finalize(root, cfg, part_dirs, row_group_size)
    return BuildReport(root=root, cohorts_total=cfg.n_cohorts, cohorts_skipped=cfg.n_cohorts, finalized=True)
