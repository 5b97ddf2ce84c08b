"""The README.md model card of a trained head's Hub repo, generated from its finished run folder.

`head_model_card` reads what `zooprobe.training.train` wrote (``config.yaml``, ``head/config.json``,
``metrics.json``) and returns the card text: a YAML header built with `huggingface_hub.ModelCardData`
(``library_name: zooprobe``, tags, ``license: mit``, ``base_model`` when the encoder is a Hub repo,
``datasets`` when the zoo is one, and ``model-index`` with every defined test metric as an `EvalResult`)
and a body that says what the head predicts, how each target is scored, how it was trained, how to load
it, and where it stops being trustworthy. Every sentence is filled from the run: nothing is left for the
user to complete.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zooprobe.api import BUILTIN_PREFIX
from zooprobe.core.files import atomic_write_text, read_json, read_yaml
from zooprobe.errors import ZooprobeError
from zooprobe.hub import check_repo_id, is_repo_id, render_card
from zooprobe.publish.card_body import (
    TASK_SENTENCES,
    TASK_TITLES,
    _body,
    _target_label,
    describe_source,
    zoo_contents,
)
from zooprobe.publish.metric_names import METRICS, NOT_SCORES, REGRESSION_METRICS, finite, metric_info
from zooprobe.training.run_folder import RunFolder


# ------------------------------------------------------------------------------------------ model card
def head_model_card(
    run_dir: str | Path,
    repo_id: str,
    *,
    head_config: Mapping[str, Any] | None = None,
    encoder_config: Mapping[str, Any] | None = None,
) -> str:
    """README.md for the Hub repo `repo_id` of the finished run in `run_dir` (see the module docs).

    `head_config` replaces the run's ``head/config.json`` (`zooprobe.publish.push.push_run` passes the staged
    copy, whose encoder may point at a Hub repo); `encoder_config` is the encoder's ``config.json`` content
    (read from a local encoder folder when not given) and adds its pretraining zoo to the card.
    """
    from huggingface_hub import ModelCardData  # heavy: only pushing builds a card

    run = RunFolder(run_dir).check_finished("push")
    root = run.path
    check_repo_id(repo_id, "model card")
    head = dict(head_config) if head_config is not None else run.head_config()
    metrics = run.metrics()
    train_cfg = read_yaml(run.config_path, "run configuration") or {}
    enc = head["encoder"]
    zoo = head.get("zoo") or {"source": train_cfg.get("zoo", "default"), "revision": None}
    if encoder_config is None:
        encoder_config = _local_encoder_config(str(enc["source"]))
    task = str(head["task"]["task"])
    targets = list(head["task"]["targets"])
    name = repo_id.split("/")[1]
    data = ModelCardData(
        library_name="zooprobe",
        license="mit",
        tags=_tags(task, str(head["mode"])),
        base_model=str(enc["source"]) if is_repo_id(str(enc["source"])) else None,
        datasets=[str(zoo["source"])] if is_repo_id(str(zoo["source"])) else None,
        model_name=name,
        eval_results=_eval_results(task, metrics.get("test") or {}, targets, zoo, metrics) or None,
    )
    body = _body(repo_id, root, head, metrics, train_cfg, encoder_config)
    return render_card(data, body)


def write_run_card(run_dir: str | Path) -> Path:
    """Write the model card of a finished run into ``RUN/head/README.md`` (what a push uploads as the repo's
    README.md, with the run folder in place of a Hub repo id); returns its path."""
    run = RunFolder(run_dir)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", run.path.resolve().name).strip("-.") or "run"
    placeholder = f"local/{name}"
    text = head_model_card(run.path, placeholder)
    text = text.replace(f'"{placeholder}"', json.dumps(str(run.path)))
    path = run.path / "head" / "README.md"
    atomic_write_text(path, text)
    return path


def _tags(task: str, mode: str) -> list[str]:
    return ["zooprobe", "weight-space-learning", "model-zoo", f"{task}-prediction", f"{mode}-encoder"]


def _local_encoder_config(source: str) -> dict[str, Any] | None:
    path = Path(source).expanduser() / "config.json"
    if source == "default" or not path.is_file():
        return None
    try:
        return read_json(path, "encoder config")
    except ZooprobeError:
        return None


def _eval_results(
    task: str,
    test: Mapping[str, Any],
    targets: list[Mapping[str, Any]],
    zoo: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> list[Any]:
    """One `EvalResult` per defined test metric (NaN / null ones are skipped: undefined, not 0)."""
    from huggingface_hub import EvalResult  # heavy: huggingface_hub

    by_name = {str(t["name"]): t for t in targets}
    source = str(zoo.get("source") or "default")
    if is_repo_id(source):
        dataset_type = source
    elif source == "default" or source.startswith(BUILTIN_PREFIX):
        dataset_type = "zooprobe-builtin-" + (
            "small" if source == "default" else source[len(BUILTIN_PREFIX) :]
        )
    else:
        dataset_type = Path(source).name or "zoo"
    n_test = (metrics.get("n_models") or {}).get("test")
    dataset_name = f"{dataset_type} (zooprobe zoo, test split" + (f", {n_test} models)" if n_test else ")")
    results = []
    for key in sorted(test):
        value = test[key]
        if key in NOT_SCORES or not finite(value):
            continue
        target, base, mtype, pretty = metric_info(key)
        if task == "accuracy":
            target = target or "test_accuracy"
        label = f"{pretty} ({_target_label(by_name.get(target or ''), target)})" if target else pretty
        if base == "score":
            task_type = "other"
        elif base in REGRESSION_METRICS:
            task_type = "tabular-regression"
        else:
            task_type = "tabular-classification"
        results.append(
            EvalResult(
                task_type=task_type,
                task_name=TASK_TITLES.get(task, task),
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_split="test",
                dataset_revision=zoo.get("revision") or None,
                metric_type=mtype,
                metric_name=label,
                metric_value=float(value),
            )
        )
    return results


# re-exported: METRICS, NOT_SCORES (metric_names); TASK_SENTENCES, TASK_TITLES, describe_source, zoo_contents
__all__ = [
    "METRICS",
    "NOT_SCORES",
    "TASK_SENTENCES",
    "TASK_TITLES",
    "describe_source",
    "head_model_card",
    "write_run_card",
    "zoo_contents",
]
