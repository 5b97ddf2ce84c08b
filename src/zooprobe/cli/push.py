"""``zooprobe push RUN_DIR --repo_id OWNER/NAME``: publish a finished head-training run on the Hub.

Also the end of ``zooprobe train --push_to_hub OWNER/NAME`` (`push_trained_run`). The token (``--token``,
else ``HF_TOKEN`` or the saved login) is a `jsonargparse.typing.SecretStr`: never printed, logged or
written (``--print_config`` shows it masked).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from zooprobe.cli.common import add_private_argument, add_token_argument, config_parser, new_parser

PUSH_HELP = "Upload a finished head-training run to the Hub."


def add_push_command(top: Any, wanted: Any = None) -> None:
    """Add the ``push`` subcommand to the top-level subcommands `top` (a placeholder unless `wanted`)."""
    if wanted is not None and not wanted("push"):
        top.add_subcommand("push", new_parser(PUSH_HELP), help=PUSH_HELP)
        return

    push = config_parser(
        "Upload a finished head-training run (`zooprobe train --output RUN_DIR`) to a Hub model "
        "repo in one commit: the head's config.json and model.safetensors at the repo root (so "
        "load_head('OWNER/NAME') works), config.yaml, metrics.json, predictions/, tensorboard/, report/ "
        "(if any) and a generated README.md model card. The repo is created if missing; the run folder is "
        "only read."
    )
    push.add_argument("run_dir", type=Path, help="Run folder written by `zooprobe train`.")
    push.add_argument("--repo_id", type=str, required=True, help="Hub model repo to push to (OWNER/NAME).")
    add_private_argument(push)
    push.add_argument(
        "--revision",
        type=str | None,
        default=None,
        help="Branch to push to (created if missing; default main).",
    )
    add_token_argument(push, "with write access to the repo")
    push.add_argument(
        "--encoder_repo_id",
        type=str | None,
        default=None,
        help="Hub model repo holding the head's encoder (when head/config.json names a local folder or "
        "'default'): recorded in the pushed config.json so that load_head fetches it. It is downloaded and "
        "checked against the head's encoder fingerprint first.",
    )
    push.add_argument(
        "--encoder_revision",
        type=str | None,
        default=None,
        help="Revision of --encoder_repo_id to record (default: the commit of its main branch, pinned).",
    )
    push.add_argument(
        "--verify_encoder",
        type=bool,
        default=True,
        help="Download --encoder_repo_id and check that it is the head's encoder before pushing.",
    )
    push.add_argument("--commit_message", type=str | None, default=None, help="Message of the Hub commit.")
    top.add_subcommand("push", push, help=PUSH_HELP)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def push_trained_run(
    run_dir: Path,
    repo_id: str,
    console: Any,
    *,
    private: bool = False,
    revision: str | None = None,
    token: Any = None,
    encoder_repo_id: str | None = None,
    encoder_revision: str | None = None,
    verify_encoder: bool = True,
    commit_message: str | None = None,
) -> str:
    """`push_run` for the command line: prints the encoder warning (if any) and the commit; `token` is a
    `SecretStr` or None."""
    from zooprobe.hub import repo_url  # heavy: imports torch
    from zooprobe.publish.push import (  # heavy: imports torch
        HeadEncoderWarning,
        encoder_warning,
        push_run,
    )
    from zooprobe.training.run_folder import RunFolder  # heavy: imports torch

    run = RunFolder(run_dir).check_finished("push")
    if encoder_repo_id is None:
        message = encoder_warning(run.head_config())
        if message is not None:
            console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HeadEncoderWarning)  # printed above
        sha = push_run(
            run.path,
            repo_id,
            private=private,
            revision=revision,
            token=_secret(token),
            commit_message=commit_message,
            encoder_repo_id=encoder_repo_id,
            encoder_revision=encoder_revision,
            verify_encoder=verify_encoder,
        )
    console.print(f"head pushed to {repo_url(repo_id, 'model')} (commit {sha})", highlight=False)
    return sha


def run_push_command(cfg: Namespace, console: Any) -> int:
    """Run ``zooprobe push`` (`cfg` is the top-level namespace)."""
    ns = cfg.push
    push_trained_run(
        ns.run_dir,
        ns.repo_id,
        console,
        private=bool(ns.private),
        revision=ns.revision,
        token=ns.get("token"),
        encoder_repo_id=ns.encoder_repo_id,
        encoder_revision=ns.encoder_revision,
        verify_encoder=bool(ns.verify_encoder),
        commit_message=ns.commit_message,
    )
    return 0


__all__ = ["add_push_command", "push_trained_run", "run_push_command"]
