"""``zooprobe train`` and ``zooprobe evaluate``: head training from the command line.

Options are the fields of `TrainConfig` (nested ones dotted: ``--optim.lr``, ``--head.hidden_sizes``,
``--stop.patience``); ``--config RUN/config.yaml`` replays a run.
"""

from __future__ import annotations

import dataclasses
import dataclasses as dc
import json
import math
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from zooprobe.bench.methods import METHODS, TASKS
from zooprobe.cli.common import (
    add_output_arguments,
    add_progress_arguments,
    add_push_arguments,
    check_push_arguments,
    config_parser,
    new_parser,
)
from zooprobe.cli.symmetry import run_symmetry, symmetry_parser
from zooprobe.core.files import atomic_write_json
from zooprobe.core.progress import rank
from zooprobe.errors import ConfigError
from zooprobe.training.config import TrainConfig

TASK_NAMES = TASKS

#: Metrics printed in the summary table, per task (all of them are in metrics.json).
SUMMARY_METRICS = {
    "patterns": ["macro_f1", "macro_roc_auc", "subset_accuracy", "hamming_loss", "macro_ece", "in_domain"],
    "accuracy": ["r2", "kendall_tau", "mae", "rmse", "coverage", "interval_width", "in_domain"],
    "hyperparameters": ["score", "in_domain"],
}


TRAIN_DESCRIPTION = (
    "Train a prediction head on a weight-space encoder (frozen: cached representations; finetune: end "
    "to end). Writes config.yaml, train.log, head/ (with a README.md model card), checkpoints/, "
    "metrics.json, predictions/ and tensorboard/ into --output; an interrupted run resumes when started "
    "again with the same options. The demo's settings differ from these defaults: `zooprobe presets head`."
)
EVALUATE_DESCRIPTION = "Evaluate a trained run's best checkpoint on a split and print its metrics."
BENCH_DESCRIPTION = (
    "Without a subcommand: every task and target of a zoo for frozen head, fine-tuned head, weight "
    "statistics + LightGBM, weight statistics + ridge/logistic, the mean/majority floor and (accuracy) "
    "hyperparameters + LightGBM, on identical splits: a markdown table (terminal and OUTPUT/bench.md), "
    "OUTPUT/bench.json, plots. `zooprobe bench heads`: the head-training benchmark."
)


def _train_parser() -> Any:
    train = config_parser(TRAIN_DESCRIPTION)
    train.add_class_arguments(TrainConfig, nested_key=None)
    add_output_arguments(train, "run")
    add_push_arguments(train, "head-training run")
    return train


def _evaluate_parser() -> Any:
    evaluate = config_parser(EVALUATE_DESCRIPTION)
    evaluate.add_argument("run_dir", type=Path, help="Run folder written by `zooprobe train`.")
    evaluate.add_argument("--split", type=str, default="test", help="train, validation or test.")
    evaluate.add_argument("--zoo", type=str | None, default=None, help="Evaluate on another zoo's split.")
    evaluate.add_argument(
        "--allow_unfinished", type=bool, default=False, help="Evaluate an unfinished run (with a warning)."
    )
    evaluate.add_argument(
        "--json",
        type=Path | None,
        default=None,
        help="Also write the metrics to this JSON file (strict JSON: undefined metrics are null).",
    )
    return evaluate


