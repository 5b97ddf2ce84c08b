"""What a head run records and writes besides the best head: the early stopper, the result, head/config.json,
the output check, the divergence message, the training state, the log lines, the final evaluation
(metrics.json, predictions, trust)."""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from zooprobe.core.environment import library_versions
from zooprobe.core.files import atomic_write_json, json_safe, read_yaml
from zooprobe.core.outputs import check_output
from zooprobe.core.tensorfile import read_state, save_state
from zooprobe.encoder.base import WeightSpaceEncoder
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.heads.encoder_with_head import EncoderWithHead
from zooprobe.heads.head_loader import HEAD_FORMAT
from zooprobe.training import distributed as D
from zooprobe.training.config import TrainConfig
from zooprobe.training.data_loader import (
    RunData,
)
from zooprobe.training.evaluator import (
    evaluate_split,
    fit_trust,
    metric_space_targets,
)
from zooprobe.training.run_folder import LAST, RUN_OUTPUT
from zooprobe.training.state import config_diff, pack_optimizer

log = logging.getLogger(__name__)


STATE_FORMAT = 2  # 2: epochs counted from 1


# ------------------------------------------------------------------------------------------ early stopping
@dataclass
class EarlyStopper:
    """Patience counted in evaluations; its state is checkpointed so resume keeps counting."""

    patience: int
    min_delta: float
    lower: bool
    best: float = math.nan
    best_epoch: int = 0
    """The epoch of the best value so far, counted from 1 (0: none yet)."""
    bad_evals: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an evaluation; True if it is a new best."""
        if not math.isfinite(value):
            improved = False
        elif math.isnan(self.best):
            improved = True
        else:
            improved = (
                value < self.best - self.min_delta if self.lower else value > self.best + self.min_delta
            )
        if improved:
            self.best, self.best_epoch, self.bad_evals = value, epoch, 0
        else:
            self.bad_evals += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_evals >= self.patience

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_evals": self.bad_evals}

    def load(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_evals = (
            float(state["best"]),
            int(state["best_epoch"]),
            int(state["bad_evals"]),
        )


# ------------------------------------------------------------------------------------------ results
@dataclass
class TrainResult:
    """What `fit` returns; everything is also in the run folder's metrics.json."""

    output: Path
    """The run folder."""
    best_epoch: int
    """The epoch whose head was kept (best validation value of ``stop.monitor``), counted from 0."""
    epochs_run: int
    validation: dict[str, float]
    """Validation metrics of the kept head."""
    test: dict[str, float]
    """Test metrics of the kept head."""
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------ run folder
def head_config(
    cfg: TrainConfig, model: EncoderWithHead, encoder: WeightSpaceEncoder, base_fp: str
) -> dict[str, Any]:
    """head/config.json: self-sufficient to rebuild the head and find its encoder (`base_fp`: the
    fingerprint of the encoder as loaded, before any fine-tuning)."""
    return {
        "format_version": HEAD_FORMAT,
        "library_name": "zooprobe",
        "model_type": "zooprobe-head",
        "task": model.head.spec.to_dict(),
        "head": cfg.head.to_dict(),
        "mode": cfg.mode,
        "encoder": {
            "source": cfg.encoder,
            "revision": cfg.encoder_revision,
            "fingerprint": base_fp,
            "latent_dim": encoder.latent_dim,
            "includes_finetuned_weights": cfg.mode == "finetune",
        },
        "zoo": {"source": cfg.zoo, "revision": cfg.zoo_revision},
    }


