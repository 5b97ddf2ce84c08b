"""The training batches of a head-training epoch: a seeded permutation of a split's rows, or, for a split
streamed from its zoo (`zooprobe.training.data_loader.SplitData.streamed`), an order that reads each row
group once per epoch while batches still mix several groups."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zooprobe.training.data_loader import SplitData

STREAM_GROUPS = 8
"""Row groups whose rows are shuffled together when fine-tuning streams a split (`train_batches`); fewer
when that many would not fit the zoo's `RowGroupCache`."""


def train_batches(split: SplitData, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The row indices of every training batch of an epoch, drawn from a generator seeded by ``(seed,
    epoch)`` (so a resumed run sees the same batches). In memory: a random permutation of the rows. Streamed
    (`SplitData.streamed`): the row groups in random order, and the rows of every `STREAM_GROUPS` consecutive
    groups shuffled together, so each group is read once per epoch while batches still mix several groups."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    n = len(split)
    perm = _stream_order(split.zoo, gen) if split.streamed else torch.randperm(n, generator=gen).numpy()
    return [perm[s : s + batch_size] for s in range(0, n, batch_size)]


def _stream_order(zoo: Any, gen: torch.Generator) -> np.ndarray:
    groups = zoo.row_groups()
    ids, members = np.unique(groups, return_inverse=True)
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    mean_bytes = zoo.weight_bytes() / len(ids)
    cache = zoo.cache
    window = min(STREAM_GROUPS, cache.max_groups, max(1, int(cache.max_bytes // max(mean_bytes, 1.0))))
    window = max(1, window)
    rows_of = [np.flatnonzero(members == k) for k in range(len(ids))]
    order = torch.randperm(len(ids), generator=gen).numpy()
    parts = []
    for s in range(0, len(order), window):
        rows = np.concatenate([rows_of[k] for k in order[s : s + window]])
        parts.append(rows[torch.randperm(len(rows), generator=gen).numpy()])
    return np.concatenate(parts)


__all__ = ["STREAM_GROUPS", "train_batches"]
