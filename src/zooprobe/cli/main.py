"""The ``zooprobe`` command line: a thin layer over the Python API.

Every subcommand takes ``--config FILE.yaml`` and ``--print_config`` (jsonargparse); options are the
fields of the same typed dataclasses the Python API uses. Nothing heavy (torch, pandas) is imported before
the arguments are parsed, and only the subcommand a command line names is built in full, so ``--help``
answers at once.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace, set_parsing_settings

from zooprobe._version import __version__
from zooprobe.cli.app import add_app_command, run_app_command
from zooprobe.cli.common import (
    add_output_arguments,
    add_progress_arguments,
    add_push_arguments,
    check_config_files,
    check_push_arguments,
    config_parser,
    new_parser,
    normalize_arguments,
    parse_error_message,
    push_cli_output,
    refuse_yaml_aliases,
)
from zooprobe.cli.encoder import add_encoder_commands, run_encoder_command
from zooprobe.cli.push import add_push_command, run_push_command
from zooprobe.cli.report import add_report_commands, run_report_command
from zooprobe.cli.train import add_training_commands, run_training_command
from zooprobe.core.outputs import holding_outputs_block
from zooprobe.core.progress import configure_logging
from zooprobe.core.state_dicts import DEFAULT_MAX_PARAMS
from zooprobe.errors import ZooprobeError, error_message
from zooprobe.zoo.space import ZooConfig

set_parsing_settings(  # dataclass field docs become --help text; `--print_completion shtab-bash|zsh`
    docstring_parse_attribute_docstrings=True, add_print_completion_argument=True
)
refuse_yaml_aliases()  # --config files and option values: no YAML aliases (billion laughs)

Wanted = Callable[[str], bool]
"""Whether a (sub)command is built in full; the others are placeholders carrying only their help."""


def add_command(
    top: Any, name: str, help: str, description: str, build: Callable[[], Any], wanted: Wanted
) -> None:
    """Add subcommand `name` to `top`: built by `build` if `wanted`, else a placeholder (fast ``--help``)."""
    top.add_subcommand(name, build() if wanted(name) else new_parser(description), help=help)


def build_parser(argv: Sequence[str] | None = None) -> ArgumentParser:
    """The whole command line, or (given `argv`) the subcommands `argv` names in full and the others as
    placeholders: building a parser imports nothing heavy, and only what the command needs is built."""
    named = None if argv is None or "--print_completion" in argv else set(argv)

    def wanted(name: str) -> bool:
        return named is None or name in named

    root = new_parser(
        "Read a neural network's weights and tell what it is. "
        "Subcommands: zoo, encoder, train, evaluate, report, predict, push, bench, demo, presets, app.",
        prog="zooprobe",
    )
    root.add_argument("--version", action="version", version=f"zooprobe {__version__}")
    top = root.add_subcommands(dest="command")

    zoo = new_parser("Subject-model zoos: build, merge, import, summarize, benchmark.")
    top.add_subcommand("zoo", zoo, help="Subject-model zoos.")

    def demo() -> Any:
        parser = config_parser(DEMO_DESCRIPTION)
        parser.add_argument(
            "--preset", type=str, default="small", help="Built-in zoo preset to use (tiny, small, bench)."
        )
        parser.add_argument(
            "--output", type=Path, default=Path("runs/demo"), help="Folder for the run folders."
        )
        add_progress_arguments(parser)
        return parser

    add_command(top, "demo", "Run the main job on the built-in default.", DEMO_DESCRIPTION, demo, wanted)

    def presets() -> Any:
        parser = config_parser(PRESETS_DESCRIPTION)
        parser.add_argument(
            "kind",
            type=str | None,
            default=None,
            nargs="?",
            help="Only this kind: zoo, encoder, head or demo (default: all of them).",
        )
        return parser

    add_command(top, "presets", "Print every preset and its values.", PRESETS_DESCRIPTION, presets, wanted)
    add_encoder_commands(top, wanted)  # before the zoo's own subcommands: jsonargparse adds levels in order
    add_training_commands(top, wanted)
    add_report_commands(top, wanted)
    add_push_command(top, wanted)
    add_app_command(top, wanted)
    add_zoo_commands(zoo, wanted)
    return root


DEMO_DESCRIPTION = (
    "The main job on the built-in default: the default zoo and encoder (built once, cached), the three "
    "heads trained frozen plus one fine-tuning run, and a table of test metrics next to weight statistics "
    "+ LightGBM on the same split."
)
PRESETS_DESCRIPTION = (
    "Print every preset with its values: zoo presets (zoo build --preset), encoder presets (encoder "
    "pretrain --preset), the head-training settings the demo uses (per mode) and the demo's runs."
)


ROW_GROUP_HELP = (
    "Rows per Parquet row group of the zoo's files, the unit a large zoo is read in (default: 64, fewer "
    "where 64 rows would hold more than 64 MiB of weights)."
)


def add_zoo_commands(zoo: Any, wanted: Wanted) -> None:
    """The ``zoo`` subcommands (build, merge, summary, bench, import-*)."""
    if not wanted("zoo"):
        return
    zs = zoo.add_subcommands(dest="action")
    build = config_parser(
        "Generate a zoo offline. Options left unset take the preset's value (tiny: tests; small: the "
        "default zoo; bench: >= 2000 models). Interrupted builds resume; --shard i/n builds a disjoint part."
    )
    build.add_class_arguments(ZooConfig, nested_key=None)
    add_output_arguments(build, "zoo")
    build.add_argument(
        "--shard",
        type=str | None,
        default=None,
        help="Build only shard i of n, e.g. 0/4 (under torchrun each process builds its own shard).",
    )
    build.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Processes training cohorts side by side (0: one per core, at most 8, for builds of at least "
        "128 runs; 1: in this process). Torch threads are shared out among them.",
    )
    build.add_argument(
        "--batched", type=bool, default=True, help="Population-batched training (False: one at a time)."
    )
    build.add_argument(
        "--row_group_size",
        type=int | None,
        default=None,
        help=ROW_GROUP_HELP,
    )
    add_push_arguments(build, "zoo")
    zs.add_subcommand("build", build, help="Generate a zoo (resumable, shardable).")

    merge = config_parser(
        "Merge shard folders built with the same configuration into one zoo: `zooprobe zoo merge OUT SHARD "
        "SHARD...` (or `--output OUT SHARD...`)."
    )
    merge.add_argument(
        "--output",
        type=Path | None,
        default=None,
        help="Zoo folder to write (default: the first folder given).",
    )
    merge.add_argument(
        "folders", type=Path, nargs="+", help="OUT (unless --output is given), then the shard folders."
    )
    merge.add_argument(
        "--row_group_size",
        type=int | None,
        default=None,
        help=ROW_GROUP_HELP,
    )
    zs.add_subcommand("merge", merge, help="Merge shard folders into one zoo.")

    summary = config_parser("Print counts per field and accuracy quantiles of a zoo.")
    summary.add_argument("source", type=str, help="Zoo folder, Hub dataset repo id, or 'default'.")
    summary.add_argument(
        "--revision", type=str | None, default=None, help="Hub revision (branch, tag, commit)."
    )
    zs.add_subcommand("summary", summary, help="Summarize a zoo.")

    verify = config_parser(
        "Recompute the content hashes of a generated zoo (each cohort's rows and weights) and compare them "
        "with its manifest and, with --against, with a corpus manifest (e.g. a committed one). Exit 1 on a "
        "mismatch."
    )
    verify.add_argument("folder", type=Path, help="Zoo folder built by `zooprobe zoo build`.")
    verify.add_argument(
        "--against",
        type=Path | None,
        default=None,
        help="A zoo manifest (zooprobe_manifest.json) whose recorded hashes the zoo must match.",
    )
    zs.add_subcommand("verify", verify, help="Check a generated zoo against its recorded content hashes.")

    bench = config_parser(
        "Train the same sampled runs batched and one at a time; print models/s and the ratio."
    )
    bench.add_class_arguments(ZooConfig, nested_key=None, skip={"n_models"})
    bench.set_defaults(preset="bench")
    bench.add_argument("--n_models", type=int, default=256, help="Runs to train on each path.")
    bench.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Worker processes of the batched path, as in `zoo build` (0: automatic; 1: one process).",
    )
    add_progress_arguments(bench)
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
    add_progress_arguments(imp)
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
    add_progress_arguments(mz)
    mz.add_argument("--accuracy_percent", type=bool, default=False, help="Accuracies given in percent.")
    zs.add_subcommand("import-modelzoos", mz, help="Import the Model Zoos layout.")

    flat = config_parser(
        "Import a flat-vector zoo: one weight vector per checkpoint (a 2-D .npy or .safetensors array, "
        "memory-mapped), a layout (CSV or JSON: name, shape, start/end or offset) and a metadata table (CSV, "
        "CSV.GZ, JSONL or Parquet; row i describes vector i). Streams in chunks; a killed import resumes."
    )
    flat.add_argument("weights", type=Path, help="Weights: .npy or .safetensors, one row per checkpoint.")
    flat.add_argument("--layout", type=Path, required=True, help="CSV (name,start_idx,end_idx,shape), JSON.")
    flat.add_argument("--metadata", type=Path, required=True, help="Metadata table, one row per weights row.")
    add_output_arguments(flat, "zoo")
    flat.add_argument("--weights_key", type=str | None, default=None, help="Tensor of a safetensors file.")
    flat.add_argument(
        "--layout_convention",
        type=str,
        default="torch",
        help="torch (stored as PyTorch holds them) or keras (HWIO conv, (in, out) dense kernels: transpose).",
    )
    flat.add_argument("--names", type=dict[str, str] | None, default=None, help="Layout name -> tensor name.")
    flat.add_argument("--columns", type=dict[str, str] | None, default=None, help="Column -> zoo field.")
    flat.add_argument("--id_column", type=str | None, default=None, help="Run id column (default: model_id).")
    flat.add_argument("--checkpoint_column", type=str | None, default=None, help="Checkpoint (epoch) column.")
    flat.add_argument("--split_column", type=str, default="split", help="Column with train/validation/test.")
    cnnzoo = config_parser(
        "Import one dataset of the Small CNN Zoo (Unterthiner et al. 2020; weights.npy, layout.csv, "
        "metrics.csv.gz): Keras kernels transposed to PyTorch, tensors named as zooprobe.zoo.cnnzoo.SmallCNN "
        "(zoo.model(i) runs), metadata mapped to zoo fields. Streams in chunks; a killed import resumes."
    )
    cnnzoo.add_argument("directory", type=Path, help="The extracted dataset folder (e.g. cifar10/).")
    add_output_arguments(cnnzoo, "zoo")
    for parser in (flat, cnnzoo):
        parser.add_argument(
            "--step", type=str, default="final", help="final (each run's last checkpoint), all, or one value."
        )
        parser.add_argument("--max_runs", type=int | None, default=None, help="Import only the first N runs.")
        parser.add_argument(
            "--split_file",
            type=Path | None,
            default=None,
            help="NFN / Neural Graphs split CSV (row order, no header): their 40/10/50 protocol.",
        )
        parser.add_argument("--seed", type=int, default=0, help="Seed of the hash split (no split file).")
        parser.add_argument(
            "--skip_invalid", type=bool, default=False, help="Skip bad rows (and report them), do not fail."
        )
        parser.add_argument(
            "--accuracy_percent", type=bool, default=False, help="Accuracies given in percent."
        )
    zs.add_subcommand("import-flat", flat, help="Import flat weight vectors + a layout + a metadata table.")
    zs.add_subcommand("import-cnnzoo", cnnzoo, help="Import the Small CNN Zoo (Unterthiner et al. 2020).")


def _zoo_config(ns: Namespace) -> ZooConfig:

    return ZooConfig(**{f.name: ns.get(f.name) for f in dataclasses.fields(ZooConfig) if f.name in ns})


def _option(ns: Namespace, name: str) -> Any:
    """The value of option `name` in the chosen subcommand's namespace (None if it has none)."""
    for key, value in ns.items():
        if key == name or key.endswith(f".{name}"):
            return value
    return None


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
    if cfg.command == "app":
        return run_app_command(cfg.app)
    if cfg.command == "presets":
        _print_presets(cfg.presets.kind)
        return 0
    if cfg.command == "demo":
        from zooprobe.demo import run_demo  # heavy: imports torch

        run_demo(cfg.demo.preset, cfg.demo.output, console=console, progress=cfg.demo.progress)
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
            workers=ns.workers,
            row_group_size=ns.row_group_size,
            overwrite=ns.overwrite,
            progress=ns.progress,
        )
        if report.rank:
            return 0  # under torchrun, process 0 reports (and pushes) for all
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
        from zooprobe.core.files import load_yaml_text  # heavy: yaml
        from zooprobe.zoo.build import merge_zoo  # heavy: imports torch
        from zooprobe.zoo.store import Zoo  # heavy: imports torch
        from zooprobe.zoo.summary import print_summary  # heavy: imports torch

        folders = []
        for f in map(str, ns.folders):  # `'["a", "b"]'` (the list form before zooprobe 0.2) still works
            items = load_yaml_text(f) if f.lstrip().startswith("[") else [f]
            folders += [Path(str(item)) for item in items]
        output, shards = (Path(ns.output), folders) if ns.output is not None else (folders[0], folders[1:])
        if not shards:
            raise ZooprobeError("zoo merge: no shard folders given; usage: zooprobe zoo merge OUT SHARD...")
        report = merge_zoo(output, shards, row_group_size=ns.row_group_size)
        console.print(report.summary())
        print_summary(Zoo.open(output), console)
        return 0
    if action == "summary":
        from zooprobe.api import load_zoo  # heavy: imports torch
        from zooprobe.zoo.summary import print_summary  # heavy: imports torch

        print_summary(load_zoo(ns.source, revision=ns.revision), console)
        return 0
    if action == "verify":
        from zooprobe.zoo.content import verify_zoo  # heavy: imports torch

        result = verify_zoo(ns.folder, ns.against)
        console.print(result.summary(), markup=False, highlight=False)
        return 0 if result.ok else 1
    if action == "bench":
        from zooprobe.bench.zoo import bench_zoo  # heavy: imports torch

        result = bench_zoo(_zoo_config(ns), n_models=ns.n_models, workers=ns.workers, progress=ns.progress)
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
    if action in ("import-flat", "import-cnnzoo"):
        from zooprobe.zoo import flat  # heavy: imports torch

        importer = flat.import_flat if action == "import-flat" else flat.import_cnnzoo
        report = importer(**_arguments_of(importer, ns))
        console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
        return 0
    raise AssertionError(f"unhandled command {cfg}")


