"""Split leaks: identical weights (by content hash) in more than one split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zooprobe.zoo.schema import (
    SPLITS,
)


# ---------------------------------------------------------------------------------------------- leaks
@dataclass(frozen=True)
class SplitLeak:
    """Checkpoints with identical stored weights (one content hash) in more than one split."""

    hash: str
    model_ids: tuple[str, ...]
    splits: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"hash": self.hash, "model_ids": list(self.model_ids), "splits": list(self.splits)}


def find_split_leaks(
    hashes: Sequence[str], model_ids: Sequence[str], splits: Sequence[str]
) -> list[SplitLeak]:
    """Content hashes that occur in more than one split (one entry per hash, in order of first occurrence).

    A copy of a training model in validation or test is scored on what the head was trained on, so its
    metrics are inflated; copies within one split are not a leak.
    """
    rows: dict[str, list[tuple[str, str]]] = {}
    for h, mid, split in zip(hashes, model_ids, splits, strict=True):
        rows.setdefault(h, []).append((str(mid), str(split)))
    leaks = []
    for h, members in rows.items():
        in_splits = {split for _, split in members}
        if len(in_splits) > 1:
            ids = tuple(dict.fromkeys(mid for mid, _ in members))
            leaks.append(SplitLeak(h, ids, tuple(s for s in SPLITS if s in in_splits)))
    return leaks


def describe_split_leaks(leaks: Sequence[SplitLeak], limit: int = 3) -> str:
    """A few leaks for a message: ``'m3' (train) = 'm9' (test); ...``."""
    shown = []
    for leak in leaks[:limit]:
        ids = " = ".join(repr(mid) for mid in leak.model_ids[:4])
        shown.append(f"{ids} in {'/'.join(leak.splits)}")
    more = f"; and {len(leaks) - limit} more" if len(leaks) > limit else ""
    return "; ".join(shown) + more
