"""The body of a head's model card (`zooprobe.publish.card`): how the encoder and zoo are named, what each
target and metric means, and the card's sections, filled from the run."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zooprobe.api import BUILTIN_PREFIX, SHIPPED_ENCODERS
from zooprobe.core.files import load_yaml_text
from zooprobe.hub import is_repo_id
from zooprobe.publish.metric_names import METRICS, NOT_SCORES, REGRESSION_METRICS, finite

TASK_TITLES = {
    "accuracy": "test-accuracy prediction from weights",
    "patterns": "architecture-pattern detection from weights",
    "hyperparameters": "training-hyperparameter prediction from weights",
}
TASK_SENTENCES = {
    "accuracy": "predicts the test accuracy a trained network reaches on its own task",
    "patterns": "detects architecture patterns (which layer types and connections a network has)",
    "hyperparameters": "predicts the hyperparameters a network was trained with",
}


def describe_source(source: str, revision: str | None, kind: str) -> str:
    """A noun phrase naming an encoder or zoo source for the card ("the encoder [`OWNER/NAME`](url)")."""
    at = f" at revision `{revision}`" if revision else ""
    if kind == "encoder" and source in SHIPPED_ENCODERS:
        return f'the foundation encoder shipped with zooprobe (`load_encoder("{source}")`)'
    if kind == "zoo" and (source == "default" or source.startswith(BUILTIN_PREFIX)):
        preset = "small" if source == "default" else source.removeprefix(BUILTIN_PREFIX)
        return f"the built-in `{preset}` zoo of zooprobe (`load_zoo({source!r})`, generated offline)"
    if is_repo_id(source):
        where = "datasets/" if kind == "zoo" else ""
        return f"the {kind} [`{source}`](https://huggingface.co/{where}{source}){at}"
    return f"the local {kind} folder `{source}`"


def zoo_contents(source: str) -> str:
    """What the networks of a local zoo folder are (subject tasks, families), from its zoo_config.yaml."""
    path = Path(source).expanduser() / "zoo_config.yaml"
    if not path.is_file():
        return ""
    try:
        cfg = load_yaml_text(path.read_text()) or {}  # guards: aliases refused
    except (OSError, yaml.YAMLError):
        return ""
    parts = []
    if cfg.get("families"):
        parts.append(f"{'/'.join(map(str, cfg['families']))} networks")
    if cfg.get("tasks"):
        parts.append(f"trained on {', '.join(map(str, cfg['tasks']))}")
    return " ".join(parts)


def _target_label(target: Mapping[str, Any] | None, name: str) -> str:
    if target is not None and target.get("log10"):
        return f"log10 {name}"
    return name


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "undefined"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _target_rows(task: str, targets: list[Mapping[str, Any]]) -> list[str]:
    rows = ["| target | kind | the head outputs | scored in |", "|---|---|---|---|"]
    for t in targets:
        name, kind = str(t["name"]), str(t["kind"])
        if kind == "binary":
            out, space = "probability that the pattern is present", "0/1 flags, threshold 0.5"
        elif kind == "categorical":
            classes = ", ".join(f"`{c}`" for c in t.get("classes", []))
            out, space = f"probabilities over the classes {classes}", "the most probable class"
        elif t.get("log10"):
            floor = t.get("log_floor")
            out = f"log10 of {name}"
            space = f"log10 (values below {floor:g} count as {floor:g}, so 0 becomes log10({floor:g}))"
        elif t.get("bounded"):
            out, space = f"{name}, through a sigmoid in [0, 1]", "raw value"
        elif name == "test_accuracy":
            out, space = "the network's test accuracy (a fraction in [0, 1])", "raw value"
        else:
            out, space = f"the value of {name}", "raw value"
        rows.append(f"| `{name}` | {kind} | {out} | {space} |")
    return rows


def _scoring_sentence(targets: list[Mapping[str, Any]]) -> str:
    logs = [f"`{t['name']}`" for t in targets if t.get("kind") == "continuous" and t.get("log10")]
    plain = [f"`{t['name']}`" for t in targets if t.get("kind") == "continuous" and not t.get("log10")]
    parts = []
    if logs:
        parts.append(
            f"{' and '.join(logs)} {'is' if len(logs) == 1 else 'are'} predicted and scored in log10"
        )
    if plain:
        one = len(plain) == 1
        parts.append(
            f"{' and '.join(plain)} {'is' if one else 'are'} predicted and scored in "
            f"{'its' if one else 'their'} own units"
        )
    if any(t.get("kind") == "categorical" for t in targets):
        parts.append(
            "discrete targets are predicted as class probabilities and scored on the most probable class"
        )
    if any(t.get("kind") == "binary" for t in targets):
        parts.append("pattern flags are predicted as probabilities, a pattern counting as present at >= 0.5")
    sentence = "; ".join(parts)
    return f"{sentence[:1].upper()}{sentence[1:]}. Models with a missing target are left out of its metrics."


def _metric_definitions(task: str, targets: list[Mapping[str, Any]]) -> list[str]:
    if task == "accuracy":
        bases = list(REGRESSION_METRICS)
    elif task == "patterns":
        bases = ["hamming_loss", "subset_accuracy", "f1", "roc_auc", "macro_f1", "macro_roc_auc"]
    else:
        kinds = {str(t["kind"]) for t in targets}
        bases = [*(REGRESSION_METRICS if "continuous" in kinds else ())]
        bases += ["accuracy", "macro_f1"] if "categorical" in kinds else []
        bases.append("score")
    lines = [f"- **{METRICS[b][1]}**: {METRICS[b][2]}" for b in bases]
    lines.append(
        "- A metric that is undefined on a split (one class only, a constant target, fewer than two models) "
        "is reported as undefined, never as 0, and is left out of `model-index`."
    )
    return lines


def _results_table(test: Mapping[str, Any], validation: Mapping[str, Any]) -> list[str]:
    rows = ["| metric | test | validation |", "|---|---|---|"]
    for key in sorted(k for k in test if k not in NOT_SCORES):
        rows.append(f"| `{key}` | {_fmt(test.get(key))} | {_fmt(validation.get(key))} |")
    return rows


@dataclass
class _Run:
    """What the card's sections read of a run: its head config, metrics and training configuration, and
    the encoder and zoo it names."""

    repo_id: str
    root: Path
    head: Mapping[str, Any]
    metrics: Mapping[str, Any]
    cfg: Mapping[str, Any]
    task: str
    mode: str
    targets: list[Mapping[str, Any]]
    enc: Mapping[str, Any]
    enc_source: str
    encoder_phrase: str
    zoo_source: str
    zoo_phrase: str

    @classmethod
    def of(
        cls,
        repo_id: str,
        root: Path,
        head: Mapping[str, Any],
        metrics: Mapping[str, Any],
        cfg: Mapping[str, Any],
    ) -> _Run:
        enc = head["encoder"]
        zoo = head.get("zoo") or {"source": cfg.get("zoo", "default"), "revision": cfg.get("zoo_revision")}
        enc_source, enc_rev = str(enc["source"]), enc.get("revision")
        zoo_source, zoo_rev = str(zoo.get("source") or "default"), zoo.get("revision")
        return cls(
            repo_id=repo_id,
            root=root,
            head=head,
            metrics=metrics,
            cfg=cfg,
            task=str(head["task"]["task"]),
            mode=str(head["mode"]),
            targets=list(head["task"]["targets"]),
            enc=enc,
            enc_source=enc_source,
            encoder_phrase=describe_source(enc_source, enc_rev, "encoder"),
            zoo_source=zoo_source,
            zoo_phrase=describe_source(zoo_source, zoo_rev, "zoo"),
        )


def _intro(run: _Run) -> list[str]:
    """The title, what the head does, how to use it, and how to get its encoder."""
    repo_id, task, mode, encoder_phrase, enc_source = (
        run.repo_id, run.task, run.mode, run.encoder_phrase, run.enc_source
    )  # fmt: skip
    enc = run.enc
    lines = [
        f"# {repo_id.split('/')[1]}: a zooprobe {task} head",
        "",
        f"A prediction head that reads the **weights** of a trained neural network (its PyTorch state dict) "
        f"and {TASK_SENTENCES.get(task, 'predicts its properties')}. It is a small MLP on top of a "
        f"weight-space encoder, {encoder_phrase}, "
        + (
            "which stayed frozen during training (its weights are unchanged)."
            if mode == "frozen"
            else "which was fine-tuned together with the head: the fine-tuned encoder weights are stored in "
            "`model.safetensors` next to the head's and replace the base encoder's when loading."
        ),
        "",
        "## How to use",
        "",
        "```python",
        "import zooprobe",
        f'head = zooprobe.load_head("{repo_id}")',
        "predictions = head.predict([state_dict])",
        "```",
        "",
        "`state_dict` is a trained network's `model.state_dict()`; `predictions` maps every target to one "
        "value per network (see the table below). "
        "`load_head` also fetches the encoder named in `config.json` (`encoder.source` at "
        "`encoder.revision`) and refuses it unless it is exactly the encoder the head was trained with "
        "(a fingerprint of its weights, tokenizer and preprocessing).",
        "",
    ]
    if is_repo_id(enc_source):
        lines += [f"The encoder is downloaded from {encoder_phrase} automatically.", ""]
    elif enc_source in SHIPPED_ENCODERS:
        lines += [
            f"The encoder is {encoder_phrase}: its files ship inside the zooprobe package, so `load_head` "
            "finds it offline wherever the same zooprobe version is installed (another version may ship "
            "other weights; the fingerprint check then refuses it).",
            "",
        ]
    else:
        lines += [
            "### Getting the encoder",
            "",
            f"This head's `config.json` names {encoder_phrase}, which is not a Hub repo, so `load_head` "
            "only works where that encoder exists: "
            + (
                "zooprobe pretrains that encoder on first use, and the head loads only if that run "
                "reproduces the training encoder bit for bit (same zooprobe and torch versions)."
                if enc_source in ("v2", "v3")
                else "on the machine the head was trained on, or after copying that folder to the same path."
            )
            + " Elsewhere, pass a copy of that encoder (a folder or a Hub repo id) as `encoder=` to "
            f"`load_head`; it must have the fingerprint `{str(enc.get('fingerprint', ''))[:16]}`.",
            "",
        ]
    return lines


def _scores(run: _Run) -> list[str]:
    """What it predicts, how it is scored, and its results on the test and validation splits."""
    task, targets, metrics = run.task, run.targets, run.metrics
    n_models = metrics.get("n_models") or {}
    lines = [
        "## What it predicts and how it is scored",
        "",
        *_target_rows(task, targets),
        "",
        _scoring_sentence(targets),
        "",
        "Metrics:",
        "",
        *_metric_definitions(task, targets),
        "",
        "## Results",
        "",
        f"On the zoo's test split ({n_models.get('test', 'all')} models, never seen in training or model "
        f"selection) and validation split ({n_models.get('validation', 'all')} models, used for early "
        "stopping), with the best checkpoint:",
        "",
        *_results_table(metrics.get("test") or {}, metrics.get("validation") or {}),
        "",
    ]
    undefined = int((metrics.get("test") or {}).get("n_undefined") or 0)
    if undefined:
        lines += [f"{undefined} test metric(s) are undefined on this split (see `metrics.json`).", ""]
    return lines


def _training(run: _Run) -> list[str]:
    """How the head was trained: zoo and splits, mode, optimizer, epochs, early stopping, head, seed."""
    metrics, cfg, mode, zoo_phrase = run.metrics, run.cfg, run.mode, run.zoo_phrase
    n_models = metrics.get("n_models") or {}
    optim, stop, head_arch = cfg.get("optim") or {}, cfg.get("stop") or {}, run.head.get("head") or {}
    epochs_run, max_epochs = metrics.get("epochs_run"), optim.get("epochs")
    train_lines = [
        f"- zoo: {zoo_phrase}; splits by model: {n_models.get('train')} train, "
        f"{n_models.get('validation')} validation, {n_models.get('test')} test",
        f"- mode: `{mode}`"
        + (
            " (the encoder's weights never changed; the head trained on cached representations)"
            if mode == "frozen"
            else f" (encoder learning rate = {cfg.get('encoder_lr_ratio')} x the head's"
            + (
                f", only the top {cfg['unfreeze_top_layers']} encoder block(s) trained"
                if cfg.get("unfreeze_top_layers")
                else ""
            )
            + (", neuron-permutation and noise augmentation" if cfg.get("augment") else "")
            + ")"
        ),
        f"- optimizer: AdamW, learning rate {optim.get('lr')}, weight decay {optim.get('weight_decay')}, "
        f"batch size {optim.get('batch_size')}, gradient clipping {optim.get('grad_clip')}, "
        f"`{optim.get('scheduler')}` schedule",
        f"- epochs: {epochs_run} run of at most {max_epochs}; best epoch {metrics.get('best_epoch')} "
        f"(counting from 1), selected on validation `{metrics.get('monitor', stop.get('monitor'))}` = "
        f"{_fmt(metrics.get('best_value'))}",
        f"- early stopping: monitor `{stop.get('monitor')}`, patience {stop.get('patience')} evaluation(s), "
        f"one every {stop.get('eval_every')} epoch(s), min delta {stop.get('min_delta')}",
        f"- head: hidden sizes {head_arch.get('hidden_sizes')}, `{head_arch.get('activation')}`, "
        f"`{head_arch.get('norm')}` norm, dropout {head_arch.get('dropout')}, `{head_arch.get('pooling')}` "
        "pooling of the encoder's output"
        if head_arch.get("kind", "mlp") == "mlp"
        else "- head: gradient boosting (LightGBM, one model per target, early-stopped on the validation "
        "split) on the weight statistics"
        + (" and the encoder's pooled representation" if head_arch.get("features") == "stats+rep" else "")
        + "; the optimizer, epoch and early-stopping lines above do not apply to it",
        f"- seed {cfg.get('seed')}; the full resolved configuration is `config.yaml` (replay it with "
        "`zooprobe train --config config.yaml` given the same zoo and encoder)",
    ]
    overlap = metrics.get("overlap") or {}
    if overlap.get("checked"):
        n_overlap = len(overlap.get("model_ids") or [])
        train_lines.append(
            "- overlap check: "
            + (
                "no validation or test model was in the encoder's pretraining data"
                if n_overlap == 0
                else f"{n_overlap} validation/test model(s) were in the encoder's pretraining data (allowed "
                "explicitly): the metrics above may be optimistic"
            )
        )
    return train_lines


def _files(run: _Run) -> list[str]:
    """The files of the head's repo (those the run has)."""
    mode, root = run.mode, run.root
    files = [
        "- `config.json`: task, targets (classes, log10 floors, normalization), head architecture, "
        "encoder source, revision and fingerprint",
        "- `model.safetensors`: the best checkpoint"
        + (" (head and fine-tuned encoder)" if mode == "finetune" else " (head)"),
        "- `config.yaml`: the resolved training configuration",
        "- `metrics.json`: per-epoch history, validation and test metrics, missing-target counts",
        "- `predictions/`: true and predicted values of every validation and test model",
        "- `tensorboard/`: training curves (`tensorboard --logdir tensorboard`)",
    ]
    if (root / "report" / "index.html").is_file():
        files.append("- `report/`: the run's report (`report/index.html` and its plots)")
    if (root / "head" / "trust.json").is_file():
        files.append(
            "- `trust.json`, `domain.safetensors`: the applicability domain, the calibration (conformal "
            "intervals, temperatures) and each target's test score, which `zooprobe predict` reports"
        )
    if (root / "head" / "gbm.json").is_file():
        files.append("- `gbm.json`: the gradient-boosting models, one per target, in LightGBM's text format")
    return files