PRESET_COMMANDS = (("zoo", "build"), ("zoo", "bench"), ("encoder", "pretrain"))
"""Commands whose unset options take a preset's value: ``--print_config`` shows the resolved values."""


def _print_resolved_config(cfg: Namespace, path: list[str], leaf: Any) -> None:
    """``--print_config`` of a preset command: every option with the value the run will use (preset
    fields resolved), as YAML that ``--config`` reads back."""
    ns = cfg
    for name in path:
        ns = ns[name]
    if tuple(path) == ("encoder", "pretrain"):
        from zooprobe.cli.encoder import pretrain_config  # heavy: imports torch

        resolved: Any = pretrain_config(ns).resolved()
    else:
        resolved = _zoo_config(ns).resolved()
    for f in dataclasses.fields(resolved):
        if f.name in ns and not dataclasses.is_dataclass(getattr(resolved, f.name)):
            value = getattr(resolved, f.name)
            ns[f.name] = list(value) if isinstance(value, tuple) else value
    ns = ns.clone()
    ns.pop("config", None)
    print(leaf.dump(ns, skip_validation=True), end="")


def _print_presets(kind: str | None) -> None:
    """``zooprobe presets [KIND]``: every preset and its values."""
    import yaml  # heavy: yaml (only for this command)

    from zooprobe.api import list_presets  # heavy: imports torch
    from zooprobe.demo import DEMO_RUNS  # heavy: imports torch

    kinds: dict[str, Any] = dict(list_presets())
    kinds["demo"] = {
        "runs": [
            {"task": task, "mode": mode, "settings": f"head preset {mode!r}"} for task, mode in DEMO_RUNS
        ],
        "zoo": "the built-in zoo of `zooprobe demo --preset` (default small)",
        "encoder": "default (encoder preset small, pretrained on the default zoo)",
    }
    if kind is not None and kind not in kinds:
        raise ZooprobeError(f"presets: unknown kind {kind!r}; choose one of {', '.join(kinds)}")
    notes = {
        "zoo": "zooprobe zoo build --preset NAME (unset options take these values)",
        "encoder": "zooprobe encoder pretrain --preset NAME (unset options take these values)",
        "encoder-neurons": "zooprobe encoder pretrain --architecture neurons --preset NAME",
        "head": "head-training settings the demo uses, by mode (zooprobe train: add them as options)",
        "demo": "what zooprobe demo runs",
    }

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    for name, presets in kinds.items():
        if kind is not None and name != kind:
            continue
        text = yaml.dump(
            {name: presets}, Dumper=_NoAliases, sort_keys=False, default_flow_style=None, width=1000
        )
        print(f"# {name}: {notes.get(name, '')}\n{text}", end="")


