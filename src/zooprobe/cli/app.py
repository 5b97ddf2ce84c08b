"""``zooprobe app [--heads HEAD ...] [--port N] [--host 127.0.0.1]``: the web page for auditing checkpoints.

The options are the fields of `zooprobe.app.config.AppConfig`; the page itself (`zooprobe.app.ui`) and
Gradio are imported only when the command runs. Gradio comes from the optional extra ``zooprobe[app]``:
without it the command says how to install it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any

from jsonargparse import Namespace

from zooprobe.app.config import AppConfig
from zooprobe.cli.common import config_parser, new_parser
from zooprobe.errors import ZooprobeError

APP_HELP = "Serve a web page for auditing checkpoints (needs zooprobe[app])."
APP_DESCRIPTION = (
    "Serve a web page (Gradio) where checkpoints are uploaded and audited: every head's predictions with "
    "intervals or probabilities and its applicability-domain flag with the reasons, plots of where the "
    "model sits in the head's training zoo and of its per-layer weight statistics, two checkpoints side by "
    "side, and the predictions as JSON (the schema of zooprobe predict --json). It binds 127.0.0.1 unless "
    "--host says otherwise. Install it with: pip install 'zooprobe[app]'."
)
NO_GRADIO = "zooprobe app needs Gradio, which the optional extra installs: pip install 'zooprobe[app]'"


def add_app_command(top: Any, wanted: Any = None) -> None:
    """Add the ``app`` subcommand to the top-level subcommands `top` (a placeholder unless `wanted`)."""
    if wanted is not None and not wanted("app"):
        top.add_subcommand("app", new_parser(APP_DESCRIPTION), help=APP_HELP)
        return
    parser = config_parser(APP_DESCRIPTION)
    parser.add_argument(
        "--heads",
        type=str,
        nargs="+",
        action="extend",
        default=None,
        help="Run folders, head folders or Hub repo ids of heads (several after one --heads, or --heads "
        "repeated); default: the heads shipped with zooprobe.",
    )
    parser.add_class_arguments(AppConfig, as_group=False, skip={"heads"})
    top.add_subcommand("app", parser, help=APP_HELP)


def app_config(ns: Namespace) -> AppConfig:
    values = {f.name: ns[f.name] for f in dataclasses.fields(AppConfig)}
    if values["heads"] is not None:
        values["heads"] = [str(h) for h in values["heads"]]
    return AppConfig(**values).check()


def has_gradio() -> bool:
    """Whether Gradio (the optional extra ``zooprobe[app]``) is installed; nothing is imported."""
    return importlib.util.find_spec("gradio") is not None


def run_app_command(ns: Namespace) -> int:
    """Run a parsed ``app`` command (`ns`: its namespace) until interrupted; exit status."""
    cfg = app_config(ns)
    if not has_gradio():
        raise ZooprobeError(NO_GRADIO)
    from zooprobe.app.ui import serve  # heavy: gradio and torch

    serve(cfg)
    return 0


__all__ = ["add_app_command", "app_config", "run_app_command"]
