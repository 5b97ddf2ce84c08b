"""The cohort parts of a zoo build (zooprobe.zoo.build): one Parquet file per trained cohort under
.parts, written atomically, read back by finalize; the build's report and shard option."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from zooprobe.core.files import atomic_path
from zooprobe.errors import ConfigError, ZooFormatError
from zooprobe.zoo.content import table_sha256
from zooprobe.zoo.store import (
    count_params,
    encode_weights,
    rows_to_table,
)
from zooprobe.zoo.train import Checkpoint, CohortResult

PARTS = ".parts"


CONFIG_FILE = "zoo_config.yaml"


@dataclass
class BuildReport:
    root: Path
    cohorts_total: int
    cohorts_built: int = 0
    cohorts_skipped: int = 0
    models: int = 0
    checkpoints: int = 0
    diverged: list[str] = field(default_factory=list)
    seconds: float = 0.0
    finalized: bool = False
    workers: int = 1
    rank: int = 0  # under torchrun: this process's rank, of world_size
    world_size: int = 1

    def summary(self) -> str:
        parts = [
            f"{self.cohorts_built} cohort(s) trained, {self.cohorts_skipped} already done "
            f"(of {self.cohorts_total}) in {self.seconds:.1f}s"
            + (f" by {self.workers} worker processes" if self.workers > 1 else "")
            + (f" (process {self.rank} of {self.world_size} under torchrun)" if self.world_size > 1 else ""),
        ]
        if self.diverged:
            parts.append(f"{len(self.diverged)} run(s) diverged (non-finite weights) and were left out")
        parts.append(f"zoo written to {self.root}" if self.finalized else f"parts in {self.root / PARTS}")
        return "; ".join(parts)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    if text in (None, ""):
        return None
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n


def checkpoint_rows(result: CohortResult) -> list[dict]:
    return [_row(c) for c in result.checkpoints]


def _row(c: Checkpoint) -> dict:
    m = c.metrics
    row = c.spec.metadata()
    row.update(m)
    row.update(
        checkpoint_epoch=c.epoch,
        is_final=c.is_final,
        generalization_gap=m["train_accuracy"] - m["test_accuracy"],
        num_params=count_params(c.state_dict),
        train_time_s=c.train_time_s,
        weights=encode_weights(c.state_dict, where=f"model {c.spec.model_id} epoch {c.epoch}"),
        split=c.spec.split,
    )
    return row


def _part_schema() -> pa.Schema:
    schema = rows_to_table([]).schema
    return schema.append(pa.field("split", pa.string()))


def _part_path(parts: Path, cohort: int) -> Path:
    return parts / f"cohort-{cohort:06d}.parquet"


def _part_finished(path: Path) -> bool:
    """Whether cohort part `path` is finished: parts are written atomically, so a file there is whole unless
    damaged since; one whose Parquet footer does not read is deleted, so that it is built again."""
    if not path.exists():
        return False
    try:
        pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError):
        path.unlink(missing_ok=True)
        return False
    return True


def _read_part(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns, use_threads=False)
    except (pa.ArrowInvalid, OSError) as e:
        raise ZooFormatError(f"{path} is damaged ({e}); delete it and build that cohort again") from e


def _write_part(path: Path, result: CohortResult) -> None:
    rows = checkpoint_rows(result)
    schema = _part_schema()
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    meta = {"diverged": json.dumps([s.model_id for s in result.diverged]), "sha256": table_sha256(table)}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
