"""Finishing a large zoo build: the cohort parts are merged into the final files streaming, row group by row
group, so `zoo build` and `zoo merge` finish a zoo larger than memory.

The memory test merges, in one fresh process, a zoo of 32 MiB of weights and then one of 128 MiB (two shard
folders each) and watches the peak resident memory of each merge above the resting level (as
`tests/training/test_streaming.py` does): it must stay below the zoo's size and grow by far less than the
zoo does, where the earlier in-memory merge (concatenate, sort, filter by split) held copies of the zoo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import zooprobe.zoo.store as store
import zooprobe.zoo.writer as zoo_writer  # SplitWriter reads its limits here
from zooprobe import ZooConfig, load_zoo, merge_zoo
from zooprobe.core.memory import reset_peak_rss
from zooprobe.errors import InvalidInputError
from zooprobe.zoo.build import CONFIG_FILE, PARTS, _part_path, _part_schema
from zooprobe.zoo.store import SplitWriter, encode_weights, rows_to_table

REPO = Path(__file__).resolve().parents[2]
COHORT = 32
N_COHORTS = 128
SHAPE = (64, 64)  # 16 KiB of float32 a checkpoint: 128 cohorts of 32 runs of 2 checkpoints, 128 MiB


def _write_shards(
    root: Path,
    n_cohorts: int = N_COHORTS,
    cohort: int = COHORT,
    shape: tuple[int, int] = SHAPE,
    interleave: bool = False,
    diverged: frozenset[int] = frozenset(),
) -> tuple[ZooConfig, int, list[Path]]:
    """Two shard folders (even and odd cohorts) of parts as `zoo build --shard i/2` leaves them, with random
    weights; returns the configuration, the weights' bytes and the folders. ``interleave``: run ``j`` of
    cohort ``k`` is numbered ``j * n_cohorts + k``, so every part holds rows from all over the sorted zoo.
    ``diverged``: cohorts whose every run diverged (an empty part that lists them)."""
    cfg = ZooConfig(preset="tiny", n_models=cohort * n_cohorts, cohort_size=cohort).resolved()
    gen = torch.Generator().manual_seed(0)
    shards = [root / "s0", root / "s1"]
    for d in shards:
        (d / PARTS).mkdir(parents=True)
        (d / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    total, splits = 0, ("train", "train", "validation", "test")
    for k in range(n_cohorts):
        rows = []
        for j in range(cohort):
            index = j * n_cohorts + k if interleave else k * cohort + j
            for epoch in (2, 1):  # out of order within a run: the merge sorts by run, then epoch
                w = torch.randn(shape, generator=gen)
                total += w.nbytes
                rows.append(
                    {
                        "model_id": f"m{index:06d}",
                        "checkpoint_epoch": epoch,
                        "is_final": epoch == 2,
                        "dataset": "digits",
                        "family": "mlp",
                        "test_accuracy": float(index % 7) / 7,
                        "weights": encode_weights({"layers.0.linear.weight": w}),
                        "split": splits[index % 4],
                    }
                )
        table = pa.Table.from_pylist(rows, schema=_part_schema())
        if k in diverged:
            lost = sorted({r["model_id"] for r in rows})
            table = table.slice(0, 0).replace_schema_metadata({"diverged": json.dumps(lost)})
        pq.write_table(table, _part_path(shards[k % 2] / PARTS, k), compression="zstd")
    return cfg, total, shards


SCRIPT = r"""
import ctypes, ctypes.util, gc, json, sys
from pathlib import Path

from zooprobe import merge_zoo
from zooprobe.core.memory import process_status_kib as kib, reset_peak_rss
import pyarrow.parquet as pq
import zooprobe.zoo.build
from zooprobe.zoo.data import load_task

jobs = json.loads(sys.argv[1])  # [[output, shard, shard], ...]: merged one after the other
# outside the measurement: imports (torch), the task the manifest describes, Parquet's reading machinery
load_task("digits")
pq.read_table(sorted(Path(jobs[0][1], ".parts").iterdir())[0], columns=["model_id"])
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
peaks = []
for out, *shards in jobs:
    gc.collect()
    libc.malloc_trim(0)
    rest = kib("VmRSS")  # each merge from the same resting level
    assert reset_peak_rss()
    merge_zoo(out, shards)
    peaks.append((kib("VmHWM") - rest) / 1024)
