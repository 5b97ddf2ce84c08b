"""``zooprobe report`` and ``zooprobe predict``: a run's HTML report, and a head's predictions on files.

::

    zooprobe report runs/hp                      # writes runs/hp/report/index.html (+ PNGs), prints its path
    zooprobe report runs/hp --output /tmp/hp-report
    zooprobe predict --head runs/hp model.safetensors other.pt --json predictions.json
    zooprobe predict --head user/zooprobe-hp-head --revision v1 resnet.safetensors
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from zooprobe.errors import InvalidInputError
from zooprobe.utils import config_parser


def add_report_commands(top: Any) -> None:
    """Add the ``report`` and ``predict`` subcommands to the top-level subcommands `top`."""
    report = config_parser(
        "Write a self-contained HTML report of a finished run (predicted vs true plots, confusion matrices, "
        "per-pattern F1, learning curves, metrics, overlap and missing targets, configuration) and print "
        "the path of its index.html."
    )
    report.add_argument("run_dir", type=Path, help="Run folder written by `zooprobe train`.")
    report.add_argument(
        "--output",
        type=Path | None,
        default=None,
        help="Folder for index.html and the PNG figures (default: RUN_DIR/report).",
    )
    top.add_subcommand("report", report, help="HTML report of a trained run.")

    predict = config_parser(
        "Predict properties of networks from their checkpoint files (.safetensors; .pt/.pth/.bin/.ckpt are "
        "read with torch.load(weights_only=True) only, anything needing more is refused) with a trained head."
    )
    predict.add_argument(
        "--head", type=str, required=True, help="Run folder, head folder or Hub model repo id of the head."
    )
    predict.add_argument(
        "--revision", type=str | None, default=None, help="Hub revision of the head (branch, tag, commit)."
    )
    predict.add_argument(
        "--json", type=Path | None, default=None, help="Also write the predictions to this JSON file."
    )
    predict.add_argument("files", type=Path, nargs="+", help="Checkpoint file(s) to predict on.")
    top.add_subcommand("predict", predict, help="Predict a network's properties from its weights.")


def run_report_command(cfg: Namespace, console: Any) -> int:
    """Run a parsed ``report`` or ``predict`` command (`cfg` is the top-level namespace); exit status."""
    if cfg.command == "report":
        from zooprobe.report.html import write_report

        ns = cfg.report
        index = write_report(ns.run_dir, ns.output)
        console.print(str(index), markup=False, highlight=False, soft_wrap=True)
        return 0
    if cfg.command == "predict":
        from zooprobe.heads.io import load_head
        from zooprobe.predict import format_predictions, predict_files
        from zooprobe.utils import atomic_write_json

        ns = cfg.predict
        files = [Path(f) for f in ns.files]
        missing = [str(f) for f in files if not f.exists()]
        if missing:  # before loading the head (which may download it)
            raise InvalidInputError(f"checkpoint file(s) not found: {', '.join(missing)}")
        head = load_head(ns.head, revision=ns.revision)
        results = predict_files(head, files)
        for line in format_predictions(results):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if ns.json is not None:
            doc = {
                "head": ns.head,
                "revision": ns.revision,
                "task": head.spec.task,
                "targets": head.spec.names,
                "predictions": results,
            }
            atomic_write_json(ns.json, doc)
            console.print(f"predictions written to {ns.json}", markup=False, highlight=False, soft_wrap=True)
        return 0
    raise AssertionError(f"unhandled command {cfg.command}")


__all__ = ["add_report_commands", "run_report_command"]
