"""``zooprobe report`` and ``zooprobe predict``: a run's HTML report, and a head's predictions on files.

::

    zooprobe report runs/hp                      # writes runs/hp/report/index.html (+ PNGs), prints its path
    zooprobe report runs/hp --output /tmp/hp-report
    zooprobe predict --head runs/hp model.safetensors other.pt --json predictions.json
    zooprobe predict --head user/zooprobe-hp-head --revision v1 resnet.safetensors
    zooprobe predict --head runs/acc --head runs/hp model.safetensors --level 0.8 --strict true
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from zooprobe.cli.common import config_parser, new_parser
from zooprobe.core.files import atomic_write_json
from zooprobe.core.state_dicts import DEFAULT_MAX_PARAMS
from zooprobe.errors import InvalidInputError, ZooprobeError


def add_report_commands(top: Any, wanted: Any = None) -> None:
    """Add the ``report`` and ``predict`` subcommands to the top-level subcommands `top` (with `wanted`, a
    name predicate, the others as placeholders)."""
    if wanted is None or wanted("report"):
        top.add_subcommand("report", _report_parser(), help="HTML report of a trained run.")
    else:
        top.add_subcommand(
            "report", new_parser("HTML report of a trained run."), help="HTML report of a trained run."
        )
    predict_help = "Predict a network's properties from its weights."
    if wanted is None or wanted("predict"):
        top.add_subcommand("predict", _predict_parser(), help=predict_help)
    else:
        top.add_subcommand("predict", new_parser(predict_help), help=predict_help)


def _report_parser() -> Any:
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
    report.add_argument(
        "--baseline",
        type=bool,
        default=True,
        help="Also train weight statistics + LightGBM on the run's zoo and split and show its test metrics "
        "beside the run's (seconds; --no-baseline leaves it out).",
    )
    return report


def _predict_parser() -> Any:
    predict = config_parser(
        "Predict properties of networks from their checkpoint files (.safetensors; .pt/.pth/.bin/.ckpt are "
        "read with torch.load(weights_only=True) only, anything needing more is refused) with a trained head."
    )
    predict.add_argument(
        "--head",
        type=str,
        action="append",
        default=None,
        help="Run folder, head folder, Hub model repo id or shipped head name of a head; repeat it to "
        "predict with several. Default: the shipped heads (foundation-accuracy, foundation-hyperparameters, "
        "foundation-patterns).",
    )
    predict.add_argument(
        "--revision",
        type=str,
        action="append",
        default=None,
        help="Hub revision of the head (branch, tag, commit); with several heads, one per --head, in order.",
    )
    predict.add_argument(
        "--level",
        type=float,
        default=0.9,
        help="Level of the prediction intervals of continuous targets (0.9: 90% conformal intervals).",
    )
    predict.add_argument(
        "--strict",
        type=bool,
        default=False,
        help="Exit with an error (status 2, after printing and writing --json) if a network lies outside a "
        "head's applicability domain.",
    )
    _add_predict_output_options(predict)
    return predict


def _add_predict_output_options(predict: Any) -> None:
    """``predict``'s options for what is shown and written, the reading limits and trust, and the files."""
    predict.add_argument(
        "--show_unpredictable",
        type=bool,
        default=False,
        help="Also print the values of targets the zoo does not make predictable (hidden by default).",
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
    predict.add_argument(
        "--trust",
        type=bool,
        default=False,
        help="Load heads whose files differ from their content hash (content_hash.json), i.e. heads edited "
        "on purpose; without it such a head is refused.",
    )
    predict.add_argument(
        "--progress",
        type=bool,
        default=False,
        help="Show files done and files/s while predicting (a bar on a terminal, log lines otherwise).",
    )
    predict.add_argument("files", type=Path, nargs="+", help="Checkpoint file(s) to predict on.")


def run_report_command(cfg: Namespace, console: Any) -> int:
    """Run a parsed ``report`` or ``predict`` command (`cfg` is the top-level namespace); exit status."""
    if cfg.command == "report":
        from zooprobe.report.html import write_report  # heavy: imports torch

        ns = cfg.report
        index = write_report(ns.run_dir, ns.output, baseline=ns.baseline)
        console.print(str(index), markup=False, highlight=False, soft_wrap=True)
        return 0
    if cfg.command == "predict":
        return _predict(cfg.predict, console)
    raise AssertionError(f"unhandled command {cfg.command}")


def _predict(ns: Namespace, console: Any) -> int:
    """``zooprobe predict``: every check that needs no prediction comes first (the --json location, the
    files, the run's state), so a bad command fails before anything is computed or printed."""
    gc.disable()  # importing torch makes ~a million objects: collecting them meanwhile is 10-15% of start-up
    try:
        from zooprobe.inference import (  # heavy: imports torch
            load_heads,
            predict_files_by_head,
        )
    finally:
        gc.enable()

    heads_given, revisions, files = _predict_inputs(ns)
    unfinished = _unfinished_runs(heads_given, ns.allow_unfinished)
    # frozen heads share their encoder; local heads' hashes were checked by _predict_inputs
    heads = load_heads(heads_given, revisions, trust=ns.trust, local_checked=True)
    by_head = predict_files_by_head(
        heads,
        files,
        max_params=ns.max_params,
        level=ns.level,
        show_unpredictable=ns.show_unpredictable,
        progress=ns.progress,
    )
    _print_predictions(console, files, heads_given, heads, by_head, ns.level)
    outside = _warn_outside(files, heads_given, by_head)
    if ns.json is not None:
        _write_predictions_json(
            ns, console, list(zip(heads_given, revisions, heads, by_head, strict=True)), unfinished
        )
    if ns.strict and outside:
        shown = "; ".join(f"{file} (head {source})" for file, source, _ in outside[:5])
        more = f" and {len(outside) - 5} more" if len(outside) > 5 else ""
        raise ZooprobeError(
            f"--strict: {len(outside)} prediction(s) are for networks outside the head's applicability "
            f"domain (or of a head without one): {shown}{more}; see the reasons above. Drop --strict to "
            "accept them as extrapolations"
        )
    return 0


def _predict_inputs(ns: Namespace) -> tuple[list[str], list[str | None], list[Path]]:
    """The heads (given, or the shipped ones), their revisions and the checkpoint files, each checked
    before anything is loaded: limits, --level, --revision count, the --json folder, the files exist and
    are regular checkpoint files, local heads' content hashes."""
    from zooprobe.core.checkpoints import (  # heavy: imports torch
        check_checkpoint_file,
        check_max_params,
    )
    from zooprobe.inference import check_local_head  # heavy: imports torch

    check_max_params(ns.max_params)
    if not 0.0 < ns.level < 1.0:
        raise InvalidInputError(f"--level {ns.level}: must be in (0, 1), e.g. 0.9 for 90% intervals")
    if ns.head:
        heads_given = list(ns.head)
    else:  # the shipped heads (`zooprobe.heads.shipped`)
        from zooprobe.heads.shipped import require_shipped_heads  # heavy: numpy (the heads package)

        heads_given = require_shipped_heads()
    revisions = list(ns.revision or [])
    if revisions and len(revisions) != len(heads_given):
        raise InvalidInputError(
            f"--revision given {len(revisions)} time(s) for {len(heads_given)} --head(s): give one per "
            "--head, in the same order, or none"
        )
    if ns.json is not None:
        _check_json_target(Path(ns.json))
    files = [Path(f) for f in ns.files]
    missing = [str(f) for f in files if not f.exists()]
    if missing:  # before loading the head (which may download it)
        raise InvalidInputError(f"checkpoint file(s) not found: {', '.join(missing)}")
    for f in files:
        check_checkpoint_file(f)  # folders, FIFOs and devices, unsupported types: refused unopened
    for source in heads_given:  # a modified head is refused before any of its files is read
        check_local_head(source, trust=ns.trust)
    return heads_given, revisions or [None] * len(heads_given), files


def _unfinished_runs(heads_given: list[str], allow_unfinished: bool) -> dict[str, str]:
    """Why each head's run is unfinished (warned on stderr); an error for one unless allowed."""
    unfinished = {}
    for source in heads_given:
        reason = _check_run(source, allow_unfinished)
        if reason is not None:
            unfinished[source] = reason
            print(
                f"zooprobe: warning: {reason}; predicting anyway (--allow_unfinished true): the head's "
                "weights may not be the run's final, best ones",
                file=sys.stderr,
            )
    return unfinished


def _print_predictions(
    console: Any, files: list[Path], sources: list[str], heads: list[Any], by_head: list[Any], level: float
) -> None:
    from zooprobe.inference import format_result  # heavy: imports torch

    several = len(heads) > 1
    for i, file in enumerate(files):
        lines = ["" if i else None, str(file)]
        for source, head, results in zip(sources, heads, by_head, strict=True):
            title = f"head {source} ({head.spec.task}, {head.kind})" if several else None
            lines += format_result(results[i], level=level, title=title)
        for line in lines:
            if line is not None:
                console.print(line, markup=False, highlight=False, soft_wrap=True)


def _warn_outside(files: list[Path], sources: list[str], by_head: list[Any]) -> list[tuple[str, str, Any]]:
    """(file, head, result) of every prediction outside (or not checkable against) its head's domain, each
    warned on stderr with the reasons."""
    outside = [
        (str(files[i]), source, results[i])
        for source, results in zip(sources, by_head, strict=True)
        for i in range(len(files))
        if results[i]["in_domain"] is not True
    ]
    for file, source, result in outside:
        what = (
            "lies outside the applicability domain of"
            if result["in_domain"] is False
            else "cannot be checked against the applicability domain of"
        )
        print(
            f"zooprobe: warning: {file} {what} head {source} ({'; '.join(result['domain']['reasons'])}); its "
            "predictions are extrapolations, not estimates",
            file=sys.stderr,
        )
    return outside


def _write_predictions_json(
    ns: Namespace, console: Any, per_head: list[Any], unfinished: dict[str, str]
) -> None:
    from zooprobe.inference import predictions_document  # heavy: imports torch

    document = predictions_document(per_head, ns.level, unfinished)
    try:  # a temporary file renamed into place: never half-written; strict JSON (no NaN)
        atomic_write_json(ns.json, document)
    except OSError as e:
        raise ZooprobeError(
            f"--json {ns.json}: could not write the predictions ({e.strerror or e}); they were printed above"
        ) from e
    console.print(f"predictions written to {ns.json}", markup=False, highlight=False, soft_wrap=True)


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
