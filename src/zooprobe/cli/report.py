"""``zooprobe report`` and ``zooprobe predict``: a run's HTML report, and a head's predictions on files.

::

    zooprobe report runs/hp                      # writes runs/hp/report/index.html (+ PNGs), prints its path
    zooprobe report runs/hp --output /tmp/hp-report
    zooprobe predict --head runs/hp model.safetensors other.pt --json predictions.json
    zooprobe predict --head user/zooprobe-hp-head --revision v1 resnet.safetensors
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from zooprobe.cli.common import config_parser
from zooprobe.core.checkpoints import DEFAULT_MAX_PARAMS
from zooprobe.core.files import atomic_write_json
from zooprobe.errors import InvalidInputError, ZooprobeError


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
        "--json",
        type=Path | None,
        default=None,
        help="Also write the predictions to this JSON file (its folder must exist; written atomically).",
    )
    predict.add_argument(
        "--max_params",
        type=int,
        default=DEFAULT_MAX_PARAMS,
        help="Refuse a checkpoint holding more values than this, before reading it.",
    )
    predict.add_argument(
        "--allow_unfinished",
        type=bool,
        default=False,
        help="Predict with the head of a run whose training is unfinished or was interrupted (warns).",
    )
    predict.add_argument("files", type=Path, nargs="+", help="Checkpoint file(s) to predict on.")
    top.add_subcommand("predict", predict, help="Predict a network's properties from its weights.")


def run_report_command(cfg: Namespace, console: Any) -> int:
    """Run a parsed ``report`` or ``predict`` command (`cfg` is the top-level namespace); exit status."""
    if cfg.command == "report":
        from zooprobe.report.html import write_report  # heavy: imports torch

        ns = cfg.report
        index = write_report(ns.run_dir, ns.output)
        console.print(str(index), markup=False, highlight=False, soft_wrap=True)
        return 0
    if cfg.command == "predict":
        return _predict(cfg.predict, console)
    raise AssertionError(f"unhandled command {cfg.command}")


def _predict(ns: Namespace, console: Any) -> int:
    """``zooprobe predict``: every check that needs no prediction comes first (the --json location, the
    files, the run's state), so a bad command fails before anything is computed or printed."""
    from zooprobe.api import load_head  # heavy: imports torch
    from zooprobe.core.checkpoints import (  # heavy: imports torch
        check_checkpoint_file,
        check_max_params,
    )
    from zooprobe.inference import (  # heavy: imports torch
        format_predictions,
        predict_files,
    )

    check_max_params(ns.max_params)
    if ns.json is not None:
        _check_json_target(Path(ns.json))
    files = [Path(f) for f in ns.files]
    missing = [str(f) for f in files if not f.exists()]
    if missing:  # before loading the head (which may download it)
        raise InvalidInputError(f"checkpoint file(s) not found: {', '.join(missing)}")
    for f in files:
        check_checkpoint_file(f)  # folders, FIFOs and devices, unsupported types: refused unopened
    unfinished = _check_run(ns.head, ns.allow_unfinished)
    if unfinished is not None:
        print(
            f"zooprobe: warning: {unfinished}; predicting anyway (--allow_unfinished true): the head's "
            "weights may not be the run's final, best ones",
            file=sys.stderr,
        )
    head = load_head(ns.head, revision=ns.revision)
    results = predict_files(head, files, max_params=ns.max_params)
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
        if unfinished is not None:
            doc["unfinished_run"] = unfinished
        try:
            atomic_write_json(ns.json, doc)  # a temporary file renamed into place: never half-written
        except OSError as e:
            raise ZooprobeError(
                f"--json {ns.json}: could not write the predictions ({e.strerror or e}); they were printed "
                "above"
            ) from e
        console.print(f"predictions written to {ns.json}", markup=False, highlight=False, soft_wrap=True)
    return 0


def _check_json_target(path: Path) -> None:
    """`ZooprobeError` unless a JSON file can be written at `path`: not a folder, its folder exists and
    accepts new files (probed with a temporary file, removed at once)."""
    where = path.expanduser()
    if where.is_dir():
        raise ZooprobeError(
            f"--json {path}: is a folder; give the path of a file to write, e.g. {path / 'predictions.json'}"
        )
    if where.exists() and not where.is_file():
        raise ZooprobeError(f"--json {path}: exists and is not a regular file; choose another path")
    parent = where.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise ZooprobeError(
            f"--json {path}: its folder {parent} {what}; create the folder first or choose another path"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{where.name}.", suffix=".probe", dir=parent)
    except OSError as e:
        raise ZooprobeError(
            f"--json {path}: cannot write in {parent} ({e.strerror or e}); choose a writable location"
        ) from e
    os.close(fd)
    os.unlink(probe)


def _check_run(head: str, allow_unfinished: bool) -> str | None:
    """For a local run folder (one with ``config.yaml``): None if its training finished; otherwise why not,
    which is an error unless `allow_unfinished`. A head folder or Hub id is not a run and not checked."""
    from zooprobe.training.run_folder import RunFolder  # heavy: imports torch

    run = RunFolder(head)
    if not (run.path.is_dir() and run.config_path.is_file()):
        return None
    reason = run.unfinished_reason()
    if reason is None or allow_unfinished:
        return reason
    raise ZooprobeError(
        f"{reason}; refusing to predict with the head of an unfinished run (its weights may not be the "
        "run's final, best ones). Pass --allow_unfinished true to predict with it anyway"
    )


__all__ = ["add_report_commands", "run_report_command"]