_DEFAULT_FORMATWARNING = warnings.formatwarning


def _format_warning(
    message: Any, category: type[Warning], filename: str, lineno: int, line: Any = None
) -> str:
    """zooprobe's own warnings (user warnings) as one ``zooprobe: warning: ...`` line, like its errors;
    other libraries' warnings keep Python's format (file and line help report them upstream)."""
    if issubclass(category, UserWarning) and "zooprobe" in filename:
        return f"zooprobe: warning: {message}\n"
    return _DEFAULT_FORMATWARNING(message, category, filename, lineno, line)


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    raw = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(raw)
    args, path, leaf = normalize_arguments(parser, raw)
    resolve = tuple(path) in PRESET_COMMANDS and "--print_config" in args and "--help" not in args
    if resolve:
        args = [a for a in args if a != "--print_config"]
    try:
        check_config_files(args, leaf)
    except ZooprobeError as e:
        print(f"zooprobe: error: {e}", file=sys.stderr)
        return 2
    try:
        cfg = parser.parse_args(args)
    except Exception as e:  # jsonargparse's ArgumentError: a command line it refused
        if type(e).__name__ != "ArgumentError":
            raise
        print(parse_error_message(str(e), path, leaf), file=sys.stderr)
        return 2
    try:
        if resolve:
            _print_resolved_config(cfg, path, leaf)
            return 0
        configure_logging(_option(cfg, "log_level") or "info")
        with holding_outputs_block():  # output-folder locks last for the command
            return _run(cfg)
    except (ZooprobeError, MemoryError, OSError) as e:  # one line, no traceback (`error_message`)
        print(error_message(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "zooprobe: interrupted; finished work is saved, run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
