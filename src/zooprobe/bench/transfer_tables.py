"""The transfer benchmark's markdown (see zooprobe.bench.transfer): the summary per group and the per-fold
tables, from the json document."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from zooprobe.bench.transfer_plan import ENCODER_METHODS, GROUPS, METHODS, NO_ENCODER, cell_key


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def _row_labels(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(encoder, method) rows: encoders first (each with its gain rows), then the encoder-free methods."""
    methods = doc.get("methods", list(METHODS))
    rows: list[tuple[str, str]] = []
    for enc, info in doc.get("encoders", {}).items():
        if not info.get("loaded"):
            continue
        for m in methods:
            if m in ENCODER_METHODS:
                rows.append((enc, m))
                if m == "stats+rep+gbm" and "stats+gbm" in methods:
                    rows.append((enc, "gain"))
                if m == "zero-shot stats+rep+gbm" and "zero-shot stats+gbm" in methods:
                    rows.append((enc, "zero-shot gain"))
    rows += [(NO_ENCODER, m) for m in methods if m not in ENCODER_METHODS]
    return rows


def fold_value(doc: dict[str, Any], fold: str, encoder: str, method: str, target: str) -> float | None:
    """The value of one table cell for one fold (gain rows: the difference of the two methods)."""

    def get(m: str, e: str) -> float | None:
        cell = doc["cells"].get(cell_key(fold, m, e))
        return None if cell is None else cell["targets"].get(target, {}).get("value")

    if method in ("gain", "zero-shot gain"):
        prefix = "zero-shot " if method.startswith("zero-shot") else ""
        a, b = get(f"{prefix}stats+rep+gbm", encoder), get(f"{prefix}stats+gbm", NO_ENCODER)
        return None if a is None or b is None else a - b
    return get(method, encoder)


def tables(doc: dict[str, Any]) -> list[str]:
    """The summary (means over a group's folds) and the per-fold tables, markdown lines."""
    folds = doc.get("folds", {})
    groups = [g for g in GROUPS if any(f["group"] == g for f in folds.values())]
    rows = _row_labels(doc)
    lines: list[str] = []
    for name, target in doc.get("targets", {}).items():
        lines += [f"### {target['label']} (`{name}`): mean over the folds of each group", ""]
        lines += ["| encoder | method | " + " | ".join(groups) + " |", "|---|---|" + "---|" * len(groups)]
        for enc, method in rows:
            cells = []
            for g in groups:
                names = [f for f, d in folds.items() if d["group"] == g]
                vals = [fold_value(doc, f, enc, method, name) for f in names]
                ok = [v for v in vals if v is not None]
                cells.append(
                    "n/a"
                    if not ok
                    else f"{np.mean(ok):.3f}" + ("" if len(ok) == len(vals) else f" ({len(ok)}/{len(vals)})")
                )
            lines.append(f"| {enc} | {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Per fold", ""]
    cols = [f"{m}" if e == NO_ENCODER else f"{e}: {m}" for e, m in rows]
    for name, target in doc.get("targets", {}).items():
        lines += [f"### {target['label']} (`{name}`)", ""]
        lines += ["| group | fold | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        for fold, d in folds.items():
            vals = [_fmt(fold_value(doc, fold, e, m, name)) for e, m in rows]
            lines.append(f"| {d['group']} | {fold} | " + " | ".join(vals) + " |")
        lines.append("")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    inputs = ", ".join(f"`{v[0]}`" for v in doc.get("inputs", {}).values())
    lines = [
        "# zooprobe bench transfer",
        "",
        f"Zoos: {inputs}. Held-out test splits; n/a: a side lacks the target or it is constant there "
        "(docs/transfer.md). gain = stats+rep+gbm minus stats+gbm; `(k/n)`: k of n folds defined.",
        "",
    ]
    skipped = {e: i.get("note", "") for e, i in doc.get("encoders", {}).items() if not i.get("loaded")}
    for enc, note in skipped.items():
        lines.append(f"- encoder `{enc}`: not loadable ({note}); left out")
    for enc, info in doc.get("encoders", {}).items():
        for source, note in (info.get("cannot_read") or {}).items():
            lines.append(f"- encoder `{enc}` cannot read `{source}` ({note}): its cells there are n/a")
    if len(lines) > 4:
        lines.append("")
    return "\n".join([*lines, *tables(doc)]) + "\n"