print(json.dumps(peaks))
"""


def _merge_peaks_mib(jobs: list[tuple[Path, list[Path]]]) -> list[float]:
    """Peak resident memory above rest of each merge, run one after the other in a fresh process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    arg = json.dumps([[str(out), *map(str, shards)] for out, shards in jobs])
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, arg], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return [float(x) for x in json.loads(r.stdout.strip().splitlines()[-1])]


def test_zoo_merge_streams_a_zoo_larger_than_its_memory(tmp_path: Path) -> None:
    if not reset_peak_rss():
        pytest.skip("needs Linux /proc/self/clear_refs to measure the peak resident memory")
    _, small_total, small_shards = _write_shards(tmp_path / "quarter", N_COHORTS // 4)
    _, total, shards = _write_shards(tmp_path)
    out = tmp_path / "merged"
    small, full = _merge_peaks_mib([(tmp_path / "quarter" / "merged", small_shards), (out, shards)])
    total_mib = total / 2**20
    print(json.dumps({"weights_mib": total_mib, "merge_peak_extra_mib": full, "quarter_zoo": small}))
    # Measured: 75-77 MiB for the quarter zoo, then 30-31 MiB for the full one (Parquet's reading and writing
    # buffers, a part of 1 MiB, a row group a split; 44-49 MiB when it runs first in a fresh process). The
    # in-memory merge this replaced took 156 and 335 MiB here (447 MiB for the full zoo in a fresh process).
    assert total_mib == 128 and small_total == total // 4
    assert full < total_mib * 3 / 4 and full - small < total_mib / 6, (full, small, total_mib)

    # the merged zoo: every row once, sorted by run then epoch within each split, in groups of 64 rows
    zoo = load_zoo(out)
    meta = zoo.metadata()
    assert len(zoo) == 2 * COHORT * N_COHORTS
    for split in ("train", "validation", "test"):
        part = meta[meta["split"] == split]
        keys = list(zip(part["model_id"], part["checkpoint_epoch"], strict=True))
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        f = pq.ParquetFile(next((out / "data").glob(f"{split}-*.parquet")))
        sizes = [f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups)]
        assert set(sizes[:-1]) == {64} and 1 <= sizes[-1] <= 64
    assert (meta["split"] == "train").sum() == 2 * (meta["split"] == "test").sum()
    # weights travel with their rows: a row's weights are the ones written for it
    i = int(np.flatnonzero((meta["model_id"] == "m000005").to_numpy() & (meta["checkpoint_epoch"] == 1))[0])
    written = pq.read_table(_part_path(shards[0] / PARTS, 0)).to_pylist()
    expected = next(r for r in written if r["model_id"] == "m000005" and r["checkpoint_epoch"] == 1)
    assert zoo.state_dict(i)["layers.0.linear.weight"].equal(
        store.decode_weights(expected["weights"])["layers.0.linear.weight"]
    )
    manifest = json.loads((out / store.MANIFEST).read_text())
    counts = {"train": 4096, "validation": 2048, "test": 2048, "runs": 4096, "diverged": 0}
    assert manifest["counts"] == counts
    assert not any(out.rglob("*.tmp*")) and not (out / store.STAGING).exists()


def _rows(n: int, size: int, start: int = 0) -> pa.Table:
    return rows_to_table([{"model_id": f"m{start + i:03d}", "weights": b"w" * size} for i in range(n)])