def config_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def check_run_output(output: str | Path, cfg: TrainConfig, resume: bool) -> None:
    """Whether `output` can take this run (reads only): a new, empty or own run folder (`zooprobe.core.
    outputs`), and when resuming one, a run with the same configuration."""
    output = Path(output)
    if check_output(output, RUN_OUTPUT, overwrite=not resume) != "own" or not resume:
        return
    path = output / "config.yaml"
    if not path.exists():
        return
    old = read_yaml(path, "run configuration")
    if not isinstance(old, dict):
        raise ConfigError(f"{path}: not a run configuration (a mapping); start over with --overwrite true")
    with contextlib.suppress(ConfigError, TypeError):  # fields added since the run was written: defaults
        old = TrainConfig.from_dict(old).to_dict()
    diff = config_diff(old, cfg.to_dict())
    if diff:
        raise ConfigError(
            f"{output} holds a run with a different configuration ({'; '.join(diff)}); use another output "
            "folder, or resume=False (--overwrite true) to start over"
        )


def diverged_message(
    cfg: TrainConfig, output: Path, epoch: int, batch: int | None, value: Any, kept: bool
) -> str:
    """The message of a diverged run: where, what is kept, what to do (`value`: the loss, or a text)."""
    where = (
        f"at batch {batch} of epoch {epoch} (of {cfg.optim.epochs})"
        if batch is not None
        else f"in the validation after epoch {epoch} (of {cfg.optim.epochs})"
    )
    what = f"the loss became non-finite ({value})" if batch is not None else f"diverged: {value}"
    saved = (
        f"the state after epoch {epoch - 1} is kept in {output / LAST}"
        + (" and the best head so far in head/" if (output / "head" / "model.safetensors").exists() else "")
        if kept
        else "no epoch finished, so no training state was saved"
    )
    return (
        f"training stopped: {what} {where}; {saved}. Lower --optim.lr (now "
        f"{cfg.optim.lr:g}) or clip gradients (--optim.grad_clip, now {cfg.optim.grad_clip:g}), then start "
        "over with --overwrite true"
    )


def save_run_state(
    output: Path,
    model: EncoderWithHead,
    opt: torch.optim.Optimizer,
    sched: Any,
    stopper: EarlyStopper,
    history: list[dict[str, Any]],
    epoch: int,
    stopped: bool,
) -> None:
    opt_tensors, opt_meta = pack_optimizer(opt)
    tensors = {f"model.{k}": v for k, v in model.trainable_state_dict().items()}
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "format": STATE_FORMAT,
        "epoch": epoch,
        "stopped": stopped,
        "optimizer": opt_meta,
        "scheduler": sched.state_dict() if sched is not None else None,
        "stopper": stopper.state(),
        "history": history,
    }
    save_state(output / LAST, tensors, meta)


def log_line(cfg: TrainConfig, record: dict[str, Any], stopper: EarlyStopper) -> None:
    """One log line per epoch (the terminal when no bar is drawn, and train.log)."""
    text = (
        f"epoch {record['epoch']}/{cfg.optim.epochs}: train loss {record['train'].get('loss', math.nan):.4f}"
    )
    validation = record.get("validation")
    if validation is not None:
        best = (
            " (best so far)"
            if record.get("improved")
            else f" (best {stopper.best:.4f}, epoch {stopper.best_epoch})"
        )
        text += f", validation {cfg.stop.monitor} {validation[cfg.stop.monitor]:.4f}{best}"
    lr = next(iter(record["lr"].values()), math.nan)
    log.info("%s, lr %.3g, %.1f s", text, lr, record["seconds"])


def log_epoch(writer: Any, record: dict[str, Any]) -> None:
    if writer is None:
        return
    epoch = record["epoch"]
    for k, v in record["train"].items():
        writer.add_scalar(f"train/{k}", v, epoch)
    for k, v in record.get("validation", {}).items():
        if isinstance(v, float) and math.isfinite(v):
            writer.add_scalar(f"validation/{k}", v, epoch)
    for k, v in record["lr"].items():
        writer.add_scalar(f"lr/{k}", v, epoch)
    writer.add_scalar("time/epoch_seconds", record["seconds"], epoch)