def _bench_parser() -> Any:
    bench = config_parser(BENCH_DESCRIPTION)
    bench.add_argument("--zoo", type=str, default="builtin:bench", help="Zoo (default: the bench zoo).")
    bench.add_argument("--encoder", type=str, default="default", help="Encoder folder or Hub id.")
    bench.add_argument("--output", type=Path, default=Path("bench"), help="Folder for results and runs.")
    bench.add_argument("--finetune_epochs", type=int, default=10, help="Epochs of each fine-tuning run.")
    bench.add_argument(
        "--tasks", type=list[str], default=list(TASK_NAMES), help=f"Tasks to run: {', '.join(TASK_NAMES)}."
    )
    bench.add_argument(
        "--methods", type=list[str], default=list(METHODS), help=f"Methods to compare: {', '.join(METHODS)}."
    )
    bench.add_argument(
        "--allow_split_leaks", type=bool, default=False, help="Allow models copied between splits."
    )
    bench.add_argument(
        "--reference",
        type=str | None,
        default=None,
        help="literature: show the published Small CNN Zoo numbers (with sources) beside the results.",
    )
    add_progress_arguments(bench)
    return bench


def _add_bench_subcommands(bench: Any) -> None:
    """``bench heads`` (added after ``bench`` itself: jsonargparse adds subcommand levels in order)."""
    bs = bench.add_subcommands(dest="what", required=False)
    heads = config_parser(
        "Seconds per epoch of frozen head training with and without the representation cache, peak memory "
        "of frozen vs fine-tuning steps, and test metrics of all three heads, frozen and fine-tuned."
    )
    heads.add_argument("--zoo", type=str, default="builtin:bench", help="Zoo (default: the bench zoo).")
    heads.add_argument("--encoder", type=str, default="default", help="Encoder folder or Hub id.")
    heads.add_argument(
        "--output",
        type=Path,
        default=Path("bench"),
        help="Folder for the runs (shared with `zooprobe bench`).",
    )
    heads.add_argument("--finetune_epochs", type=int, default=10, help="Epochs of each fine-tuning run.")
    heads.add_argument(
        "--tasks", type=list[str], default=list(TASK_NAMES), help=f"Tasks to run: {', '.join(TASK_NAMES)}."
    )
    heads.add_argument(
        "--modes", type=list[str], default=["frozen", "finetune"], help="Modes to train: frozen, finetune."
    )
    heads.add_argument("--memory", type=bool, default=True, help="Measure step memory.")
    add_progress_arguments(heads)
    heads.add_argument("--json", type=Path | None, default=None, help="Also write every number as JSON.")
    bs.add_subcommand("heads", heads, help="Benchmark head training.")
    bs.add_subcommand("transfer", _transfer_parser(), help="Transfer to held-out generators.")
    bs.add_subcommand("symmetry", symmetry_parser(), help="Predictions under function-preserving transforms.")


TRANSFER_GROUPS = ("datasets", "families", "recipes", "foreign")
"""`zooprobe.bench.transfer.GROUPS`, repeated so that ``--help`` needs no torch."""


def _transfer_parser() -> Any:
    transfer = config_parser(
        "Leave-one-generator-out benchmark (docs/transfer.md): for every held-out dataset, family, "
        "optimizer, scheduler and --foreign zoo, statistics + LightGBM with and without the frozen encoder "
        "representation, a linear probe and zero-shot transfer from the seen side. Writes "
        "OUTPUT/transfer.md and OUTPUT/transfer.json; finished cells are kept and skipped when run again."
    )
    transfer.add_argument("--corpus", type=str, required=True, help="The corpus zoo (folder or Hub id).")
    transfer.add_argument(
        "--foreign", type=str, action="append", default=[], help="A held-out zoo (repeat for more)."
    )
    transfer.add_argument(
        "--encoders",
        type=str,
        default="default,v3,foundation",
        help="Comma-separated encoders (unloadable ones: skipped).",
    )
    transfer.add_argument(
        "--folds", type=str, default=",".join(TRANSFER_GROUPS), help="Comma-separated fold groups."
    )
    transfer.add_argument("--targets", type=str | None, default=None, help="Comma-separated targets.")
    transfer.add_argument("--output", type=Path, default=Path("bench/transfer"), help="Results folder.")
    transfer.add_argument("--overwrite", type=bool, default=False, help="Start over (drop finished cells).")
    add_progress_arguments(transfer)
    return transfer


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in str(text or "").split(",") if n.strip()]