def _body(
    repo_id: str,
    root: Path,
    head: Mapping[str, Any],
    metrics: Mapping[str, Any],
    cfg: Mapping[str, Any],
    encoder_config: Mapping[str, Any] | None,
) -> str:
    run = _Run.of(repo_id, root, head, metrics, cfg)
    lines = [*_intro(run), *_scores(run)]
    lines += ["## Training", "", *_training(run), "", "## Files", "", *_files(run), "", "## Limitations", ""]
    lines += _limitations(
        run.task, run.zoo_source, run.zoo_phrase, run.targets, metrics, encoder_config, run.enc_source
    )
    lines += ["", "## License", "", "MIT.", ""]
    return "\n".join(lines)


def _share(value: Any) -> str:
    return f"{100 * value:.0f}%" if finite(value) else "an unknown share"


def _encoder_limitation(encoder_config: Mapping[str, Any] | None, enc_source: str) -> str:
    prov = (encoder_config or {}).get("provenance") or {}
    if prov.get("zoo_source"):
        n_pre = len(prov.get("model_ids") or []) or prov.get("n_models")
        return (
            f"- The encoder was pretrained on {n_pre} networks of "
            f"{describe_source(str(prov['zoo_source']), None, 'zoo')}; its representations only cover the "
            "layer types and scales of that zoo."
        )
    return (
        "- The encoder only knows the layer types and weight scales of its pretraining zoo (see the "
        f"model card of {describe_source(enc_source, None, 'encoder')}); other networks are out of its "
        "domain."
    )


