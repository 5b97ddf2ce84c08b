"""The ``zooprobe`` command line: a thin layer over the Python API.

Every subcommand takes ``--config FILE.yaml`` and ``--print_config`` (jsonargparse); options are the
fields of the same typed dataclasses the Python API uses. Nothing heavy (torch, pandas) is imported before
the arguments are parsed, and only the subcommand a command line names is built in full, so ``--help``
answers at once.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from jsonargparse import ArgumentParser, Namespace, set_parsing_settings

from zooprobe._version import __version__
from zooprobe.cli.app import add_app_command, run_app_command
from zooprobe.cli.common import (
    Wanted,
    add_progress_arguments,
    check_config_files,
    config_parser,
    new_parser,
    normalize_arguments,
    parse_error_message,
    refuse_yaml_aliases,
)
from zooprobe.cli.encoder import add_encoder_commands, run_encoder_command
from zooprobe.cli.push import add_push_command, run_push_command
from zooprobe.cli.report import add_report_commands, run_report_command
from zooprobe.cli.train import add_training_commands, run_training_command
from zooprobe.cli.zoo import _zoo_config, add_zoo_commands, run_zoo_command
from zooprobe.core.outputs import holding_outputs_block
from zooprobe.core.progress import configure_logging
from zooprobe.demo_config import DemoConfig
from zooprobe.errors import ZooprobeError, error_message

set_parsing_settings(  # dataclass field docs become --help text; `--print_completion shtab-bash|zsh`
    docstring_parse_attribute_docstrings=True, add_print_completion_argument=True
)
refuse_yaml_aliases()  # --config files and option values: no YAML aliases (billion laughs)


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
        parser.add_class_arguments(DemoConfig, as_group=False)
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
    "The main job on the built-in default: the demo zoo (built once, cached) and the shipped foundation "
    "encoder (nothing pretrained), one head per task on the frozen encoder, and a table of test metrics "
    "next to weight statistics + LightGBM on the same split, with each task's headline comparison."
)
PRESETS_DESCRIPTION = (
    "Print every preset with its values: zoo presets (zoo build --preset), encoder presets (encoder "
    "pretrain --preset), the head-training settings the demo uses (per mode) and the demo's runs."
)


def _option(ns: Namespace, name: str) -> Any:
    """The value of option `name` in the chosen subcommand's namespace (None if it has none)."""
    for key, value in ns.items():
        if key == name or key.endswith(f".{name}"):
            return value
    return None


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

        run_demo(cfg.demo.preset, str(cfg.demo.output), console=console, progress=cfg.demo.progress)
        return 0
    return run_zoo_command(cfg.zoo, console)


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
            {"task": task, "head": head, "settings": "head preset 'frozen'"} for task, head in DEMO_RUNS
        ],
        "zoo": "the built-in zoo of `zooprobe demo --preset` (default demo)",
        "encoder": "default (the foundation encoder shipped in the package; nothing is pretrained)",
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
