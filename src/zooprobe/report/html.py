"""``zooprobe report RUN_DIR``: one self-contained HTML page describing a finished head-training run.

`write_report` reads what `zooprobe.training.trainer.train` leaves in a run folder (``metrics.json``,
``predictions/test.json``, ``config.yaml``, ``head/config.json``) and writes ``RUN_DIR/report/index.html``
(or ``OUTPUT/index.html``) with the PNG figures next to it. The page embeds every figure as a base64
``data:`` URI and its own CSS, so it can be mailed or archived as a single file; the PNGs are there for
slides and papers.

Contents:

- a summary (task, mode, best epoch, monitored metric, model counts, the head's encoder);
- per continuous target, predicted vs true on the test split with the identity line, R² and Kendall tau
  in the title (metric space: axes are ``log10(...)`` for log targets);
- per categorical target, the test confusion matrix (counts, class names on the axes);
- for the patterns task, per-pattern F1 bars (validation and test; an undefined F1 is drawn as the word
  "undefined", never as a zero-length bar);
- learning curves from the history (train loss per epoch; validation loss and the monitored metric per
  evaluation; the best epoch marked);
- a table of validation and test metrics (NaN, stored as null in metrics.json, shown as "undefined");
- the overlap check and the missing-target counts of the run;
- the resolved configuration (config.yaml), HTML-escaped.

Figures use matplotlib's object API on the Agg canvas (no pyplot state, no display needed). Every file is
written atomically.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from zooprobe.core.files import atomic_write_bytes, atomic_write_text
from zooprobe.core.outputs import OutputKind, check_output, claim_output, holding_outputs
from zooprobe.errors import InvalidInputError
from zooprobe.report.figures import (
    confusion_counts,
    confusion_png,
    f1_bars_png,
    fmt,
    learning_curves_png,
    scatter_png,
)
from zooprobe.training.run_folder import RunFolder


# ------------------------------------------------------------------------------------------ reading
@dataclass
class RunFiles:
    """What a finished run folder holds, parsed."""

    run_dir: Path
    metrics: dict[str, Any]
    test: dict[str, Any]
    config_text: str | None
    head_config: dict[str, Any] | None


def read_run(run_dir: str | Path) -> RunFiles:
    """Parse a finished run folder (`RunFolder`); `InvalidInputError` if it is not one."""
    run = RunFolder(run_dir)
    if not run.path.is_dir():
        raise InvalidInputError(f"{run.path}: no such folder (expected a run folder of `zooprobe train`)")
    for path in (run.metrics_path, run.predictions_path("test")):
        if not path.is_file():
            raise InvalidInputError(
                f"{run.path}: no {path.relative_to(run.path).as_posix()}, so this is not a finished run of "
                "`zooprobe train` (a run writes metrics.json and predictions/ when training ends; an "
                "interrupted run finishes when the same train command runs again)"
            )
    metrics = run.metrics()
    test = run.predictions("test")
    for key in ("task", "test", "validation", "history"):
        if key not in metrics:
            raise InvalidInputError(
                f"{run.metrics_path}: missing field {key!r}; not a zooprobe run's metrics"
            )
    if not isinstance(test.get("targets"), dict):
        raise InvalidInputError(
            f"{run.predictions_path('test')}: missing field 'targets'; not a zooprobe run's predictions"
        )
    config_text = run.config_path.read_text(errors="replace") if run.config_path.is_file() else None
    head_config = run.head_config() if run.head_config_path.is_file() else None
    return RunFiles(run.path, metrics, test, config_text, head_config)


# ------------------------------------------------------------------------------------------ html
@dataclass
class _Page:
    """The figures of a page being rendered (file name -> PNG bytes)."""

    pngs: dict[str, bytes] = field(default_factory=dict)

    def figure(self, filename: str, png: bytes, alt: str) -> str:
        base, k = filename, 2
        while filename in self.pngs:
            filename = f"{base.removesuffix('.png')}_{k}.png"
            k += 1
        self.pngs[filename] = png
        data = base64.b64encode(png).decode("ascii")
        return (
            f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(alt)} <span class=file>({html.escape(filename)})</span>"
            "</figcaption></figure>"
        )


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "target"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}">{thead}<tbody>{body}</tbody></table>'


def _metric_key(task: str, target: str, metric: str) -> str:
    return metric if task == "accuracy" else f"{target}/{metric}"


def _summary(run: RunFiles) -> str:
    m = run.metrics
    rows: list[tuple[str, Any]] = [
        ("run folder", str(run.run_dir)),
        ("task", m.get("task")),
        ("mode", m.get("mode")),
        ("monitored metric (validation)", m.get("monitor")),
        ("best epoch", m.get("best_epoch")),
        ("best monitored value", fmt(m.get("best_value"))),
        ("epochs run", m.get("epochs_run")),
    ]
    n_models = m.get("n_models") or {}
    if isinstance(n_models, dict):
        rows.append(
            (
                "models (train / validation / test)",
                " / ".join(str(n_models.get(s, "?")) for s in ("train", "validation", "test")),
            )
        )
    enc = (run.head_config or {}).get("encoder") or {}
    if enc:
        rows.append(("encoder", f"{enc.get('source')} (revision {enc.get('revision')})"))
        rows.append(("encoder fingerprint", str(enc.get("fingerprint", ""))[:16]))
    versions = m.get("library_versions") or {}
    if isinstance(versions, dict) and versions:
        rows.append(("libraries", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))))
    return _table(("", ""), rows, "kv")


def _metrics_table(m: Mapping[str, Any]) -> str:
    val, test = m.get("validation") or {}, m.get("test") or {}
    keys = list(dict.fromkeys([*test, *val]))
    rows = []
    for k in keys:
        if k in ("n", "n_undefined"):
            continue
        rows.append((k, fmt(val.get(k)) if k in val else "-", fmt(test.get(k)) if k in test else "-"))
    for k in ("n", "n_undefined"):
        if k in val or k in test:
            rows.append(
                (k, fmt(val.get(k), 0) if k in val else "-", fmt(test.get(k), 0) if k in test else "-")
            )
    return _table(("metric", "validation", "test"), rows, "metrics")


def _overlap_and_missing(m: Mapping[str, Any]) -> str:
    parts = []
    overlap = m.get("overlap")
    if isinstance(overlap, dict):
        ids = overlap.get("model_ids") or []
        verdict = (
            "no evaluation model was seen in the encoder's pretraining"
            if overlap.get("checked") and not ids
            else (
                f"{len(ids)} evaluation model(s) were in the encoder's pretraining data (allowed: "
                f"{overlap.get('allowed')}); their metrics are inflated"
                if ids
                else "not checked"
            )
        )
        parts.append(f"<p class=verdict>Overlap check: {html.escape(verdict)}.</p>")
        rows = [(k, json.dumps(v) if isinstance(v, list | dict) else v) for k, v in sorted(overlap.items())]
        parts.append(_table(("field", "value"), rows, "kv"))
    else:
        parts.append("<p>No overlap information in metrics.json.</p>")
    missing = m.get("missing_targets")
    if isinstance(missing, dict) and missing:
        splits = [s for s in ("train", "validation", "test") if s in missing] + sorted(
            s for s in missing if s not in ("train", "validation", "test")
        )
        if all(isinstance(missing[s], dict) for s in splits):
            targets = list(dict.fromkeys(t for s in splits for t in missing[s]))
            rows = [(t, *(missing[s].get(t, 0) for s in splits)) for t in targets]
            parts.append("<h3>Missing targets (masked out of losses and metrics, never filled)</h3>")
            parts.append(_table(("target", *splits), rows, "metrics"))
        else:
            parts.append(f"<pre>{html.escape(json.dumps(missing, indent=2))}</pre>")
    return "\n".join(parts)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
table.metrics td:nth-child(n+2){text-align:right;font-family:ui-monospace,Menlo,Consolas,monospace}
th{background:#f4f4f4}figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figcaption{font-size:.8em;color:#666}span.file{color:#999}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:.8em;overflow:auto;font-size:.85em}
p.verdict{font-weight:600}
"""


