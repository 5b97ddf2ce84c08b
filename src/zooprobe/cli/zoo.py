"""The ``zooprobe zoo`` subcommands: their parsers (one function each) and how each runs."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from zooprobe.cli.common import (
    Wanted,
    add_output_arguments,
    add_progress_arguments,
    add_push_arguments,
    check_push_arguments,
    config_parser,
    push_cli_output,
)
from zooprobe.core.state_dicts import DEFAULT_MAX_PARAMS
from zooprobe.errors import ZooprobeError
from zooprobe.zoo.config import ZooConfig

ROW_GROUP_HELP = (
    "Rows per Parquet row group of the zoo's files, the unit a large zoo is read in (default: 64, fewer "
    "where 64 rows would hold more than 64 MiB of weights)."
)


def _build_parser() -> Any:
    """The parser of ``zoo build``."""
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
    return build


def _merge_parser() -> Any:
    """The parser of ``zoo merge``."""
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
    return merge


def _summary_parser() -> Any:
    """The parser of ``zoo summary``."""
    summary = config_parser("Print counts per field and accuracy quantiles of a zoo.")
    summary.add_argument("source", type=str, help="Zoo folder, Hub dataset repo id, or 'default'.")
    summary.add_argument(
        "--revision", type=str | None, default=None, help="Hub revision (branch, tag, commit)."
    )
    return summary


def _verify_parser() -> Any:
    """The parser of ``zoo verify``."""
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
    return verify


def _bench_parser() -> Any:
    """The parser of ``zoo bench``."""
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
    return bench


def _import_folder_parser() -> Any:
    """The parser of ``zoo import-folder``."""
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
    return imp


def _import_modelzoos_parser() -> Any:
    """The parser of ``zoo import-modelzoos``."""
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
    return mz


def _import_flat_parser() -> tuple[Any, Any]:
    """The parsers of ``zoo import-flat`` and ``zoo import-cnnzoo`` (shared options declared once)."""
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
    return flat, cnnzoo


def add_zoo_commands(zoo: Any, wanted: Wanted) -> None:
    """The ``zoo`` subcommands (build, merge, summary, bench, import-*)."""
    if not wanted("zoo"):
        return
    zs = zoo.add_subcommands(dest="action")
    zs.add_subcommand("build", _build_parser(), help="Generate a zoo (resumable, shardable).")
    zs.add_subcommand("merge", _merge_parser(), help="Merge shard folders into one zoo.")
    zs.add_subcommand("summary", _summary_parser(), help="Summarize a zoo.")
    zs.add_subcommand(
        "verify", _verify_parser(), help="Check a generated zoo against its recorded content hashes."
    )
    zs.add_subcommand("bench", _bench_parser(), help="Benchmark population-batched training.")
    zs.add_subcommand(
        "import-folder", _import_folder_parser(), help="Import checkpoint files + a metadata table."
    )
    zs.add_subcommand("import-modelzoos", _import_modelzoos_parser(), help="Import the Model Zoos layout.")
    flat, cnnzoo = _import_flat_parser()
    zs.add_subcommand("import-flat", flat, help="Import flat weight vectors + a layout + a metadata table.")
    zs.add_subcommand("import-cnnzoo", cnnzoo, help="Import the Small CNN Zoo (Unterthiner et al. 2020).")


def _zoo_config(ns: Namespace) -> ZooConfig:
    """The `ZooConfig` the options of ``zoo build`` / ``zoo bench`` describe (unset: the preset's value)."""
    return ZooConfig(**{f.name: ns.get(f.name) for f in dataclasses.fields(ZooConfig) if f.name in ns})


def _arguments_of(function: Any, ns: Namespace) -> dict[str, Any]:
    """The options of `ns` that `function` takes as parameters (the CLI's names are the API's)."""
    return {name: ns[name] for name in inspect.signature(function).parameters if name in ns}


def _run_build(action: str, ns: Namespace, console: Any) -> int:
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
    console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
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


def _run_merge(action: str, ns: Namespace, console: Any) -> int:
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
    console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    print_summary(Zoo.open(output), console)
    return 0


def _run_summary(action: str, ns: Namespace, console: Any) -> int:
    from zooprobe.api import load_zoo  # heavy: imports torch
    from zooprobe.zoo.summary import print_summary  # heavy: imports torch

    print_summary(load_zoo(ns.source, revision=ns.revision), console)
    return 0


def _run_verify(action: str, ns: Namespace, console: Any) -> int:
    from zooprobe.zoo.content import verify_zoo  # heavy: imports torch

    result = verify_zoo(ns.folder, ns.against)
    console.print(result.summary(), markup=False, highlight=False, soft_wrap=True)
    return 0 if result.ok else 1


def _run_bench(action: str, ns: Namespace, console: Any) -> int:
    from zooprobe.bench.zoo import bench_zoo  # heavy: imports torch

    result = bench_zoo(_zoo_config(ns), n_models=ns.n_models, workers=ns.workers, progress=ns.progress)
    for line in result.lines():
        console.print(line)
    return 0


def _run_import_checkpoints(action: str, ns: Namespace, console: Any) -> int:
    from zooprobe.zoo import importers  # heavy: imports torch

    importer = (
        importers.import_checkpoint_folder if action == "import-folder" else importers.import_model_zoos
    )
    report = importer(**_arguments_of(importer, ns))
    console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    return 0


def _run_import_flat(action: str, ns: Namespace, console: Any) -> int:
    from zooprobe.zoo import flat  # heavy: imports torch

    importer = flat.import_flat if action == "import-flat" else flat.import_cnnzoo
    report = importer(**_arguments_of(importer, ns))
    console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    return 0


ZOO_COMMANDS = {
    "build": _run_build,
    "merge": _run_merge,
    "summary": _run_summary,
    "verify": _run_verify,
    "bench": _run_bench,
    "import-folder": _run_import_checkpoints,
    "import-modelzoos": _run_import_checkpoints,
    "import-flat": _run_import_flat,
    "import-cnnzoo": _run_import_flat,
}
"""``zoo`` action -> the function that runs it (parsed options, console) -> exit code."""


def run_zoo_command(cfg: Namespace, console: Any) -> int:
    """Run the chosen ``zoo`` subcommand (``cfg``: the ``zoo`` namespace)."""
    action = cfg.action
    return ZOO_COMMANDS[action](action, cfg[action], console)
