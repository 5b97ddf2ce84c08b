"""The app's figures (matplotlib, drawn without pyplot so no window or global state is involved).

- `corpus_figure`: where each model sits in its head's training zoo. Per continuous target (accuracy,
  learning rate, ...) the distribution of the zoo's train models, the model's prediction and its interval;
  when the zoo is not on this machine, the prediction and its interval alone, saying so. Then, from the
  head's applicability domain (`zooprobe.heads.domain`, always saved with the head), the model's k-NN
  distance to the training models in weight-statistics and representation space against the held-out
  in-distribution distances and the threshold.
- `layer_figure`: per-layer weight statistics (first, middle and last main layer: weight mean, std,
  init-invariant scaled std, bias std) of each model against the 5/25/50/75/95% quantiles of the training
  models', which the domain's statistics space holds (standardized; un-standardized here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from zooprobe.app.core import AppHeads, FileAudit
from zooprobe.heads.domain import KnnSpace
from zooprobe.tokens.statistics import feature_names

MAX_TARGET_PANELS = 4
LAYER_BLOCKS = ("first", "middle", "last")
LAYER_STATS = (
    ("w.mean", "weight mean"),
    ("w.std", "weight std"),
    ("w.scaled_std", "weight std x sqrt(fan-in)"),
    ("b.std", "bias std"),
)
COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _ok(audits: Sequence[FileAudit]) -> list[FileAudit]:
    return [a for a in audits if a.results is not None]


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _message_figure(text: str) -> Figure:
    fig = Figure(figsize=(8, 1.6))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def _continuous_targets(heads: AppHeads) -> list[tuple[int, Any]]:
    """(head index, target spec) of the continuous targets, each name once (the first head having it)."""
    seen: set[str] = set()
    out = []
    for k, head in enumerate(heads.heads):
        for t in head.spec.targets:
            if t.kind == "continuous" and t.name not in seen:
                seen.add(t.name)
                out.append((k, t))
    return out[:MAX_TARGET_PANELS]


def _domain_spaces(heads: AppHeads) -> tuple[int, dict[str, KnnSpace]] | None:
    for k, head in enumerate(heads.heads):
        domain = head.trust.domain if head.trust is not None else None
        if domain is not None and domain.spaces:
            return k, domain.spaces
    return None


def _target_panel(ax: Any, heads: AppHeads, k: int, t: Any, ok: Sequence[FileAudit]) -> None:
    """One continuous target: the training zoo's histogram, each model's prediction and interval."""
    corpus = heads.corpora[k]
    meta = corpus.metadata
    unit = "log10 " if t.log10 else ""
    if meta is not None and t.name in meta.columns:
        values = np.asarray(meta[t.name], dtype=np.float64)
        if t.log10:
            values = np.log10(values[values > 0])
        values = values[np.isfinite(values)]
        ax.hist(values, bins=30, color="#bbbbbb", label=f"training zoo ({len(values)})")
        ax.set_title(f"{t.name}: prediction in the zoo", fontsize=10)
    else:
        ax.set_title(f"{t.name} (zoo not here)", fontsize=10)
        ax.set_yticks([])
    for j, audit in enumerate(ok):
        entry = audit.results[k]["targets"][t.name]  # type: ignore[index]
        x = entry.get("predicted")
        if x is None:
            continue
        color = COLORS[j % len(COLORS)]
        interval = entry.get("interval") or {}
        if interval.get("low") is not None and interval.get("high") is not None:
            ax.axvspan(interval["low"], interval["high"], color=color, alpha=0.15)
        ax.axvline(x, color=color, lw=2, label=audit.name)
    ax.set_xlabel(f"{unit}{t.name}")
    _legend(ax)


def _distance_panel(ax: Any, k: int, name: str, space: KnnSpace, ok: Sequence[FileAudit]) -> None:
    """One space of head ``k``'s applicability domain: held-out distances, threshold, each model's."""
    ref = np.asarray(space.reference, dtype=np.float64)
    ref = ref[np.isfinite(ref) & (ref > 0)]
    distances = [
        float(a.results[k]["domain"][name]["distance"])  # type: ignore[index]
        for a in ok
        if name in a.results[k]["domain"]  # type: ignore[index]
    ]
    everything = np.concatenate([ref, [d for d in distances if d > 0], [space.threshold]])
    bins = np.geomspace(everything.min(), everything.max() * 1.01, 30) if len(everything) > 1 else 30
    ax.hist(ref, bins=bins, color="#bbbbbb", label="held-out zoo models")
    ax.set_xscale("log")
    ax.axvline(space.threshold, color="black", ls="--", lw=1, label="domain threshold")
    for j, (audit, d) in enumerate(zip(ok, distances, strict=False)):
        ax.axvline(max(d, everything.min()), color=COLORS[j % len(COLORS)], lw=2, label=audit.name)
    what = "weight statistics" if name == "statistics" else "encoder representation"
    ax.set_title(f"distance to the zoo: {what}", fontsize=10)
    ax.set_xlabel(f"k-NN distance (k={space.k})")
    _legend(ax)


def corpus_figure(heads: AppHeads, audits: Sequence[FileAudit]) -> Figure:
    """Where each readable model sits in its head's training zoo (module docs)."""
    ok = _ok(audits)
    if not ok:
        return _message_figure("no readable checkpoint: nothing to place in the training zoo")
    targets = _continuous_targets(heads)
    found = _domain_spaces(heads)
    spaces = list(found[1].items()) if found else []
    n = len(targets) + len(spaces)
    if n == 0:
        return _message_figure("the heads predict no continuous target and have no applicability domain")
    cols = min(3, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.92, wspace=0.25, hspace=0.55)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    for ax, (k, t) in zip(axes, targets, strict=False):
        _target_panel(ax, heads, k, t, ok)
    for ax, (name, space) in zip(axes[len(targets) :], spaces, strict=True):
        _distance_panel(ax, found[0] if found else 0, name, space, ok)
    return fig