def final_evaluation(
    cfg: TrainConfig,
    output: Path,
    model: EncoderWithHead,
    encoder: WeightSpaceEncoder,
    data: RunData,
    device: torch.device,
    info: D.DistInfo,
    stopper: EarlyStopper,
    history: list[dict[str, Any]],
) -> TrainResult:
    """Load the best head, evaluate it on validation and test; rank 0 writes trust, predictions and
    metrics.json (last, so a run without it is not finished)."""
    best_path = output / "head" / "model.safetensors"
    D.barrier(info)
    if not best_path.exists():
        raise InvalidInputError(
            f"{output}: no best checkpoint was saved (the monitored metric {cfg.stop.monitor!r} was never "
            "finite); check the data and the learning rate"
        )
    tensors, _ = read_state(best_path, what="head checkpoint", require_meta=False)
    model.load_trainable_state_dict(tensors)
    results: dict[str, dict[str, float]] = {}
    predictions: dict[str, dict[str, np.ndarray]] = {}
    for name in ("validation", "test"):
        results[name], predictions[name] = evaluate_split(model, data.splits[name], device, cfg, info)
    if info.is_main:
        domain_summary = _save_trust(output, model, data, predictions, results, device, cfg)
        metrics_doc = _metrics_doc(cfg, encoder, data, info, stopper, history, results, domain_summary)
        atomic_write_json(output / "metrics.json", json_safe(metrics_doc))
    return TrainResult(
        output, stopper.best_epoch, len(history), results["validation"], results["test"], history
    )


def _save_trust(
    output: Path,
    model: EncoderWithHead,
    data: RunData,
    predictions: dict[str, dict[str, np.ndarray]],
    results: dict[str, dict[str, float]],
    device: torch.device,
    cfg: TrainConfig,
) -> dict[str, Any]:
    """Calibration, reliability and the applicability domain, saved with the head before metrics.json
    (the test metrics gain the calibrated ones); writes the predictions; the domain's summary."""
    trust, calibrated, extra = fit_trust(model, data, predictions, device, cfg)
    trust.save(output / "head")
    results["test"].update(extra)
    assert trust.domain is not None
    for name in ("validation", "test"):
        write_predictions(output / "predictions" / f"{name}.json", data, name, calibrated[name])
    return {**trust.domain.summary, "quantile": trust.domain.quantile}


def _metrics_doc(
    cfg: TrainConfig,
    encoder: WeightSpaceEncoder,
    data: RunData,
    info: D.DistInfo,
    stopper: EarlyStopper,
    history: list[dict[str, Any]],
    results: dict[str, dict[str, float]],
    domain_summary: dict[str, Any],
) -> dict[str, Any]:
    """The content of metrics.json."""
    return {
        "task": cfg.task,
        "mode": cfg.mode,
        "monitor": cfg.stop.monitor,
        "best_epoch": stopper.best_epoch,
        "best_value": stopper.best,
        "epochs_run": len(history),
        "validation": results["validation"],
        "test": results["test"],
        "n_models": {k: len(v) for k, v in data.splits.items()},
        "missing_targets": data.missing,
        "overlap": data.overlap,
        "domain": domain_summary,
        "split_leaks": data.split_leaks,
        "dropped_targets": data.dropped_targets,
        "warnings": data.warnings,
        "encoder_finished": encoder.finished,
        "representation_cache": data.cache,
        "world_size": info.world_size,
        "history": history,
        "library_versions": library_versions(),
    }


def write_predictions(path: Path, data: RunData, split: str, preds: dict[str, np.ndarray]) -> None:
    sd = data.splits[split]
    truth = metric_space_targets(data.spec, sd.targets)
    doc = {
        "split": split,
        "model_ids": [str(x) for x in sd.meta["model_id"]],
        "targets": {
            t.name: {
                "kind": t.kind,
                "classes": list(t.classes),
                "log10": t.log10,
                "true": truth[t.name].tolist(),
                "predicted": np.asarray(preds[t.name]).tolist(),
            }
            for t in data.spec.targets
        },
    }
    atomic_write_json(path, json_safe(doc))