def add_training_commands(top: Any, wanted: Any = None) -> None:
    """Add ``train``, ``evaluate`` and ``bench`` to the top-level subcommands `top`; with `wanted` (a name
    predicate) the others are placeholders."""
    for name, help_text, description, build in (
        ("train", "Train a prediction head.", TRAIN_DESCRIPTION, _train_parser),
        ("evaluate", "Evaluate a trained head.", EVALUATE_DESCRIPTION, _evaluate_parser),
        ("bench", "Benchmarks: heads vs baselines (table), heads.", BENCH_DESCRIPTION, _bench_parser),
    ):
        full = wanted is None or wanted(name)
        parser = build() if full else new_parser(description)
        top.add_subcommand(name, parser, help=help_text)
        if full and name == "bench":
            _add_bench_subcommands(parser)


def config_from_namespace(ns: Namespace) -> TrainConfig:
    data = ns.as_dict()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig.from_dict({k: v for k, v in data.items() if k in names})


SMALL_SAMPLE = 20
"""Splits with fewer models than this get a warning under their metrics."""


def format_metrics(task: str, metrics: dict[str, float], title: str) -> list[str]:
    keys = [k for k in SUMMARY_METRICS.get(task, []) if k in metrics]
    if task == "hyperparameters":
        keys += sorted(k for k in metrics if k.endswith(("/r2", "/accuracy", "/coverage", "/ece")))
    if task == "patterns":
        keys += sorted(k for k in metrics if k.startswith("f1/"))
    lines = [title]
    for k in keys:
        v = metrics[k]
        lines.append(
            f"  {k:<28} {'undefined (NaN)' if isinstance(v, float) and math.isnan(v) else f'{v:.4f}'}"
        )
    undefined = int(metrics.get("n_undefined", 0) or 0)
    if undefined:
        lines.append(f"  ({undefined} metric(s) undefined on this split; see metrics.json)")
    n = metrics.get("n")
    if isinstance(n, int | float) and 0 < n < SMALL_SAMPLE:
        lines.append(
            f"  (only {int(n)} models in this split: R², Kendall tau and accuracies from so few models are "
            "unreliable; a larger zoo or split gives numbers you can trust)"
        )
    return lines


def run_training_command(cfg: Namespace, console: Any) -> int:
    if cfg.command == "train":
        return _run_train(cfg, console)
    if cfg.command == "evaluate":
        return _run_evaluate(cfg, console)
    if cfg.command == "bench" and cfg.bench.what == "heads":
        return _run_bench_heads(cfg, console)
    if cfg.command == "bench" and cfg.bench.what == "symmetry":
        return run_symmetry(cfg.bench.symmetry, console)
    if cfg.command == "bench" and cfg.bench.what == "transfer":
        return _run_bench_transfer(cfg, console)
    if cfg.command == "bench" and not cfg.bench.get("what"):
        return _run_bench_compare(cfg, console)
    raise AssertionError(f"unhandled command {cfg.command}")


def _run_train(cfg: Namespace, console: Any) -> int:
    """`zooprobe train`: train a head, write its card, print the test metrics, push if asked."""
    from zooprobe.api import train  # heavy: imports torch

    ns = cfg.train
    tc = config_from_namespace(ns)
    check_push_arguments(ns)  # before training: a push that cannot work fails now, not after the run
    result = train(tc, ns.output, resume=not ns.overwrite, progress=ns.progress)
    if rank() != 0:
        return 0  # under torchrun only rank 0 reports (and pushes)
    from zooprobe.publish.card import write_run_card  # heavy: imports torch

    write_run_card(result.output)  # head/README.md: the model card a push would upload
    console.print(f"run folder: {result.output} (best epoch {result.best_epoch}, {result.epochs_run} epochs)")
    for line in format_metrics(tc.task, result.test, f"test metrics ({tc.task}, {tc.mode}):"):
        console.print(line)
    if ns.get("push_to_hub"):
        from zooprobe.cli.push import push_trained_run  # heavy: imports torch

        push_trained_run(
            result.output, ns.push_to_hub, console, private=bool(ns.private), token=ns.get("token")
        )
    return 0


