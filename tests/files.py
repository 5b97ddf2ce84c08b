"""Small file writers the tests share (inputs a user would hand to zooprobe)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A CSV file with a header from the first row's keys; returns `path`."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# A flat-vector zoo's pieces (`zooprobe zoo import-flat`): a small torch MLP's layout, its vector width,
# and metadata rows of runs with two checkpoints each.
TORCH_LAYOUT = [("0.weight", (3, 4)), ("0.bias", (3,)), ("2.weight", (2, 3)), ("2.bias", (2,))]
WIDTH = 12 + 3 + 6 + 2


def json_layout(path: Path, entries: list[tuple[str, tuple[int, ...]]] = TORCH_LAYOUT) -> Path:
    """A JSON layout (name, shape, offset per entry) of ``entries`` packed in order; returns `path`."""
    items, offset = [], 0
    for name, shape in entries:
        items.append({"name": name, "shape": list(shape), "offset": offset})
        offset += math.prod(shape)
    path.write_text(json.dumps({"layout": items}))
    return path


def metadata_rows(n_runs: int, epochs: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    """Metadata of ``n_runs`` runs (``m0``, ``m1``...) x ``epochs``, run-major, with a ``split`` column."""
    return [
        {
            "model_id": f"m{r}",
            "checkpoint_epoch": e,
            "test_accuracy": 0.1 * r + 0.01 * e,
            "l2": 10.0**-r,
            "optimizer": "Adam" if r % 2 else "SGD",
            "split": ["train", "validation", "test"][r % 3],
            "note": f"run {r}",
        }
        for r in range(n_runs)
        for e in epochs
    ]
