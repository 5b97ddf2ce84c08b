"""Encoding speed of several encoders side by side, on the same models, in one process (``zooprobe encoder
bench --compare v2,v3``).

Each encoder is loaded by its source (a name of `zooprobe.list_encoders`, a folder or a Hub id), warmed up
on a few models (the first call builds its caches and pays one-time costs), then times `encode` over all the
models ``repeats`` times. A row reports models/s and ms per model, the best (min) and the median over the
repeats: the min is the machine's capability, the median shows how much the timing varied. Numbers are
comparable within one run only (same machine, same load, same models).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

WARMUP_MODELS = 8


def speed_row(name: str, encoder: Any, state_dicts: Sequence[Any], batch_size: int, repeats: int) -> dict:
    """Time `encoder.encode` over `state_dicts` ``repeats`` times after a warm-up: one row of the table."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not state_dicts:
        raise ValueError("no models to time")
    encoder.encode(list(state_dicts[:WARMUP_MODELS]), batch_size=batch_size)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode(list(state_dicts), batch_size=batch_size)
        seconds.append(time.perf_counter() - start)
    n = len(state_dicts)
    best, median = min(seconds), statistics.median(seconds)
    return {
        "encoder": name,
        "architecture": getattr(encoder, "architecture", "tokens"),
        "parameters": encoder.encoder.num_parameters(),
        "n_models": n,
        "repeats": repeats,
        "seconds": seconds,
        "models_per_s_best": n / best,
        "models_per_s_median": n / median,
        "ms_per_model_best": 1000 * best / n,
        "ms_per_model_median": 1000 * median / n,
    }


def compare_speed(
    sources: Sequence[str],
    state_dicts: Sequence[Any],
    batch_size: int,
    repeats: int = 3,
    loaded: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> list[dict]:
    """One `speed_row` per encoder source (in order; `loaded`: sources already loaded, by source)."""
    from zooprobe.api import load_encoder  # heavy: imports torch

    rows = []
    for source in sources:
        encoder = (loaded or {}).get(source) or load_encoder(source, progress=progress)
        rows.append(speed_row(str(source), encoder, state_dicts, batch_size, repeats))
    return rows


def speed_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The side-by-side table of `compare_speed` rows, as printable lines."""
    if not rows:
        return []
    r0 = rows[0]
    lines = [
        f"speed, side by side ({r0['n_models']} models, {r0['repeats']} timed runs each after a warm-up; "
        "best / median):",
        f"  {'encoder':<12} {'kind':<8} {'parameters':>11} {'models/s':>17} {'ms per model':>17}",
    ]
    for r in rows:
        rate = f"{r['models_per_s_best']:.1f} / {r['models_per_s_median']:.1f}"
        ms = f"{r['ms_per_model_best']:.2f} / {r['ms_per_model_median']:.2f}"
        kind = r["architecture"]
        lines.append(f"  {r['encoder']:<12} {kind:<8} {r['parameters']:>11,} {rate:>17} {ms:>17}")
    return lines


__all__ = ["WARMUP_MODELS", "compare_speed", "speed_lines", "speed_row"]