def _run_evaluate(cfg: Namespace, console: Any) -> int:
    """`zooprobe evaluate`: a run's metrics on a split (and as JSON if asked)."""
    from zooprobe.api import evaluate  # heavy: imports torch

    ns = cfg.evaluate
    task, metrics = evaluate(ns.run_dir, split=ns.split, zoo=ns.zoo, allow_unfinished=ns.allow_unfinished)
    for line in format_metrics(task, metrics, f"{ns.split} metrics of {ns.run_dir}:"):
        console.print(line)
    if ns.json is not None:
        doc = {"run": str(ns.run_dir), "task": task, "split": ns.split, "zoo": ns.zoo, "metrics": metrics}
        atomic_write_json(ns.json, doc)
        console.print(f"written: {ns.json}")
    return 0


def _run_bench_heads(cfg: Namespace, console: Any) -> int:
    """`zooprobe bench heads`."""
    from zooprobe.bench.heads import bench_heads  # heavy: imports torch

    ns = cfg.bench.heads
    result = bench_heads(
        ns.zoo,
        ns.encoder,
        ns.output,
        finetune_epochs=ns.finetune_epochs,
        tasks=tuple(ns.tasks),
        modes=tuple(ns.modes),
        memory=ns.memory,
        progress=ns.progress,
    )
    for line in result.lines():
        console.print(line, markup=False, soft_wrap=True)
    if ns.json is not None:
        doc = dc.asdict(result) | {"cache_ratio": result.cache_ratio}
        atomic_write_json(ns.json, json.loads(json.dumps(doc, default=str)))
    return 0


def _run_bench_transfer(cfg: Namespace, console: Any) -> int:
    """`zooprobe bench transfer`."""
    from zooprobe.bench.transfer import markdown, transfer  # heavy: imports torch

    ns = cfg.bench.transfer
    unknown = sorted(set(_names(ns.folds)) - set(TRANSFER_GROUPS))
    if unknown:
        raise ConfigError(f"--folds: unknown {unknown}; choose from {', '.join(TRANSFER_GROUPS)}")
    doc = transfer(
        ns.corpus,
        foreign=list(ns.foreign or []),
        encoders=_names(ns.encoders),
        groups=tuple(_names(ns.folds)),
        output=ns.output,
        targets=_names(ns.targets) if ns.targets else None,
        overwrite=ns.overwrite,
        progress=ns.progress,
    )
    console.print(markdown(doc), markup=False, soft_wrap=True)
    console.print(f"written: {ns.output / 'transfer.md'}, {ns.output / 'transfer.json'}")
    return 0


def _run_bench_compare(cfg: Namespace, console: Any) -> int:
    """`zooprobe bench` (heads against the baselines)."""
    from zooprobe.bench.compare import compare  # heavy: imports torch

    ns = cfg.bench
    unknown = sorted(set(ns.methods) - set(METHODS))
    if unknown:
        raise ConfigError(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    result = compare(
        ns.zoo,
        ns.encoder,
        ns.output,
        tasks=tuple(ns.tasks),
        methods=tuple(ns.methods),
        finetune_epochs=ns.finetune_epochs,
        progress=ns.progress,
        allow_split_leaks=ns.allow_split_leaks,
        reference=ns.reference,
    )
    for line in [*result.table(), "", *result.quality()]:
        console.print(line, markup=False, soft_wrap=True)
    console.print(f"written: {ns.output / 'bench.md'}, {ns.output / 'bench.json'}, {ns.output / 'plots'}")
    return 0


__all__ = ["add_training_commands", "config_from_namespace", "format_metrics", "run_training_command"]