#: Test metrics compared with the baseline, per task (those the run has).
COMPARED_METRICS = {
    "patterns": ("macro_f1", "macro_roc_auc", "subset_accuracy", "hamming_loss"),
    "accuracy": ("r2", "kendall_tau", "mae", "rmse"),
    "hyperparameters": ("score",),
}


def compared_metrics(task: str, test: Mapping[str, Any]) -> list[str]:
    """The test metrics a head and its baseline are compared on (per target for hyperparameters)."""
    keys = [k for k in COMPARED_METRICS.get(task, ()) if k in test]
    if task == "hyperparameters":
        keys += sorted(k for k in test if k.endswith(("/r2", "/accuracy")))
    return keys


def _baseline_section(m: Mapping[str, Any], baseline: Mapping[str, Any] | None, why: str | None) -> str:
    from zooprobe.report.baseline import BASELINE_NAME  # heavy: imports torch (through the API)

    intro = (
        f"<h2>Where this head stands: {BASELINE_NAME} on the same split</h2><p>Weight statistics + "
        "LightGBM (the 131 per-tensor statistics of <code>zooprobe.tokens.statistics</code>, one model per "
        "target, early-stopped on the validation split), trained on this run's zoo, split and targets and "
        "scored by the same evaluator on the same test models.</p>"
    )
    if baseline is None:
        return intro + f"<p>Not computed: {html.escape(why or 'not requested')}.</p>"
    test = m.get("test") or {}
    rows = [(k, fmt(test.get(k)), fmt(baseline.get(k))) for k in compared_metrics(str(m.get("task")), test)]
    return intro + _table(("test metric", "this head", BASELINE_NAME), rows, "metrics")


