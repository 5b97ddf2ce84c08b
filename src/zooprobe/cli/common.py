"""Pieces every subcommand shares: the parser factory, arguments as users type them, parse errors that
help, and the ``--push_to_hub`` options.

Arguments as users type them (`normalize_arguments`, applied before jsonargparse parses):

- a bare boolean flag is true (``--overwrite``), ``--no-overwrite`` / ``--no_overwrite`` is false, and
  ``--overwrite true|false`` still works;
- a list option takes comma-separated values (``--methods frozen,finetune``, ``--head.hidden_sizes 256,128``)
  as well as a JSON/YAML list (``'[frozen, finetune]'``).

Help shows types in user words (path, int, float, list of ...), never Python's ``<class 'Path'>``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, get_loader, set_loader

from zooprobe.errors import InvalidInputError, ZooprobeError
from zooprobe.hub import check_repo_id, push_folder, repo_url

_BOOL_WORDS = {"true", "false", "yes", "no"}


Wanted = Callable[[str], bool]
"""Whether a (sub)command is built in full; the others are placeholders carrying only their help."""


def refuse_yaml_aliases() -> None:
    """Make jsonargparse's YAML loader (``--config`` files, option values) refuse aliases, like
    `zooprobe.core.files.read_yaml`: a few hundred bytes of nested aliases (the "billion laughs") would
    otherwise expand to billions of values before anything is validated. Idempotent."""
    original = get_loader("yaml")
    if getattr(original, "_zooprobe_no_aliases", False):
        return

    def load(text: str) -> Any:
        from zooprobe.core.files import check_yaml_aliases  # heavy: yaml

        check_yaml_aliases(text)
        return original(text)

    load._zooprobe_no_aliases = True  # type: ignore[attr-defined]
    set_loader("yaml", load, exceptions=_yaml_errors())


def _yaml_errors() -> tuple[type[Exception], ...]:
    import yaml  # heavy: yaml

    return (yaml.YAMLError,)


def _config_files(args: Sequence[str]) -> list[Path]:
    """The existing files named by ``--config FILE`` / ``--config=FILE`` in `args`."""
    out = []
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--config=") else None
        if arg == "--config" and i + 1 < len(args):
            value = args[i + 1]
        if value is None or "\n" in value:
            continue  # an inline YAML text: jsonargparse's loader refuses aliases in it
        try:
            if Path(value).expanduser().is_file():
                out.append(Path(value).expanduser())
        except OSError:  # a name too long for a path
            continue
    return out


def check_config_files(args: Sequence[str], parser: Any) -> None:
    """Read every ``--config`` file in `args` with `read_yaml` (aliases refused, a clear error for invalid
    YAML) and refuse a top-level key that subcommand `parser` has no option for, naming it and the allowed
    ones (jsonargparse's own message for nested subcommands is a bare ``'zoo'``)."""
    allowed = sorted(
        {
            a.dest.split(".", 1)[0]
            for a in parser._actions
            if a.dest and a.dest not in ("help", "config", "print_config") and not a.dest.startswith("_")
        }
    )
    files = _config_files(args)
    if not files:
        return
    from zooprobe.core.files import read_yaml  # heavy: yaml

    for path in files:
        data = read_yaml(path, "configuration file")
        if not isinstance(data, dict):
            continue  # jsonargparse says what is wrong with it
        unknown = [str(k) for k in data if str(k) not in allowed]
        if unknown:
            raise InvalidInputError(
                f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in "
                f"the configuration file; allowed keys: {', '.join(allowed)}"
            )


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(`tp` without ``None``, whether ``None`` was allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True  # noqa: UP007
    return tp, False


def user_type(tp: Any) -> str:
    """A type hint in the words of the ``--help`` text: path, int, float, text, flag, list of int..."""
    tp, optional = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
        word = "flag"
    elif tp is int:
        word = "int"
    elif tp is float:
        word = "float"
    elif tp is str:
        word = "text"
    elif isinstance(tp, type) and issubclass(tp, Path):
        word = "path"
    elif getattr(tp, "__name__", "") == "SecretStr":
        word = "secret text"
    elif origin is Literal:
        word = "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    elif origin in (list, tuple, set, Sequence):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        inner = user_type(args[0]) if args else "text"
        count = f"{len(args)} " if origin is tuple and len(args) > 1 else ""
        word = f"comma-separated list of {count}{inner}"
    elif origin is dict:
        word = "mapping (JSON or YAML, e.g. '{a: 1}')"
    elif dataclasses.is_dataclass(tp):
        word = "YAML file or mapping"
    else:
        word = str(getattr(tp, "__name__", tp))
    return f"{word}, or none" if optional and word != "flag" else word


def _typehint(action: Any) -> Any:
    """The type an option was declared with (None for actions without one)."""
    return getattr(action, "_typehint", None) or getattr(action, "type", None)


def _is_flag(action: Any) -> bool:
    return _unwrap_optional(_typehint(action))[0] is bool


def _is_list(action: Any) -> bool:
    tp = _unwrap_optional(_typehint(action))[0]
    return typing.get_origin(tp) in (list, tuple, set, Sequence) and action.nargs in (None, 1)


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help with types in user words and ``none`` for an unset default."""

    def _get_type_str(self, action: Any) -> str | None:
        tp = _typehint(action)
        return None if tp is None or isinstance(action, ActionConfigFile) else user_type(tp)

    def _get_help_string(self, action: Any) -> str:
        return super()._get_help_string(action).replace("type: ", "")

    def _expand_help(self, action: Any) -> str:
        text = re.sub(r"default: null\b", "default: none", super()._expand_help(action))
        if _is_flag(action) and action.option_strings:
            name = action.option_strings[0][2:]
            text = text.replace("(flag", f"(flag: --{name} or --no-{name}", 1)
        return text


def new_parser(description: str, **kwargs: Any) -> ArgumentParser:
    """A parser of the zooprobe command line: user-word help, errors raised (`main` formats them)."""
    return ArgumentParser(
        description=description, formatter_class=HelpFormatter, exit_on_error=False, **kwargs
    )


def config_parser(description: str) -> ArgumentParser:
    """A parser that also takes ``--config FILE.yaml`` (every zooprobe subcommand has one)."""
    p = new_parser(description)
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below.")
    return p


def describe_options(parser: Any, helps: dict[str, str]) -> None:
    """Give options without a description of their own the one in `helps` (by option name)."""
    for action in parser._actions:
        for option in action.option_strings:
            name = option.lstrip("-")
            if name in helps and not action.help:
                action.help = helps[name]


def subcommands_of(parser: Any) -> dict[str, Any]:
    """The subcommand parsers of `parser` by name ({} if it has none)."""
    action = getattr(parser, "_subcommands_action", None)
    return dict(action.choices) if action is not None else {}


def normalize_arguments(root: Any, argv: Sequence[str]) -> tuple[list[str], list[str], Any]:
    """`argv` as jsonargparse expects it, the subcommand path it names (``["zoo", "merge"]``) and that
    subcommand's parser: bare flags get ``true``, ``--no-X`` becomes ``--X false``, comma-separated
    lists become YAML lists."""
    out: list[str] = []
    path: list[str] = []
    parser = root
    args = list(argv)
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":
            out += args[i - 1 :]
            break
        if not token.startswith("--"):
            sub = subcommands_of(parser)
            if token in sub:
                parser = sub[token]
                path.append(token)
            out.append(token)
            continue
        name, eq, inline = token.partition("=")
        actions = parser._option_string_actions
        if name not in actions and re.match(r"^--no[-_]", name):
            base = "--" + name[5:]
            if base in actions and _is_flag(actions[base]) and not eq:
                out += [base, "false"]
                continue
        action = actions.get(name)
        if action is None or action.nargs == 0:
            out.append(token)
            continue
        if eq:
            value: str | None = inline
        elif i < len(args) and not (args[i].startswith("--") and len(args[i]) > 2):
            value = args[i]
            i += 1
        else:
            value = None
        if _is_flag(action):
            if value is not None and value.lower() not in _BOOL_WORDS:
                i -= 1  # a bare flag followed by something else (a positional)
                value = None
            out += [name, "true" if value is None else value]
            continue
        if value is not None and _is_list(action):
            stripped = value.strip()
            if stripped and stripped[0] not in "[{" and stripped.lower() not in ("null", "none"):
                value = "[" + ", ".join(v.strip() for v in stripped.split(",") if v.strip()) + "]"
        out += [name] if value is None else [name, value]
    return out, path, parser


def _clean_message(message: str, path: Sequence[str]) -> str:
    """jsonargparse's message with nested keys (``train.output``, ``zoo.build.shards``) as the user's
    options (``--output``) and Python type names in user words."""
    prefix = ".".join(path)
    if prefix:
        message = re.sub(rf'"{re.escape(prefix)}\.([\w.]+)"', lambda m: f'"--{m.group(1)}"', message)
        message = re.sub(rf"\b{re.escape(prefix)}\.([\w.]+)", lambda m: f"--{m.group(1)}", message)
    message = re.sub(r'(?:Parser key|Key) "([\w.]+)"', lambda m: f"option --{m.group(1)}", message)
    message = message.replace("NoneType", "none").replace("Expected a int", "Expected an int")
    message = message.replace("<class 'pathlib.Path'>", "path").replace("<class 'Path'>", "path")
    return re.sub(r"<class '(\w+)'>", r"\1", message)


def parse_error_message(message: str, path: Sequence[str], parser: Any) -> str:
    """What `main` prints for a command line jsonargparse refused: the message in the user's words, a
    "did you mean" for each unknown option, and the subcommand's own ``--help``."""
    command = " ".join(["zooprobe", *path])
    lines = [f"{command}: error: {_clean_message(message.strip(), path)}"]
    known = [o for o in parser._option_string_actions if o.startswith("--")]
    for unknown in dict.fromkeys(re.findall(r"(?<![\w-])(--[\w.-]+)", message)):
        if unknown in known:
            continue
        close = difflib.get_close_matches(unknown.replace("-", "_"), known, n=3, cutoff=0.6)
        if not close:
            close = difflib.get_close_matches(unknown, known, n=3, cutoff=0.6)
        if close:
            lines.append(f"  {unknown}: did you mean {' or '.join(close)}?")
    subs = subcommands_of(parser)
    lines.append(f"See `{command} --help` for the options{' and subcommands' if subs else ''}.")
    return "\n".join(lines)


def add_output_arguments(parser: Any, what: str) -> None:
    """``--output`` (required), ``--overwrite`` and ``--progress``: the options of every command that writes
    a folder and may run long. A folder zooprobe wrote is resumed unless ``--overwrite`` is given."""
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help=f"Folder for the {what} (created, or resumed if it holds one).",
    )
    parser.add_argument(
        "--overwrite",
        type=bool,
        default=False,
        help="Start over: remove the files zooprobe wrote in OUTPUT (files of your own are never removed).",
    )
    add_progress_arguments(parser)


def add_progress_arguments(parser: Any) -> None:
    """``--progress`` and ``--log_level``: every long command has both."""
    parser.add_argument(
        "--progress",
        type=bool,
        default=True,
        help="Show progress: a bar on a terminal, a log line every 10% (or 30 s) in a pipe or file.",
    )
    parser.add_argument(
        "--log_level",
        type=str,
        default="info",
        help="Messages shown on the terminal: debug, info (per-epoch lines when no bar is drawn), warning, "
        "error. Run folders always get a train.log.",
    )


def add_token_argument(parser: Any, use: str) -> None:
    """``--token``: a Hugging Face token for `use` (never printed or written anywhere)."""
    from jsonargparse.typing import SecretStr  # heavy: jsonargparse

    parser.add_argument(
        "--token",
        type=SecretStr | None,
        default=None,
        help=f"Hugging Face token {use} (default: HF_TOKEN or the saved `hf auth login`; prefer those: a "
        "command-line token is visible to other users of the machine).",
    )


def add_private_argument(parser: Any) -> None:
    parser.add_argument(
        "--private", type=bool, default=False, help="Create the Hub repo as private (if it does not exist)."
    )


def add_push_arguments(parser: Any, what: str) -> None:
    """Add ``--push_to_hub OWNER/NAME``, ``--private`` and ``--token`` to a jsonargparse parser."""
    parser.add_argument(
        "--push_to_hub",
        type=str | None,
        default=None,
        help=f"After a successful run, upload the finished {what} folder to this Hub repo (OWNER/NAME) in "
        "one commit; the repo is created if missing.",
    )
    add_private_argument(parser)
    add_token_argument(parser, "for --push_to_hub")


def push_cli_output(
    ns: Any,
    folder: Path,
    *,
    repo_type: Literal["model", "dataset"],
    what: str,
    console: Any,
    ignore_patterns: list[str] | None = None,
    delete_patterns: list[str] | None = None,
) -> str | None:
    """Push `folder` if ``ns.push_to_hub`` is set (see `add_push_arguments`); returns the commit sha."""
    if not ns.get("push_to_hub"):
        return None
    from zooprobe._version import __version__  # heavy: imports torch

    secret = ns.get("token")
    sha = push_folder(
        folder,
        ns.push_to_hub,
        repo_type=repo_type,
        private=bool(ns.get("private")),
        token=secret.get_secret_value() if secret is not None else None,
        commit_message=f"Upload {what} with zooprobe {__version__}",
        ignore_patterns=ignore_patterns,
        delete_patterns=delete_patterns,
    )
    console.print(f"{what} pushed to {repo_url(ns.push_to_hub, repo_type)} (commit {sha})", highlight=False)
    return sha


def check_push_arguments(ns: Any) -> None:
    """Fail fast, before a long run, on a ``--push_to_hub`` that cannot work (bad id, no token, offline)."""
    repo_id = ns.get("push_to_hub")
    if not repo_id:
        return
    check_repo_id(repo_id, "--push_to_hub")
    from huggingface_hub import constants, get_token  # heavy: huggingface_hub

    if getattr(constants, "HF_HUB_OFFLINE", False):
        raise ZooprobeError("--push_to_hub: offline mode is on (HF_HUB_OFFLINE=1); unset it to push")
    if ns.get("token") is None and not get_token():
        raise ZooprobeError(
            "--push_to_hub: no Hugging Face token found; pass --token, set HF_TOKEN, or log in once with "
            "`hf auth login`"
        )