def _groups(folder: Path) -> list[list[int]]:
    """Rows per row group, file by file."""
    out = []
    for f in sorted(folder.glob("*.parquet")):
        meta = pq.ParquetFile(f).metadata
        out.append([meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
    return out


def test_split_writer_groups_rows_the_same_however_they_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zoo_writer, "ROWS_PER_FILE", 20)  # files of 20 rows: the file boundary closes a group
    table = _rows(45, 100)
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    for folder in (whole, pieces):
        folder.mkdir()
    w = SplitWriter(whole, "train", 45, table.schema, row_group_size=8)
    w.write(table)
    w.close()
    w = SplitWriter(pieces, "train", 45, table.schema, row_group_size=8)
    for a, b in ((0, 1), (1, 4), (4, 17), (17, 18), (18, 45)):
        w.write(table.slice(a, b - a))
    w.close()
    assert _groups(whole) == _groups(pieces) == [[8, 8, 4], [8, 8, 4], [5]]
    assert sorted(p.name for p in whole.iterdir()) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert pa.concat_tables(pq.read_table(f) for f in sorted(pieces.iterdir())).equals(table)


def test_split_writer_keeps_large_rows_in_small_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zoo_writer, "ROW_GROUP_BYTES", 1000)
    table = pa.concat_tables([_rows(5, 300), _rows(1, 2500, 5), _rows(4, 10, 6)])
    w = SplitWriter(tmp_path, "test", 10, table.schema)
    for i in range(10):  # one row at a time: the groups are the same as for the whole table
        w.write(table.slice(i, 1))
    w.close()
    # 3 rows of 300 bytes fit in 1000, the 2500-byte row is a group of its own
    assert _groups(tmp_path) == [[3, 2, 1, 4]]
    with pytest.raises(InvalidInputError, match="more than the 9 rows"):
        SplitWriter(tmp_path / "x", "test", 9, table.schema).write(table)
    short = SplitWriter(tmp_path, "validation", 11, table.schema)
    short.write(table)
    with pytest.raises(InvalidInputError, match="10 rows written, 11 expected"):
        short.close()
    with pytest.raises(InvalidInputError, match="row_group_size"):
        SplitWriter(tmp_path, "test", 1, table.schema, row_group_size=0)


def test_merge_copies_parts_whose_runs_interleave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zooprobe.zoo.build as build

    _, _, shards = _write_shards(tmp_path, n_cohorts=3, cohort=5, shape=(4, 4), interleave=True)
    reads: list[list[str] | None] = []
    real = build._read_part
    monkeypatch.setattr(
        build, "_read_part", lambda path, columns=None: reads.append(columns) or real(path, columns)
    )
    merge_zoo(tmp_path / "kept", shards)
    assert sum(c is None for c in reads) == 3  # the parts are kept while rows of theirs are still to come
    reads.clear()
    monkeypatch.setattr(build, "PART_CACHE_BYTES", 0)  # no part kept: read again for each of its runs
    merge_zoo(tmp_path / "reread", shards)
    assert sum(c is None for c in reads) == 15  # a read per run: m000000 from part 0, m000001 from 1...
    for split in ("train", "validation", "test"):
        kept, reread = (
            pq.read_table(next((tmp_path / z / "data").glob(f"{split}-*"))) for z in ("kept", "reread")
        )
        assert kept.equals(reread)
        keys = list(zip(kept["model_id"].to_pylist(), kept["checkpoint_epoch"].to_pylist(), strict=True))
        assert keys == sorted(keys)
    assert len(load_zoo(tmp_path / "kept")) == 30


def test_merge_leaves_out_diverged_cohorts_and_survives_an_empty_zoo(tmp_path: Path) -> None:
    _, _, shards = _write_shards(tmp_path / "some", 3, cohort=4, shape=(2, 2), diverged=frozenset({1}))
    merge_zoo(tmp_path / "some" / "out", shards)
    manifest = json.loads((tmp_path / "some" / "out" / store.MANIFEST).read_text())
    assert manifest["diverged"] == ["m000004", "m000005", "m000006", "m000007"]
    assert manifest["counts"]["runs"] == 8 and manifest["counts"]["diverged"] == 4
    assert len(load_zoo(tmp_path / "some" / "out")) == 16  # 8 runs of 2 checkpoints
    _, _, shards = _write_shards(tmp_path / "none", 2, cohort=2, shape=(2, 2), diverged=frozenset({0, 1}))
    merge_zoo(tmp_path / "none" / "out", shards)  # every run diverged: a manifest that says so, no data
    manifest = json.loads((tmp_path / "none" / "out" / store.MANIFEST).read_text())
    assert manifest["counts"] == {"train": 0, "validation": 0, "test": 0, "runs": 0, "diverged": 4}
    assert not list((tmp_path / "none" / "out" / "data").glob("*.parquet"))