def render_html(
    run: RunFiles,
    page: _Page,
    baseline: Mapping[str, Any] | None = None,
    baseline_note: str | None = "not requested",
) -> str:
    """The complete page for `run` (figures are added to `page`); `baseline`: the test metrics of
    statistics + LightGBM on the same split (`zooprobe.report.baseline`), else `baseline_note` says why
    there are none."""
    m = run.metrics
    task = str(m.get("task"))
    test_metrics = m.get("test") or {}
    targets: dict[str, Any] = run.test["targets"]
    continuous = [(n, t) for n, t in targets.items() if t.get("kind") == "continuous"]
    categorical = [(n, t) for n, t in targets.items() if t.get("kind") == "categorical"]
    binary = [n for n, t in targets.items() if t.get("kind") == "binary"]

    out = [f"<h1>zooprobe report: {html.escape(task)} head ({html.escape(str(m.get('mode')))})</h1>"]
    out.append(_summary(run))
    if continuous:
        out.append(_continuous_section(page, task, continuous, test_metrics))
    if categorical:
        out.append(_categorical_section(page, categorical, test_metrics))
    if task == "patterns" or binary:
        out.append(_patterns_section(page, binary, m.get("validation") or {}, test_metrics))
    history = m.get("history") or []
    if history:
        png = learning_curves_png(history, str(m.get("monitor", "loss")), m.get("best_epoch"))
        out.append("<h2>Learning curves</h2>" + page.figure("learning_curves.png", png, "learning curves"))
    out.append(
        "<h2>Metrics (best checkpoint)</h2><p>Undefined metrics (a single class in a split, a constant "
        "target, fewer than two samples) are shown as “undefined”, never as 0.</p>" + _metrics_table(m)
    )
    out.append(_baseline_section(m, baseline, baseline_note))
    out.append(
        "<h2>Evaluation data: overlap with pretraining, missing targets</h2>" + _overlap_and_missing(m)
    )
    config = run.config_text if run.config_text is not None else "(no config.yaml in the run folder)"
    out.append(
        "<h2>Configuration (config.yaml)</h2><p><code>zooprobe train --config config.yaml</code> replays "
        f"the run.</p><pre>{html.escape(config)}</pre>"
    )
    title = html.escape(f"zooprobe report: {task} ({run.run_dir.name})")
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{title}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n"
    )


