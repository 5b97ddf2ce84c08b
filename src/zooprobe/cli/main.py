"""The ``zooprobe`` command line: a thin layer over the Python API.

Every subcommand takes ``--config FILE.yaml`` and ``--print_config`` (jsonargparse); options are the
fields of the same typed dataclasses the Python API uses.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace, set_parsing_settings

from zooprobe._version import __version__
from zooprobe.cli.common import (
    add_output_arguments,
    add_push_arguments,
    check_push_arguments,
    config_parser,
    push_cli_output,
)
from zooprobe.cli.encoder import add_encoder_commands, run_encoder_command
from zooprobe.cli.push import add_push_command, run_push_command
from zooprobe.cli.report import add_report_commands, run_report_command
from zooprobe.cli.train import add_training_commands, run_training_command
from zooprobe.core.checkpoints import DEFAULT_MAX_PARAMS
from zooprobe.errors import ZooprobeError
from zooprobe.zoo.space import ZooConfig

set_parsing_settings(docstring_parse_attribute_docstrings=True)  # dataclass field docs become --help text


def build_parser() -> ArgumentParser:
    root = ArgumentParser(
        prog="zooprobe",
        description=(
            "Read a neural network's weights and tell what it is. "
            "Subcommands: zoo, encoder, train, evaluate, report, predict, push, bench, demo."
        ),
    )
    root.add_argument("--version", action="version", version=f"zooprobe {__version__}")
    top = root.add_subcommands(dest="command")

    zoo = ArgumentParser(description="Subject-model zoos: build, merge, import, summarize, benchmark.")
    demo = config_parser(
        "The main job on the built-in default: the default zoo and encoder (built once, cached), the three "
        "heads trained frozen plus one fine-tuning run, and a table of test metrics."
    )
    demo.add_argument("--preset", type=str, default="small", help="Built-in zoo preset to use.")
    demo.add_argument("--output", type=Path, default=Path("runs/demo"), help="Folder for the run folders.")
    top.add_subcommand("zoo", zoo, help="Subject-model zoos.")
    top.add_subcommand("demo", demo, help="Run the main job on the built-in default.")
    add_encoder_commands(top)  # before the zoo's own subcommands: jsonargparse adds levels in order
    add_training_commands(top)
    add_report_commands(top)
    add_push_command(top)

    zs = zoo.add_subcommands(dest="action")
    build = config_parser(
        "Generate a zoo offline. Options left unset take the preset's value (tiny: tests; small: the "
        "default zoo; bench: >= 2000 models). Interrupted builds resume; --shard i/n builds a disjoint part."
    )
    build.add_class_arguments(ZooConfig, nested_key=None)
    add_output_arguments(build, "zoo")
    build.add_argument("--shard", type=str | None, default=None, help="Build only shard i of n, e.g. 0/4.")
    build.add_argument(
        "--batched", type=bool, default=True, help="Population-batched training (False: one at a time)."
    )
    add_push_arguments(build, "zoo")
    zs.add_subcommand("build", build, help="Generate a zoo (resumable, shardable).")

    merge = config_parser("Merge shard folders built with the same configuration into one zoo.")
    merge.add_argument("--output", type=Path, required=True, help="Zoo folder to write.")
    merge.add_argument("shards", type=list[Path], help="Shard folders (their --output).")
    zs.add_subcommand("merge", merge, help="Merge shard folders into one zoo.")

    summary = config_parser("Print counts per field and accuracy quantiles of a zoo.")
    summary.add_argument("source", type=str, help="Zoo folder, Hub dataset repo id, or 'default'.")
    summary.add_argument(
        "--revision", type=str | None, default=None, help="Hub revision (branch, tag, commit)."
    )
    zs.add_subcommand("summary", summary, help="Summarize a zoo.")

    bench = config_parser(
        "Train the same sampled runs batched and one at a time; print models/s and the ratio."
    )
    bench.add_class_arguments(ZooConfig, nested_key=None, skip={"n_models"})
    bench.set_defaults(preset="bench")
    bench.add_argument("--n_models", type=int, default=256, help="Runs to train on each path.")
    zs.add_subcommand("bench", bench, help="Benchmark population-batched training.")

    imp = config_parser(
        "Import a folder of checkpoints (safetensors or .pt) described by a CSV or JSONL file."
    )
    imp.add_argument("folder", type=Path, help="Folder with the checkpoint files.")
    imp.add_argument("--metadata", type=Path, required=True, help="CSV or JSONL, one row per checkpoint.")
    imp.add_argument("--output", type=Path, required=True, help="Zoo folder to write.")
    imp.add_argument("--file_column", type=str, default="file", help="Column naming the checkpoint file.")
    imp.add_argument(
        "--id_column", type=str | None, default=None, help="Column with the run id (default: file stem)."
    )
    imp.add_argument(
        "--split_column", type=str, default="split", help="Column with train/validation/test, if any."
    )
    imp.add_argument(
        "--skip_invalid", type=bool, default=False, help="Skip bad rows (and report them) instead of failing."
    )
    imp.add_argument(
        "--seed", type=int, default=0, help="Seed of the split assignment when there is no split column."
    )
    imp.add_argument("--overwrite", type=bool, default=False, help="Replace an existing OUTPUT folder.")
    imp.add_argument("--accuracy_percent", type=bool, default=False, help="Accuracies given in percent.")
    imp.add_argument(
        "--max_params",
        type=int,
        default=DEFAULT_MAX_PARAMS,
        help="Refuse a checkpoint holding more values than this, before reading it.",
    )
    zs.add_subcommand("import-folder", imp, help="Import checkpoint files + a metadata table.")

    mz = config_parser("Import a zoo in the Model Zoos layout (params.json, result.json, checkpoint_*/).")
    mz.add_argument("root", type=Path, help="Folder with one directory per model.")
    mz.add_argument("--output", type=Path, required=True, help="Zoo folder to write.")
    mz.add_argument("--epochs", type=str, default="last", help="'last' (final checkpoint) or 'all'.")
    mz.add_argument(
        "--skip_invalid",
        type=bool,
        default=False,
        help="Skip bad models (and report them) instead of failing.",
    )
    mz.add_argument("--seed", type=int, default=0, help="Seed of the split assignment.")
    mz.add_argument("--overwrite", type=bool, default=False, help="Replace an existing OUTPUT folder.")
    mz.add_argument("--accuracy_percent", type=bool, default=False, help="Accuracies given in percent.")
    zs.add_subcommand("import-modelzoos", mz, help="Import the Model Zoos layout.")
    return root


def _zoo_config(ns: Namespace) -> ZooConfig:

    return ZooConfig(**{f.name: ns.get(f.name) for f in dataclasses.fields(ZooConfig) if f.name in ns})


def _arguments_of(function: Any, ns: Namespace) -> dict[str, Any]:
    """The options of `ns` that `function` takes as parameters (the CLI's names are the API's)."""
    return {name: ns[name] for name in inspect.signature(function).parameters if name in ns}


def _run(cfg: Namespace) -> int:
    from rich.console import Console  # heavy: rich

    console = Console()
    if cfg.command == "encoder":
        return run_encoder_command(cfg.encoder, console)
    if cfg.command in ("train", "evaluate", "bench"):
        return run_training_command(cfg, console)
    if cfg.command in ("report", "predict"):
        return run_report_command(cfg, console)
    if cfg.command == "push":
        return run_push_command(cfg, console)
    if cfg.command == "demo":
        from zooprobe.demo import run_demo  # heavy: imports torch

        run_demo(cfg.demo.preset, cfg.demo.output, console=console)
        return 0
    action = cfg.zoo.action
    ns = cfg.zoo[action]
    if action == "build":
        from zooprobe.zoo.build import build_zoo  # heavy: imports torch
        from zooprobe.zoo.store import Zoo  # heavy: imports torch
        from zooprobe.zoo.summary import print_summary  # heavy: imports torch

        check_push_arguments(ns)
        report = build_zoo(
            _zoo_config(ns),
            ns.output,
            shard=ns.shard,
            batched=ns.batched,
            overwrite=ns.overwrite,
            progress=ns.progress,
        )
        console.print(report.summary())
        if report.finalized:
            print_summary(Zoo.open(ns.output), console)
        if ns.push_to_hub and not report.finalized:
            raise ZooprobeError("--push_to_hub: the zoo is not finished (a --shard build?); merge it first")
        push_cli_output(
            ns,
            ns.output,
            repo_type="dataset",
            what="zoo",
            console=console,
            ignore_patterns=[".parts/", ".zooprobe-writing", "*.tmp"],
            delete_patterns=["data/**"],  # no stale shard of an earlier push may stay next to the new ones
        )
        return 0
    if action == "merge":
        from zooprobe.zoo.build import merge_zoo  # heavy: imports torch
        from zooprobe.zoo.store import Zoo  # heavy: imports torch
        from zooprobe.zoo.summary import print_summary  # heavy: imports torch

        report = merge_zoo(ns.output, ns.shards)
        console.print(report.summary())
        print_summary(Zoo.open(ns.output), console)
        return 0
    if action == "summary":
        from zooprobe.api import load_zoo  # heavy: imports torch
        from zooprobe.zoo.summary import print_summary  # heavy: imports torch

        print_summary(load_zoo(ns.source, revision=ns.revision), console)
        return 0
    if action == "bench":
        from zooprobe.bench.zoo import bench_zoo  # heavy: imports torch

        result = bench_zoo(_zoo_config(ns), n_models=ns.n_models)
        for line in result.lines():
            console.print(line)
        return 0
    if action in ("import-folder", "import-modelzoos"):
        from zooprobe.zoo import importers  # heavy: imports torch

        importer = (
            importers.import_checkpoint_folder if action == "import-folder" else importers.import_model_zoos
        )
        report = importer(**_arguments_of(importer, ns))
        console.print(report.summary())
        return 0
    raise AssertionError(f"unhandled command {cfg}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    cfg = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _run(cfg)
    except ZooprobeError as e:
        print(f"zooprobe: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            "zooprobe: error: out of memory; use smaller inputs or batches (e.g. --encode_batch_size), or a "
            "machine with more memory",
            file=sys.stderr,
        )
        return 2
    except OSError as e:  # a file system refusal met while writing (disk full, permissions changed)
        where = f" ({e.filename})" if e.filename else ""
        print(f"zooprobe: error: {e.strerror or e}{where}; nothing more was written", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "zooprobe: interrupted; finished work is saved, run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
