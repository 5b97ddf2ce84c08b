"""``zooprobe encoder ...``: pretrain a weight-space encoder, benchmark one.

Registered on the top-level parser by `add_encoder_commands`; `run_encoder_command` executes a parsed
``encoder`` namespace. Options are the fields of `PretrainConfig` (``--config FILE.yaml`` and
``--print_config`` work as for the ``zoo`` commands).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace

from zooprobe.cli.common import (
    add_output_arguments,
    add_progress_arguments,
    add_push_arguments,
    check_push_arguments,
    config_parser,
    describe_options,
    new_parser,
    push_cli_output,
)
from zooprobe.core.progress import rank
from zooprobe.errors import ConfigError
from zooprobe.training.adapt_config import AdaptConfig
from zooprobe.training.pretrain_config import PretrainConfig

PRETRAIN_DESCRIPTION = (
    "Pretrain an encoder on a zoo: --architecture tokens (default) self-supervised on the train split "
    "(masked reconstruction + contrastive); --architecture neurons (encoder v3, permutation-invariant) "
    "supervised on the zoo's metadata: give it a zoo the heads will not be evaluated on; --architecture "
    "layers (the foundation encoder) supervised likewise. Options left unset "
    "take the preset's value (tiny: tests; small: the default encoder; bench: a larger encoder; `zooprobe "
    "presets encoder` lists them). Interrupted runs resume."
)

#: Help of `PretrainConfig` fields that carry no docstring of their own.
PRETRAIN_HELP = {
    "preset": "Base values for every option left unset: tiny (tests), small (the default encoder), bench.",
    "n_heads": "Attention heads per transformer block.",
    "dropout": "Dropout in the transformer blocks.",
    "max_global_pos": "Size of the global token-position table (longer sequences are windowed).",
    "epochs": "Training epochs.",
    "weight_decay": "AdamW weight decay.",
    "seed": "Seed of the initialization, batch order and augmentations.",
}


ADAPT_DESCRIPTION = (
    "Test-time adaptation: continue training a foundation encoder (--encoder, default foundation) "
    "self-supervised on the weights of --zoo (every split by default; no label of any split is read), into "
    "a new encoder folder that `zooprobe.load_encoder(OUTPUT)` loads. Interrupted runs resume."
)
ADAPT_HELP = {
    "epochs": "Training epochs.",
    "weight_decay": "AdamW weight decay.",
    "warmup_fraction": "Fraction of the steps spent in linear warmup before the cosine decay.",
    "min_lr_ratio": "Final learning rate as a fraction of lr.",
    "grad_clip": "Maximum gradient norm (0 disables clipping).",
    "seed": "Seed of the batch order and the views.",
}


def add_encoder_commands(top_subcommands: Any, wanted: Any = None) -> ArgumentParser:
    """Add the ``encoder`` subcommand (with ``pretrain`` and ``bench``) to `top_subcommands`; with
    `wanted` (a name predicate) only the wanted ones are built in full (``pretrain`` imports torch)."""
    wanted = wanted or (lambda name: True)
    encoder = new_parser("Weight-space encoder: pretrain on a zoo, benchmark.")
    top_subcommands.add_subcommand("encoder", encoder, help="Weight-space encoder: pretrain, bench.")
    if not wanted("encoder"):
        return encoder
    actions = encoder.add_subcommands(dest="action")

    pretrain = config_parser(PRETRAIN_DESCRIPTION)
    if wanted("pretrain"):
        pretrain.add_class_arguments(PretrainConfig, nested_key=None, skip={"encoder"})
    pretrain.add_argument(
        "--zoo",
        type=str,
        default="default",
        help="Zoo folder, Hub dataset repo id, 'default' or 'builtin:PRESET'.",
    )
    add_output_arguments(pretrain, "encoder and its training state")
    add_push_arguments(pretrain, "encoder")
    describe_options(pretrain, PRETRAIN_HELP)
    actions.add_subcommand("pretrain", pretrain, help="Pretrain an encoder (resumable).")

    adapt = config_parser(ADAPT_DESCRIPTION)
    adapt.add_class_arguments(AdaptConfig, nested_key=None)
    add_output_arguments(adapt, "adapted encoder and its training state")
    describe_options(adapt, ADAPT_HELP)
    actions.add_subcommand("adapt", adapt, help="Adapt an encoder to a zoo's weights (no labels; resumable).")

    bench = config_parser(
        "Encoding throughput and GFLOP/s (vs a plain matmul), ridge-probe R² for test accuracy of the "
        "embedding vs weight statistics, and tokenize+encode time and memory for a ResNet-18-sized model."
    )
    bench.add_argument(
        "--zoo",
        type=str,
        default="builtin:bench",
        help="Zoo to benchmark on (folder, Hub id, builtin:PRESET).",
    )
    bench.add_argument(
        "--encoder", type=str, default="default", help="Encoder folder, Hub model repo id, or 'default'."
    )
    bench.add_argument("--batch_size", type=int, default=64, help="Windows per encoder forward.")
    bench.add_argument("--resnet", type=bool, default=True, help="Also time a ResNet-18-sized state dict.")
    bench.add_argument(
        "--compare",
        type=str,
        default="",
        help="Other encoders (comma-separated names, folders or Hub ids, e.g. v2,v3) whose encoding speed "
        "is timed next to --encoder's on the same models (v2/v3 are pretrained once on first use).",
    )
    bench.add_argument("--repeats", type=int, default=3, help="Timed runs per encoder for --compare.")
    bench.add_argument("--json", type=Path | None, default=None, help="Also write the numbers to this file.")
    add_progress_arguments(bench)
    actions.add_subcommand("bench", bench, help="Benchmark an encoder.")
    return encoder


def pretrain_config(ns: Namespace) -> PretrainConfig:
    """The `PretrainConfig` of a parsed ``encoder pretrain`` namespace (preset fields still unset)."""

    names = [f.name for f in dataclasses.fields(PretrainConfig) if f.name != "encoder"]
    return PretrainConfig(**{name: ns.get(name) for name in names if name in ns})


def run_encoder_command(ns: Namespace, console: Any) -> int:
    """Run a parsed ``encoder`` namespace (``cfg.encoder``); returns the exit status."""
    action = ns.action
    sub = ns[action]
    if action == "pretrain":
        from zooprobe.api import pretrain_encoder  # heavy: imports torch
        from zooprobe.training.pretrain import (  # heavy: imports torch
            LAST_DIR,
            STATE_FILE,
            TB_DIR,
            training_history,
        )

        check_push_arguments(sub)
        out = pretrain_encoder(
            pretrain_config(sub), sub.zoo, sub.output, resume=not sub.overwrite, progress=sub.progress
        )
        if rank() != 0:
            return 0  # under torchrun only rank 0 reports (and pushes)
        history = training_history(out)
        last = history[-1] if history else {}
        best = min(history, key=lambda r: r.get("val_loss", r["train_loss"])) if history else {}
        console.print(
            f"encoder written to {out} (best epoch {best.get('epoch')}, "
            f"loss {best.get('val_loss', best.get('train_loss', float('nan'))):.4f}; "
            f"{last.get('epoch', 0)} epoch(s) trained); TensorBoard logs in {out / TB_DIR}"
        )
        push_cli_output(  # the encoder and its TensorBoard logs; not the resumable training state
            sub,
            out,
            repo_type="model",
            what="encoder",
            console=console,
            ignore_patterns=[f"{LAST_DIR}/", STATE_FILE, "*.tmp"],
            delete_patterns=[f"{TB_DIR}/**"],  # logs of an earlier push would mix into the training curves
        )
        return 0
    if action == "adapt":
        return _run_adapt(sub, console)
    if action == "bench":
        return _run_bench(sub, console)
    raise AssertionError(f"unhandled encoder action {action!r}")


def _run_bench(sub: Namespace, console: Any) -> int:
    from zooprobe.bench.encoder import bench_encoder, format_report  # heavy: imports torch
    from zooprobe.core.files import atomic_write_json  # heavy: imports torch

    compare = [c.strip() for c in str(sub.compare or "").split(",") if c.strip()]
    if sub.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {sub.repeats}")
    result = bench_encoder(
        sub.zoo,
        sub.encoder,
        batch_size=sub.batch_size,
        resnet=sub.resnet,
        progress=sub.progress,
        compare=compare,
        repeats=sub.repeats,
    )
    for line in format_report(result):
        console.print(line, highlight=False)
    if sub.json is not None:
        atomic_write_json(sub.json, json.loads(json.dumps(result, default=str)))
    return 0


def adapt_config(ns: Namespace) -> AdaptConfig:
    """The `AdaptConfig` of a parsed ``encoder adapt`` namespace."""
    names = [f.name for f in dataclasses.fields(AdaptConfig)]
    return AdaptConfig(**{name: ns.get(name) for name in names if name in ns})


def _run_adapt(sub: Namespace, console: Any) -> int:
    from zooprobe.api import adapt_encoder  # heavy: imports torch
    from zooprobe.training.pretrain import training_history  # heavy: imports torch

    out = adapt_encoder(adapt_config(sub), sub.output, resume=not sub.overwrite, progress=sub.progress)
    if rank() != 0:
        return 0
    history = training_history(out)
    last = history[-1] if history else {}
    nan = float("nan")
    loss, contrastive = last.get("train_loss", nan), last.get("train_contrastive", nan)
    console.print(
        f"adapted encoder written to {out} ({last.get('epoch', 0)} epoch(s), loss {loss:.4f}: contrastive "
        f"{contrastive:.4f}, anchor {last.get('train_anchor', nan):.4f}); load it with "
        f"zooprobe.load_encoder({str(out)!r})"
    )
    return 0


__all__ = ["adapt_config", "add_encoder_commands", "pretrain_config", "run_encoder_command"]