def _continuous_section(
    page: _Page, task: str, continuous: list[tuple[str, Any]], test_metrics: Mapping[str, Any]
) -> str:
    """Predicted vs true of each continuous target (test split)."""
    figs = []
    for name, t in continuous:
        png = scatter_png(
            name,
            t.get("true", []),
            t.get("predicted", []),
            bool(t.get("log10")),
            test_metrics.get(_metric_key(task, name, "r2")),
            test_metrics.get(_metric_key(task, name, "kendall_tau")),
        )
        space = "log10 " if t.get("log10") else ""
        figs.append(
            page.figure(f"scatter_{_safe(name)}.png", png, f"{name}: predicted vs true {space}(test)")
        )
    return "<h2>Continuous targets: predicted vs true (test split)</h2>" + "".join(figs)


def _categorical_section(
    page: _Page, categorical: list[tuple[str, Any]], test_metrics: Mapping[str, Any]
) -> str:
    """The confusion matrix of each categorical target (test split)."""
    figs = []
    for name, t in categorical:
        classes = [str(c) for c in t.get("classes", [])]
        cm = confusion_counts(t.get("true", []), t.get("predicted", []), len(classes))
        png = confusion_png(
            name,
            classes,
            cm,
            test_metrics.get(f"{name}/accuracy"),
            test_metrics.get(f"{name}/macro_f1"),
        )
        figs.append(page.figure(f"confusion_{_safe(name)}.png", png, f"{name}: confusion matrix (test)"))
    return "<h2>Discrete targets: confusion matrices (test split)</h2>" + "".join(figs)


def _patterns_section(
    page: _Page, binary: list[str], val_metrics: Mapping[str, Any], test_metrics: Mapping[str, Any]
) -> str:
    """Per-pattern F1 bars (validation and test)."""
    names = binary or [k[3:] for k in test_metrics if k.startswith("f1/")]
    png = f1_bars_png(
        names,
        {n: val_metrics.get(f"f1/{n}") for n in names},
        {n: test_metrics.get(f"f1/{n}") for n in names},
    )
    return (
        "<h2>Per-pattern F1</h2><p>An F1 is undefined when a split has no positive label and no "
        "positive prediction for the pattern; it is written as “undefined”, not drawn as 0.</p>"
        + page.figure("f1_patterns.png", png, "per-pattern F1")
    )


REPORT_OUTPUT = OutputKind("report", owned=("index.html", "*.png"))
"""The files of a report folder (see `zooprobe.core.outputs`)."""


@holding_outputs  # the folder's lock is released when it returns
def write_report(
    run_dir: str | Path,
    output: str | Path | None = None,
    *,
    baseline: bool | Mapping[str, Any] = True,
) -> Path:
    """Write the HTML report of a finished run (see the module docs); returns the path of index.html.

    `output` is the folder for ``index.html`` and the PNG files (default ``RUN_DIR/report``). `baseline`:
    True trains statistics + LightGBM on the run's zoo and split to show beside the run's metrics (the
    `zooprobe.report.baseline` module; seconds), a mapping gives its test metrics already computed, False
    leaves it out. Raises `InvalidInputError` if `run_dir` is not a finished run folder.
    """
    run = read_run(run_dir)
    folder = Path(output) if output is not None else run.run_dir / "report"
    # RUN_DIR/report lies in a run folder zooprobe wrote: a report there from before markers is its own
    kind = REPORT_OUTPUT if output is not None else replace(REPORT_OUTPUT, signature=("index.html",))
    check_output(folder, kind, overwrite=True)  # reads only: fail before rendering
    note: str | None = "not requested (baseline=False)"
    metrics: Mapping[str, Any] | None = None
    if baseline is True:
        from zooprobe.report.baseline import run_baseline  # heavy: imports torch (trains the baseline)

        metrics, note = run_baseline(run.run_dir)
    elif baseline is not False:
        metrics, note = baseline, None
    page = _Page()
    text = render_html(run, page, metrics, note)
    claim_output(folder, kind, overwrite=True)  # a report is written whole: drop the old one
    for filename, png in page.pngs.items():
        atomic_write_bytes(folder / filename, png)
    index = folder / "index.html"
    atomic_write_text(index, text)
    return index


__all__ = [
    "REPORT_OUTPUT",
    "RunFiles",
    "confusion_counts",
    "fmt",
    "read_run",
    "render_html",
    "write_report",
]