def _limitations(
    task: str,
    zoo_source: str,
    zoo_phrase: str,
    targets: list[Mapping[str, Any]],
    metrics: Mapping[str, Any],
    encoder_config: Mapping[str, Any] | None,
    enc_source: str,
) -> list[str]:
    n_models = metrics.get("n_models") or {}
    total = sum(int(v) for v in n_models.values() if isinstance(v, int))
    trained = n_models.get("train") if isinstance(n_models.get("train"), int) else total
    families = next((t.get("classes") for t in targets if t.get("name") == "family"), None)
    contents = zoo_contents(zoo_source)
    lines = [
        f"- It was trained on {trained} networks (the train split; {total} in all with validation and test) "
        f"of {zoo_phrase}"
        + (f" ({contents})" if contents else "")
        + (f" (families: {', '.join(str(f) for f in families)})" if families and not contents else "")
        + ". Networks of other architectures, sizes, tasks or training setups are out of distribution: "
        + (
            "`zooprobe predict` flags them with the head's applicability domain (`trust.json`: layer kinds, "
            "sizes, and distances in weight-statistics and representation space; "
            f"{_share((metrics.get('domain') or {}).get('test_in_domain'))} of the test models lie inside), "
            "and their predictions are extrapolations."
            if metrics.get("domain")
            else "predictions for them can be wrong without any warning."
        ),
    ]
    lines.append(_encoder_limitation(encoder_config, enc_source))
    discrete = [t for t in targets if t.get("kind") == "categorical"]
    if discrete:
        lines.append(
            "- Discrete targets only know the classes of the training split ("
            + "; ".join(f"`{t['name']}`: {', '.join(map(str, t['classes']))}" for t in discrete)
            + "): a network trained with any other value gets one of these."
        )
    test_n = n_models.get("test")
    lines += [
        f"- The test split has {test_n} models, so the metrics above carry sampling noise of that size.",
        "- Simple weight statistics (per-layer mean, std and quantiles) fed to gradient boosting are a "
        "strong baseline for predicting properties from weights (Unterthiner et al. 2020 report R² of 0.98 "
        "to 0.99 for test accuracy on large CNN zoos). Compare this head with them on the same splits "
        f"(`zooprobe bench --zoo {zoo_source} --encoder {enc_source}`) before relying on it.",
    ]
    if any(t.get("name") == "weight_decay" for t in targets):
        lines.append(
            "- Weight decay leaves weak traces in the final weights of briefly trained networks; expect it "
            "to be predicted far less reliably than the architecture family or the optimizer."
        )
    return lines
