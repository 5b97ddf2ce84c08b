"""The numbers and figures of a run's report (zooprobe.report.html): metric values for display, and the PNG
figures (predicted vs true, confusion matrices, per-pattern F1, learning curves), drawn without pyplot."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

UNDEFINED = "undefined"


_DPI = 100


# ------------------------------------------------------------------------------------------ numbers
def _value(v: Any) -> float:
    """A metric as a float: null (NaN in metrics.json) and non-numbers become NaN, "inf" strings inf."""
    if isinstance(v, bool) or v is None:
        return math.nan
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str) and v in ("inf", "-inf"):
        return float(v)
    return math.nan


def fmt(v: Any, digits: int = 4) -> str:
    """A metric for display: 4 decimals, NaN / null as "undefined"."""
    x = _value(v)
    if math.isnan(x):
        return UNDEFINED
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** -(digits - 1)):
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}"


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.array([_value(v) for v in values], dtype=np.float64)


# ------------------------------------------------------------------------------------------ figures
def _new_figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: matplotlib
    from matplotlib.figure import Figure  # heavy: matplotlib

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    fig.clear()  # free the artists (no pyplot: nothing else holds the figure)
    return buf.getvalue()


def scatter_png(
    name: str, true: Sequence[Any], predicted: Sequence[Any], log10: bool, r2: Any, tau: Any
) -> bytes:
    """Predicted vs true (test split) with the identity line; R² and Kendall tau in the title."""
    t, p = _floats(true), _floats(predicted)
    keep = np.isfinite(t) & np.isfinite(p)
    fig, ax = _new_figure(4.8, 4.4)
    label = f"log10({name})" if log10 else name
    if keep.any():
        t, p = t[keep], p[keep]
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        lo, hi = lo - pad, hi + pad
        ax.plot([lo, hi], [lo, hi], linestyle="--", color="0.5", linewidth=1, label="identity (y = x)")
        ax.scatter(t, p, s=22, alpha=0.8, color="tab:blue", edgecolors="none", label="test models")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.legend(loc="upper left", fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no test model has a true value", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_title(f"{name} (test, n = {int(keep.sum())})\nR² = {fmt(r2, 3)}, Kendall τ = {fmt(tau, 3)}")
    ax.grid(alpha=0.3)
    return _png(fig)


def confusion_counts(
    true: Sequence[Any], probabilities: Sequence[Sequence[float]], n_classes: int
) -> np.ndarray:
    """Counts [true class, predicted class] (argmax of the probabilities); missing truths (-1) left out."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    t = _floats(true)
    probs = np.asarray(probabilities, dtype=np.float64).reshape(len(t), n_classes) if len(t) else None
    for i, y in enumerate(t):
        if not math.isfinite(y) or y < 0 or y >= n_classes or probs is None:
            continue
        cm[int(y), int(np.argmax(probs[i]))] += 1
    return cm


def confusion_png(name: str, classes: Sequence[str], cm: np.ndarray, accuracy: Any, macro_f1: Any) -> bytes:
    """A confusion matrix with counts in the cells and class names on the axes."""
    n = len(classes)
    side = max(3.6, 0.55 * n + 2.4)
    fig, ax = _new_figure(side + 0.8, side)
    image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, int(cm.max())))
    fig.colorbar(image, ax=ax, shrink=0.8, label="models")
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(c) for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    threshold = cm.max() / 2 if cm.max() else 1
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if cm[i, j] > threshold else "black",
            )
    ax.set_title(
        f"{name} (test, n = {int(cm.sum())})\naccuracy = {fmt(accuracy, 3)}, macro F1 = {fmt(macro_f1, 3)}"
    )
    return _png(fig)


def f1_bars_png(patterns: Sequence[str], validation: Mapping[str, Any], test: Mapping[str, Any]) -> bytes:
    """Horizontal F1 bars per pattern (validation and test); undefined F1 is written, not drawn as 0."""
    n = len(patterns)
    fig, ax = _new_figure(6.4, max(2.6, 0.62 * n + 1.4))
    y = np.arange(n)
    height = 0.38
    for offset, (split, values, color) in enumerate(
        (("validation", validation, "tab:orange"), ("test", test, "tab:blue"))
    ):
        pos = y + (offset - 0.5) * height
        vals = np.array([_value(values.get(p)) for p in patterns])
        defined = np.isfinite(vals)
        ax.barh(pos[defined], vals[defined], height=height, color=color, label=split)
        for k in range(n):
            if defined[k]:
                ax.text(vals[k] + 0.01, pos[k], f"{vals[k]:.2f}", va="center", fontsize=8)
            else:
                ax.text(
                    0.01,
                    pos[k],
                    f"{UNDEFINED} ({split})",
                    va="center",
                    fontsize=8,
                    color="0.35",
                    style="italic",
                )
    ax.set_yticks(y, list(patterns))
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("F1")
    ax.set_title("per-pattern F1 (validation and test)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def learning_curves_png(history: Sequence[Mapping[str, Any]], monitor: str, best_epoch: Any) -> bytes:
    """Train loss per epoch, validation loss and the monitored metric per evaluation, best epoch marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: matplotlib
    from matplotlib.figure import Figure  # heavy: matplotlib

    two = monitor != "loss"
    fig = Figure(figsize=(10.0 if two else 5.6, 4.0), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if two else 1, squeeze=False)[0]
    epochs = [int(r.get("epoch", i)) for i, r in enumerate(history)]
    train_loss = _floats([r.get("train", {}).get("loss") for r in history])
    evaluated = [(e, r["validation"]) for e, r in zip(epochs, history, strict=True) if r.get("validation")]
    val_epochs = [e for e, _ in evaluated]
    val_loss = _floats([v.get("loss") for _, v in evaluated])
    best = int(best_epoch) if isinstance(best_epoch, int | float) and best_epoch >= 1 else None

    ax = axes[0]
    ax.plot(epochs, train_loss, marker="o", markersize=3, label="train loss (per epoch)")
    ax.plot(val_epochs, val_loss, marker="s", markersize=4, label="validation loss (per evaluation)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss" + (" (monitored: validation loss)" if not two else ""))
    panels = [(ax, val_epochs, val_loss)]
    if two:
        metric = _floats([v.get(monitor) for _, v in evaluated])
        ax2 = axes[1]
        ax2.plot(
            val_epochs, metric, marker="s", markersize=4, color="tab:green", label=f"validation {monitor}"
        )
        ax2.set_xlabel("epoch")
        ax2.set_ylabel(monitor)
        ax2.set_title(f"monitored metric: validation {monitor}")
        panels = [(ax, val_epochs, val_loss), (ax2, val_epochs, metric)]
    from matplotlib.ticker import MaxNLocator  # heavy: matplotlib

    for i, (a, xs, ys) in enumerate(panels):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best is not None:
            a.axvline(best, color="tab:red", linestyle=":", linewidth=1.2, label=f"best epoch ({best})")
            if best in xs and (i == len(panels) - 1) and math.isfinite(ys[xs.index(best)]):
                a.plot(
                    [best], [ys[xs.index(best)]], marker="*", markersize=13, color="tab:red", linestyle="none"
                )
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    return _png(fig)
