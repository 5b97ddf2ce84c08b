"""The text and JSON of predictions: the lines ``zooprobe predict`` prints (`format_result`,
`format_predictions`, `domain_lines`, `result_rows`) and the ``--json`` document (`predictions_document`),
which the app shares."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from zooprobe.heads.head_loader import LoadedHead
from zooprobe.heads.uncertainty import DEFAULT_LEVEL


def _number(x: float) -> str:
    if not math.isfinite(x):
        return "unbounded" if math.isinf(x) else "undefined"
    return f"{x:.4g}" if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4) else f"{x:.4f}"


def _describe(entry: Mapping[str, Any]) -> str:
    kind = entry["kind"]
    if entry.get("predicted") is None and entry.get("note"):
        return str(entry["note"])
    if kind == "binary":
        return f"{'yes' if entry['predicted'] else 'no'}  (p = {entry['probability']:.3f})"
    if kind == "categorical":
        ranked = sorted(entry["probabilities"].items(), key=lambda kv: -kv[1])
        others = [(c, p) for c, p in ranked if c != entry["predicted"]]
        rest = ", ".join(f"{c} {p:.2f}" for c, p in others[:3]) + (", ..." if len(others) > 3 else "")
        return f"{entry['predicted']}  (p = {entry['probability']:.3f}" + (f"; {rest})" if rest else ")")
    if entry.get("log10"):
        return f"{_number(entry['value'])}  (log10 = {entry['predicted']:.3f})"
    return _number(entry["predicted"])


def _describe_interval(entry: Mapping[str, Any]) -> str:
    interval = entry.get("interval")
    if interval is None or entry.get("predicted") is None:
        return ""
    if interval["low"] is None:
        return "unbounded"
    if entry.get("log10"):
        return f"{_number(interval['value_low'])} - {_number(interval['value_high'])}"
    return f"{_number(interval['low'])} - {_number(interval['high'])}"


def _describe_reliability(entry: Mapping[str, Any]) -> str:
    rel = entry.get("reliability")
    if rel is None:
        return "unknown"
    name = "R²" if rel["metric"] == "r2" else rel["metric"]
    if rel["test"] is None:
        return f"test {name} undefined"
    text = f"test {name} {rel['test']:.2f}"
    if rel.get("majority") is not None:
        text += f" (majority class {rel['majority']:.2f})"
    return text


def domain_lines(result: Mapping[str, Any]) -> list[str]:
    """``in domain: yes``, or ``OUT OF DOMAIN`` and one line per reason (or that the head has no domain)."""
    if result["in_domain"] is True:
        return ["in domain: yes (architecture, weight statistics and representation like the training zoo's)"]
    reasons = [f"  - {reason}" for reason in result["domain"]["reasons"]]
    if result["in_domain"] is None:
        return ["in domain: unknown", *reasons]
    return ["OUT OF DOMAIN: the predictions below are extrapolations, not estimates:", *reasons]


def format_predictions(
    results: Sequence[Mapping[str, Any]], *, level: float | None = None, title: str | None = None
) -> list[str]:
    """Terminal lines for `predict_files` results: per file its domain and one table (target, prediction,
    interval, test score). `title` (e.g. the head) is printed under each file name."""
    lines: list[str] = []
    for result in results:
        if lines:
            lines.append("")
        lines.append(str(result["file"]))
        lines += format_result(result, level=level, title=title)
    return lines


def result_rows(
    result: Mapping[str, Any], *, level: float | None = None
) -> tuple[tuple[str, str, str, str], list[tuple[str, str, str, str]]]:
    """(header, rows) of one file's result under one head: per target its prediction (with probabilities
    or natural units), interval and test score, as `format_result` prints them (the app shows the same)."""
    targets = result["targets"]
    rows = [
        (name, _describe(e), _describe_interval(e), _describe_reliability(e)) for name, e in targets.items()
    ]
    shown_level = level or next(
        (e["interval"]["level"] for e in targets.values() if e.get("interval")), DEFAULT_LEVEL
    )
    return ("target", "prediction", f"{shown_level:.0%} interval", "reliability"), rows


def predictions_document(
    heads: Sequence[tuple[str, str | None, LoadedHead, list[dict[str, Any]]]],
    level: float,
    unfinished: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON document of ``zooprobe predict --json`` (also the app's download): per head (source as
    given, revision, loaded head, its `predict_files_by_head` results) one document with ``head``,
    ``revision``, ``task``, ``kind``, ``level``, ``targets`` and ``predictions``; one head's document alone,
    several under ``{"heads": [...]}``. `unfinished` maps a head source to why its run is not finished."""
    docs = []
    for source, revision, head, results in heads:
        doc: dict[str, Any] = {
            "head": source,
            "revision": revision,
            "task": head.spec.task,
            "kind": head.kind,
            "level": level,
            "targets": head.spec.names,
            "predictions": results,
        }
        if unfinished and source in unfinished:
            doc["unfinished_run"] = unfinished[source]
        docs.append(doc)
    return docs[0] if len(docs) == 1 else {"heads": docs}


def format_result(
    result: Mapping[str, Any], *, level: float | None = None, title: str | None = None
) -> list[str]:
    """The lines of one file's result under one head (see `format_predictions`), indented."""
    lines = [f"  {title}"] if title else []
    lines += [f"  {line}" for line in domain_lines(result)]
    header, rows = result_rows(result, level=level)
    widths = [max(len(header[c]), *(len(r[c]) for r in rows)) for c in range(4)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    for note in result.get("notes", []):
        lines.append(f"  note: {note}")
    return lines
