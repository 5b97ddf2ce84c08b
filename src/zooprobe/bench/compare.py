"""``zooprobe bench``: heads against the baselines a user would pick instead, on identical splits.

For every task and target of a zoo (default: the bench zoo), in one run:

- ``frozen``: a head trained on the frozen encoder's cached representations;
- ``finetune``: the same head fine-tuned end to end (initialized from the frozen head: linear probing
  first, then fine-tuning, the usual recipe against feature distortion);
- ``frozen+stats``, ``finetune+stats``: the same two with ``HeadConfig.statistics``: the head also reads
  the weight-statistics features next to the representation;
- ``stats+gbm``: weight-statistics features (`zooprobe.tokens.statistics`) + LightGBM early-stopped on
  the validation split;
- ``stats+rep+gbm``: LightGBM, tuned exactly like ``stats+gbm``, on the statistics *and* the frozen
  encoder's representation: what the encoder knows beyond the statistics shows as the table's "gain over
  stats" column (this method minus ``stats+gbm``);
- ``stats+linear``: the same features + ridge (continuous) or logistic regression (classes);
- ``floor``: the train mean or majority class;
- ``hparams+gbm`` (accuracy only): LightGBM on the training hyperparameters themselves, an upper reference
  that needs metadata users usually lack.

Head runs are resumable and shared with ``zooprobe bench heads`` (same configurations and folders: a
finished run is only re-scored). Every method sees the zoo's own train/validation/test splits (by model);
validation is used for early stopping and model selection only; every number is on the test split, scored
by the same evaluator (`zooprobe.training.evaluator`). Output: a markdown table (terminal and
``OUTPUT/bench.md``), every number in ``OUTPUT/bench.json``, bar charts in ``OUTPUT/plots/``, and the head
runs in ``OUTPUT/runs/``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from zooprobe.api import load_encoder, load_zoo, train
from zooprobe.baselines.models import MetadataEncoder, fit_baseline
from zooprobe.bench.compare_result import (
    GAIN_TARGET,
    GAIN_TARGETS,
    QUALITY_TARGETS,
    CompareResult,
    _rows_for,
    comparison_table,
)
from zooprobe.bench.literature import check_reference
from zooprobe.bench.methods import METHODS, TASKS
from zooprobe.core.files import atomic_write_json, atomic_write_text, json_safe
from zooprobe.core.outputs import OutputKind, check_output, claim_output, holding_outputs
from zooprobe.heads.prediction_heads import HeadConfig
from zooprobe.heads.targets import TargetArrays, TaskSpec, build_task_spec, target_arrays
from zooprobe.heads.uncertainty import fit_calibration
from zooprobe.representations.cache import RepresentationCache
from zooprobe.tokens.statistics import featurize
from zooprobe.training.config import OptimConfig, StopConfig, TrainConfig
from zooprobe.training.data_checks import check_split_leaks
from zooprobe.training.evaluator import (
    evaluate_predictions,
    metric_space_targets,
    uncertainty_metrics,
)
from zooprobe.training.run_folder import RunFolder

#: Columns the hyperparameters-as-input reference reads (those present in the zoo are used).
HPARAM_COLUMNS = (
    "optimizer",
    "learning_rate",
    "weight_decay",
    "activation",
    "init",
    "dropout",
    "batch_size",
    "epochs",
    "family",
    "depth",
    "width",
    "has_batch_norm",
    "has_layer_norm",
    "has_residual",
    "dataset",
)


def default_base(zoo: str, encoder: str) -> TrainConfig:
    """The frozen-head configuration both benchmarks start from.

    Head settings chosen on the bench zoo's VALIDATION split (never the test split) from a sweep of six
    configurations of frozen statistics-input heads (hidden sizes, dropout, learning rate, weight decay):
    [512, 256] hidden units, dropout 0.2, weight decay 1e-3 was best for both accuracy (validation R²
    0.808 vs 0.783 for the library default) and hyperparameters (score 0.602 vs 0.574).
    """
    base = TrainConfig(
        head=HeadConfig(hidden_sizes=[512, 256], dropout=0.2),
        optim=OptimConfig(epochs=300, batch_size=64, weight_decay=1e-3),
        stop=StopConfig(patience=20),
    )
    return replace(base, zoo=zoo, encoder=encoder)


def head_run_config(
    base: TrainConfig, task: str, mode: str, frozen_dir: Path, finetune_epochs: int, statistics: bool = False
) -> TrainConfig:
    """The configuration of a benchmark head run. Fine-tuning starts from the frozen run's head
    (`frozen_dir`) at 0.3x its learning rate, for `finetune_epochs` epochs. `zooprobe bench` and
    `zooprobe bench heads` use the same configurations and run folders, so one reuses the other's runs."""
    head = replace(base.head, statistics=statistics)
    if mode == "frozen":
        return replace(base, task=task, mode="frozen", head=head)  # type: ignore[arg-type]
    return replace(
        base,
        task=task,  # type: ignore[arg-type]
        mode="finetune",
        head=head,
        init_from=str(frozen_dir),
        optim=replace(base.optim, epochs=finetune_epochs, lr=base.optim.lr * 0.3),
        stop=replace(base.stop, patience=max(2, finetune_epochs // 3)),
    )


# ------------------------------------------------------------------------------------------ baselines
def _y(spec_target: Any, truth: np.ndarray) -> np.ndarray:
    if spec_target.kind == "binary":
        return np.where(np.isnan(truth), -1, truth).astype(np.int64)
    return truth


def _baseline_predictions(
    method: str,
    spec: TaskSpec,
    x: dict[str, np.ndarray],
    truth: dict[str, dict[str, np.ndarray]],
    validation: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Test predictions of `method` per target (fit on train, selected on validation); `validation`, when
    given, receives the validation predictions too (for calibration)."""

    preds: dict[str, np.ndarray] = {}
    for t in spec.targets:
        kind = "continuous" if t.kind == "continuous" else t.kind
        model = fit_baseline(
            method,  # type: ignore[arg-type]
            kind,  # type: ignore[arg-type]
            x["train"],
            _y(t, truth["train"][t.name]),
            x["validation"],
            _y(t, truth["validation"][t.name]),
            n_classes=len(t.classes) if t.kind == "categorical" else None,
        )
        for split, out in (("test", preds), ("validation", validation)):
            if out is None:
                continue
            if t.kind == "continuous":
                out[t.name] = model.predict(x[split])
            elif t.kind == "binary":
                out[t.name] = model.predict_proba(x[split])[:, 1]
            else:
                out[t.name] = model.predict_proba(x[split])
    return preds


def _calibrated_metrics(
    spec: TaskSpec,
    truth: dict[str, dict[str, np.ndarray]],
    validation: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
) -> dict[str, float]:
    """Test coverage / width of conformal intervals and ECE after temperature scaling, both calibrated on
    the validation predictions: what a head of this method would report (`zooprobe.heads.uncertainty`)."""
    calibration = fit_calibration(spec, truth["validation"], validation)
    return uncertainty_metrics(spec, truth["test"], calibration.apply(spec, test), calibration)


def _head_uncertainty(run_dir: Path) -> dict[str, float]:
    """The coverage, width and ECE a trained head reported on the test split (its metrics.json)."""
    test = RunFolder(run_dir).metrics().get("test") or {}
    keys = ("coverage", "interval_width", "ece", "macro_ece")
    return {k: v for k, v in test.items() if k.rsplit("/", 1)[-1] in keys and isinstance(v, float)}


def _head_predictions(run_dir: Path, spec: TaskSpec, split: str = "test") -> dict[str, np.ndarray]:
    doc = RunFolder(run_dir).predictions(split)
    return {t.name: np.asarray(doc["targets"][t.name]["predicted"], dtype=np.float64) for t in spec.targets}


# ------------------------------------------------------------------------------------------ bench
BENCH_OUTPUT = OutputKind(
    "bench",
    owned=("bench.md", "bench.json", "plots/*", "runs/*"),  # runs/<task>-<method>: run folders
    what="benchmark",
)
"""The files `zooprobe bench` and `zooprobe bench heads` write into their output folder."""


@dataclass
class _Inputs:
    """What every task of one ``zooprobe bench`` reads: the zoo (all checkpoints) and its final
    checkpoints' splits and metadata, the encoder (when a head method runs) and the baselines' features."""

    full_zoo: Any
    splits: dict[str, Any]
    metas: dict[str, Any]
    loaded: Any = None
    x: dict[str, np.ndarray] = field(default_factory=dict)
    """Weight-statistics features per split (statistics methods)."""
    x_rep: dict[str, np.ndarray] = field(default_factory=dict)
    """The statistics next to the frozen encoder's representation (``stats+rep+gbm``)."""


def _features(
    inputs: _Inputs, encoder: str, methods: tuple[str, ...], progress: bool, result: CompareResult
) -> None:
    """Load the encoder and compute the features the selected methods need into ``inputs``."""
    splits = inputs.splits
    head_methods = {"frozen", "finetune", "frozen+stats", "finetune+stats", "stats+rep+gbm"}
    inputs.loaded = load_encoder(encoder, progress=progress) if head_methods & set(methods) else None
    if {"stats+gbm", "stats+rep+gbm", "stats+linear"} & set(methods):
        start = time.perf_counter()
        inputs.x = {s: featurize(v.state_dicts(), progress=progress) for s, v in splits.items()}
        result.featurize_seconds = time.perf_counter() - start
    if "stats+rep+gbm" in methods:
        assert inputs.loaded is not None
        cache = RepresentationCache()
        reps = {s: cache.get(inputs.loaded, v, progress=progress).pooled.numpy() for s, v in splits.items()}
        inputs.x_rep = {s: np.hstack([inputs.x[s], reps[s].astype(np.float64)]) for s in splits}


@dataclass
class _Task:
    """One task of the benchmark: its targets, the true values per split and where its numbers go."""

    name: str
    spec: TaskSpec
    arrays: dict[str, TargetArrays]
    truth: dict[str, dict[str, np.ndarray]]
    result: CompareResult

    @classmethod
    def start(cls, task: str, inputs: _Inputs, result: CompareResult) -> _Task:
        spec = build_task_spec(task, inputs.metas["train"])
        arrays = {s: target_arrays(spec, inputs.metas[s]) for s in inputs.splits}
        truth = {s: metric_space_targets(spec, arrays[s]) for s in inputs.splits}
        result.metrics[task] = {"_rows": dict.fromkeys(_rows_for(task, spec), math.nan)}
        result.validation[task] = {}
        result.seconds[task] = {}
        return cls(task, spec, arrays, truth, result)

    def record(
        self,
        method: str,
        preds: dict[str, np.ndarray],
        seconds: float,
        extra: dict[str, float] | None = None,
        val_preds: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Score ``method``'s test predictions (and validation ones, when given) with the evaluator."""
        result, task = self.result, self.name
        result.metrics[task][method] = evaluate_predictions(self.spec, self.arrays["test"], preds)
        result.metrics[task][method].update(extra or {})
        result.seconds[task][method] = seconds
        if val_preds:
            result.validation[task][method] = evaluate_predictions(
                self.spec, self.arrays["validation"], val_preds
            )


@dataclass
class _HeadRuns:
    """How the benchmark's head runs are trained: base configuration, run folders, fine-tuning epochs."""

    base: TrainConfig
    runs: Path
    finetune_epochs: int
    progress: bool


def _run_heads(task: _Task, inputs: _Inputs, heads: _HeadRuns, methods: tuple[str, ...]) -> None:
    """The frozen and fine-tuned heads (with and without statistics) of the selected methods."""
    name, spec, runs = task.name, task.spec, heads.runs
    for suffix, stats in (("", False), ("+stats", True)):
        frozen_name, ft_name = f"frozen{suffix}", f"finetune{suffix}"
        if frozen_name not in methods and ft_name not in methods:
            continue
        frozen_dir = runs / f"{name}-{frozen_name}"
        cfg = head_run_config(heads.base, name, "frozen", frozen_dir, heads.finetune_epochs, stats)
        start = time.perf_counter()
        train(cfg, frozen_dir, encoder=inputs.loaded, zoo=inputs.full_zoo, progress=heads.progress)
        frozen_s = time.perf_counter() - start
        if frozen_name in methods:
            preds = _head_predictions(frozen_dir, spec)
            val_preds = _head_predictions(frozen_dir, spec, "validation")
            task.record(frozen_name, preds, frozen_s, _head_uncertainty(frozen_dir), val_preds)
        if ft_name in methods:
            cfg = head_run_config(heads.base, name, "finetune", frozen_dir, heads.finetune_epochs, stats)
            start = time.perf_counter()
            ft_dir = runs / f"{name}-{ft_name}"
            train(cfg, ft_dir, encoder=inputs.loaded, zoo=inputs.full_zoo, progress=heads.progress)
            # the fine-tuning run's time includes the frozen run it starts from
            seconds = frozen_s + time.perf_counter() - start
            task.record(
                ft_name,
                _head_predictions(ft_dir, spec),
                seconds,
                _head_uncertainty(ft_dir),
                _head_predictions(ft_dir, spec, "validation"),
            )


def _run_baselines(task: _Task, inputs: _Inputs, methods: tuple[str, ...]) -> None:
    """The statistics baselines, the floor and the hyperparameters-as-input reference."""
    spec, truth, metas, splits = task.spec, task.truth, inputs.metas, inputs.splits
    for method, features in (
        ("stats+gbm", inputs.x),
        ("stats+rep+gbm", inputs.x_rep),
        ("stats+linear", inputs.x),
    ):
        if method in methods:
            start = time.perf_counter()
            val: dict[str, np.ndarray] = {}
            preds = _baseline_predictions(method.rsplit("+", 1)[1], spec, features, truth, val)
            seconds = time.perf_counter() - start
            task.record(method, preds, seconds, _calibrated_metrics(spec, truth, val, preds), val)
    if "floor" in methods:
        start = time.perf_counter()
        zeros = {s: np.zeros((len(metas[s]), 1)) for s in splits}
        task.record("floor", _baseline_predictions("floor", spec, zeros, truth), time.perf_counter() - start)
    if "hparams+gbm" in methods and task.name == "accuracy":
        start = time.perf_counter()
        cols = [c for c in HPARAM_COLUMNS if c in metas["train"].columns]
        enc = MetadataEncoder(cols).fit(metas["train"])
        hx = {s: enc.transform(metas[s]) for s in splits}
        task.record("hparams+gbm", _baseline_predictions("gbm", spec, hx, truth), time.perf_counter() - start)


@holding_outputs  # the folder's lock is released when it returns
def compare(
    zoo: str = "builtin:bench",
    encoder: str = "default",
    output: str | Path = "bench",
    *,
    tasks: tuple[str, ...] = TASKS,
    methods: tuple[str, ...] = METHODS,
    frozen: TrainConfig | None = None,
    finetune_epochs: int = 10,
    progress: bool = True,
    allow_split_leaks: bool = False,
    reference: str | None = None,
) -> CompareResult:
    """Run every method on every task of `zoo` (see the module docs); writes into `output`.
    ``reference="literature"`` adds the published numbers to the table (`zooprobe.bench.literature`).

    A zoo with models copied between splits (identical weights in train and validation/test) is refused
    before anything runs (`training.data.check_split_leaks`), unless `allow_split_leaks`."""

    output = Path(output)
    check_reference(reference)
    check_output(output, BENCH_OUTPUT)  # reads only: a folder of the user's own fails before any work
    full_zoo = load_zoo(zoo)  # loaded once; every head run and baseline reads this object
    zoo_obj = full_zoo.final()
    _, leak_warning = check_split_leaks(zoo_obj, zoo, allow_split_leaks)  # before any work
    if leak_warning:
        warnings.warn(leak_warning, stacklevel=2)
    splits = {s: zoo_obj.split(s) for s in ("train", "validation", "test")}
    inputs = _Inputs(full_zoo, splits, {s: v.metadata().reset_index(drop=True) for s, v in splits.items()})
    result = CompareResult(
        zoo=zoo, encoder=encoder, n_models={s: len(v) for s, v in splits.items()}, reference=reference
    )
    _features(inputs, encoder, methods, progress, result)
    base = replace(frozen, zoo=zoo, encoder=encoder) if frozen else default_base(zoo, encoder)
    if allow_split_leaks:
        base = replace(base, allow_split_leaks=True)
    claim_output(output, BENCH_OUTPUT)
    heads = _HeadRuns(base, output / "runs", finetune_epochs, progress)
    for name in tasks:
        task = _Task.start(name, inputs, result)
        _run_heads(task, inputs, heads, methods)
        _run_baselines(task, inputs, methods)
    _write_outputs(result, output)
    return result


def _write_outputs(result: CompareResult, output: Path) -> None:

    output.mkdir(parents=True, exist_ok=True)
    lines = ["# zooprobe bench", "", f"zoo `{result.zoo}`, encoder `{result.encoder}`, test split", ""]
    lines += [*result.table(), "", *result.quality()]
    atomic_write_text(output / "bench.md", "\n".join(lines) + "\n")
    doc = result.to_dict()
    doc["metrics"] = {t: {m: v for m, v in d.items() if m != "_rows"} for t, d in doc["metrics"].items()}
    atomic_write_json(output / "bench.json", json_safe(doc))
    _plots(result, output / "plots")


def _plots(result: CompareResult, folder: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: matplotlib
    from matplotlib.figure import Figure  # heavy: matplotlib

    folder.mkdir(parents=True, exist_ok=True)
    for task, by_method in result.metrics.items():
        methods = [m for m in METHODS if m in by_method]
        rows = [
            r for r in by_method.get("_rows", {}) if not r.startswith(("f1/", "roc_auc/")) and "mae" not in r
        ]
        if not rows or not methods:
            continue
        fig = Figure(figsize=(max(6, 1.2 * len(rows)), 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / len(methods)
        for i, m in enumerate(methods):
            vals = [by_method[m].get(r, math.nan) for r in rows]
            ax.bar(
                np.arange(len(rows)) + i * width, np.nan_to_num(np.asarray(vals, dtype=float)), width, label=m
            )
        ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2)
        ax.set_xticklabels(rows, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{task}: test metrics by method (undefined shown as 0)")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / f"{task}.png", dpi=100)


__all__ = [
    "GAIN_TARGET",
    "GAIN_TARGETS",
    "METHODS",
    "QUALITY_TARGETS",
    "CompareResult",
    "compare",
    "comparison_table",
    "default_base",
    "head_run_config",
]
