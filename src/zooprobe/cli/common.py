"""Pieces every subcommand shares: the parser factory and the ``--push_to_hub`` options."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from zooprobe.errors import ZooprobeError
from zooprobe.hub import check_repo_id, push_folder, repo_url


def config_parser(description: str) -> Any:
    """A jsonargparse parser that also takes ``--config FILE.yaml`` (every zooprobe subcommand has one)."""
    from jsonargparse import (  # heavy: jsonargparse
        ActionConfigFile,
        ArgumentParser,
    )

    p = ArgumentParser(description=description)
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below.")
    return p


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