def reference_statistics(heads: AppHeads) -> np.ndarray | None:
    """The training models' weight statistics (``[N, F]``, `feature_names` order), un-standardized from
    the first head's domain; None when no head has a statistics space of that size."""
    found = _domain_spaces(heads)
    if found is None or "statistics" not in found[1]:
        return None
    space = found[1]["statistics"]
    raw = np.asarray(space.train, dtype=np.float64) * space.scale + space.mean
    return raw if raw.ndim == 2 and raw.shape[1] == len(feature_names()) else None


def layer_figure(heads: AppHeads, audits: Sequence[FileAudit]) -> Figure:
    """Per-layer weight statistics of each readable model against the training zoo's quantiles."""
    ok = [a for a in _ok(audits) if a.statistics is not None]
    if not ok:
        return _message_figure("no readable checkpoint: no weight statistics to show")
    reference = reference_statistics(heads)
    index = {name: i for i, name in enumerate(feature_names())}
    fig = Figure(figsize=(4.0 * len(LAYER_STATS), 3.4))
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.12, top=0.82, wspace=0.3)
    for p, (stat, label) in enumerate(LAYER_STATS):
        ax = fig.add_subplot(1, len(LAYER_STATS), p + 1)
        xs = np.arange(len(LAYER_BLOCKS))
        if reference is not None:
            for x, block in zip(xs, LAYER_BLOCKS, strict=True):
                present = reference[:, index[f"{block}.present"]] > 0.5
                values = reference[present, index[f"{block}.{stat}"]]
                if not len(values):
                    continue
                q5, q25, q50, q75, q95 = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
                ax.vlines(x, q5, q95, color="#999999", lw=1)
                ax.bar(x, q75 - q25, bottom=q25, width=0.4, color="#dddddd", edgecolor="#999999")
                ax.hlines(q50, x - 0.2, x + 0.2, color="#555555", lw=1.5)
        for j, audit in enumerate(ok):
            stats = audit.statistics
            assert stats is not None
            for x, block in zip(xs, LAYER_BLOCKS, strict=True):
                if stats[index[f"{block}.present"]] > 0.5:
                    ax.plot(
                        x + 0.08 * (j - (len(ok) - 1) / 2),
                        stats[index[f"{block}.{stat}"]],
                        "o",
                        color=COLORS[j % len(COLORS)],
                        label=audit.name if x == 0 else None,
                    )
        ax.set_xticks(xs, [f"{b} layer" for b in LAYER_BLOCKS], fontsize=8)
        ax.set_title(label, fontsize=10)
        if p == 0:
            _legend(ax)
    note = (
        "boxes: the training zoo's 25-75% (line: median, whiskers: 5-95%)"
        if reference is not None
        else "no head has an applicability domain: no reference quantiles"
    )
    fig.suptitle(f"Per-layer weight statistics; {note}", fontsize=10)
    return fig


__all__ = ["corpus_figure", "layer_figure", "reference_statistics"]
