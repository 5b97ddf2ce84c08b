"""The result of ``zooprobe bench`` (`zooprobe.bench.compare`): every number by task, method and metric, the
comparison table and the verdicts against the quality targets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from zooprobe.bench.literature import literature_table
from zooprobe.bench.methods import METHODS
from zooprobe.heads.targets import TaskSpec
from zooprobe.heads.uncertainty import DEFAULT_LEVEL
from zooprobe.training.evaluator import lower_is_better

#: (task, metric) where the representation must add information beyond the statistics, and by how much.
GAIN_TARGETS: tuple[tuple[str, str], ...] = (("accuracy", "r2"), ("hyperparameters", "learning_rate/r2"))
GAIN_TARGET = 0.03
#: The issue's quality targets: (task, metric) where the fine-tuned head should at least match stats+gbm.
QUALITY_TARGETS: tuple[tuple[str, str], ...] = (
    ("accuracy", "r2"),
    ("accuracy", "kendall_tau"),
    ("hyperparameters", "learning_rate/r2"),
    ("hyperparameters", "weight_decay/r2"),
    ("hyperparameters", "optimizer/accuracy"),
    ("hyperparameters", "activation/accuracy"),
)


@dataclass
class CompareResult:
    zoo: str
    encoder: str
    n_models: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """task -> method -> metric -> value (test split)."""
    validation: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """The same on the validation split (choices are made there; test confirms them)."""
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    """task -> method -> wall seconds (features are timed once, in ``featurize``)."""
    featurize_seconds: float = math.nan
    reference: str | None = None
    """``literature``: `table` also shows the published numbers (`zooprobe.bench.literature`)."""

    def table(self) -> list[str]:
        lines = comparison_table(self)
        if self.reference == "literature":
            lines += ["", *literature_table(self.metrics, self.zoo, self.n_models.get("test"))]
        return lines

    def quality(self) -> list[str]:
        lines = []
        if any("stats+rep+gbm" in by_method for by_method in self.metrics.values()):
            lines.append("stats+rep+gbm vs stats+gbm (target: a gain of at least 0.03 R²):")
            for task, metric in GAIN_TARGETS:
                with_rep = self.metrics.get(task, {}).get("stats+rep+gbm", {}).get(metric, math.nan)
                stats = self.metrics.get(task, {}).get("stats+gbm", {}).get(metric, math.nan)
                gain = with_rep - stats
                verdict = (
                    "not measured"
                    if math.isnan(gain)
                    else ("met" if gain >= GAIN_TARGET else f"missed by {GAIN_TARGET - gain:.4f}")
                )
                val = self.validation.get(task, {})
                val_gain = val.get("stats+rep+gbm", {}).get(metric, math.nan) - val.get("stats+gbm", {}).get(
                    metric, math.nan
                )
                lines.append(
                    f"  {task} {metric}: gain {gain:+.3f} ({with_rep:.3f} vs {stats:.3f}): {verdict}"
                    + ("" if math.isnan(val_gain) else f"; on validation {val_gain:+.3f}")
                )
        for method in ("finetune", "finetune+stats"):
            if not any(method in by_method for by_method in self.metrics.values()):
                continue
            lines.append(f"{method} head vs stats+gbm (target: at least match):")
            for task, metric in QUALITY_TARGETS:
                ft = self.metrics.get(task, {}).get(method, {}).get(metric, math.nan)
                gbm = self.metrics.get(task, {}).get("stats+gbm", {}).get(metric, math.nan)
                if math.isnan(ft) or math.isnan(gbm):
                    verdict = "not measured"
                else:
                    verdict = "met" if ft >= gbm else f"missed by {gbm - ft:.3f}"
                lines.append(f"  {task} {metric}: {method} {ft:.3f} vs stats+gbm {gbm:.3f}: {verdict}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "zoo": self.zoo,
            "encoder": self.encoder,
            "n_models": self.n_models,
            "featurize_seconds": self.featurize_seconds,
            "metrics": self.metrics,
            "validation": self.validation,
            "seconds": self.seconds,
        }


def _rows_for(task: str, spec: TaskSpec) -> list[str]:
    if task == "patterns":
        rows = [f"f1/{n}" for n in spec.names] + [f"roc_auc/{n}" for n in spec.names]
        return [*rows, "macro_f1", "macro_roc_auc", "subset_accuracy", "macro_ece"]
    if task == "accuracy":
        return ["r2", "kendall_tau", "mae", "coverage", "interval_width"]
    rows = []
    for t in spec.targets:
        rows += (
            [f"{t.name}/{m}" for m in ("r2", "kendall_tau", "mae", "coverage", "interval_width")]
            if t.kind == "continuous"
            else [
                f"{t.name}/accuracy",
                f"{t.name}/macro_f1",
                f"{t.name}/ece",
            ]
        )
    return [*rows, "score"]


def comparison_table(result: CompareResult) -> list[str]:
    lines = []
    for task, by_method in result.metrics.items():
        methods = [m for m in METHODS if m in by_method]
        spec_rows = result.metrics[task].get("_rows", {})
        rows = list(spec_rows) if spec_rows else sorted(next(iter(by_method.values())))
        gain = "stats+gbm" in methods and "stats+rep+gbm" in methods
        lines += [
            f"### {task}",
            "",
            "| metric | " + " | ".join(methods) + (" | gain over stats |" if gain else " |"),
            "|---" * (len(methods) + 1 + gain) + "|",
        ]
        for row in rows:
            values = [by_method[m].get(row, math.nan) for m in methods]
            finite = [v for v in values if isinstance(v, float) and math.isfinite(v)]
            best = (min(finite) if lower_is_better(row) else max(finite)) if finite else None
            if row.endswith("coverage"):  # closest to the 90% level is best, not the highest
                best = min(finite, key=lambda v: abs(v - DEFAULT_LEVEL)) if finite else None
            cells = []
            for v in values:
                text = "undefined" if not isinstance(v, float) or math.isnan(v) else f"{v:.3f}"
                cells.append(f"**{text}**" if best is not None and v == best else text)
            if gain:
                diff = by_method["stats+rep+gbm"].get(row, math.nan) - by_method["stats+gbm"].get(
                    row, math.nan
                )
                cells.append("undefined" if math.isnan(diff) else f"{diff:+.3f}")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        secs = result.seconds.get(task, {})
        wall = " | ".join(f"{secs.get(m, math.nan):.1f}" for m in methods)
        lines.append(f"| wall seconds | {wall} |" + (" |" if gain else ""))
        lines.append("")
    lines.append(
        f"(stats+* methods share {result.featurize_seconds:.1f} s of feature extraction, not included above)"
    )
    return lines


__all__ = ["GAIN_TARGET", "GAIN_TARGETS", "QUALITY_TARGETS", "CompareResult", "comparison_table"]
