"""Head training, top to bottom: `fit` runs one `TrainConfig` into a run folder.

`zooprobe.train` resolves the config's zoo and encoder sources and calls `fit`; the run folder and its
files are described in `zooprobe.training.run_folder`.

Resume: the last state holds the trainable weights, the optimizer, the scheduler, the early stopper, the
history and the RNG state after the epoch; batch order and augmentations are drawn from generators seeded
by ``(seed, epoch)``. A run killed at any point and started again continues from the last finished epoch
and ends with the same metrics as an uninterrupted run.

Distributed (``torchrun``): each global batch is split across ranks; the head (or encoder + head) is
wrapped in DDP; validation predictions are gathered from all ranks without duplicates; the early-stopping
decision is all-reduced; only rank 0 logs and writes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP

from zooprobe.core.device import autocast, resolve_device
from zooprobe.core.environment import library_versions
from zooprobe.core.files import atomic_write_json, atomic_write_text, json_safe, read_yaml
from zooprobe.core.outputs import check_output, claim_output, holding_outputs
from zooprobe.core.progress import Progress, log_file
from zooprobe.core.tensorfile import read_state, save_state
from zooprobe.encoder.base import WeightSpaceEncoder
from zooprobe.errors import ConfigError, InvalidInputError, TrainingDivergedError
from zooprobe.heads.encoder_with_head import EncoderWithHead
from zooprobe.heads.gbm_head import GradientBoostingHead
from zooprobe.heads.head_loader import HEAD_FORMAT, head_folder, read_head_config, save_head
from zooprobe.heads.prediction_heads import HeadConfig, build_head
from zooprobe.training import distributed as D
from zooprobe.training.config import TrainConfig
from zooprobe.training.data_loader import (
    RunData,
    load_inputs,
    model_inputs,
    plan_data,
    split_features,
    split_targets,
    train_batches,
)
from zooprobe.training.evaluator import (
    NonFiniteOutputError,
    check_monitor,
    evaluate_split,
    fit_trust,
    lower_is_better,
    metric_space_targets,
)
from zooprobe.training.run_folder import LAST, RUN_OUTPUT
from zooprobe.training.state import config_diff, pack_optimizer, unpack_optimizer, warmup_cosine
from zooprobe.zoo.store import Zoo

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


# ------------------------------------------------------------------------------------------ helpers
def _set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _cosine(cfg: TrainConfig, total_steps: int) -> Any:
    """The LambdaLR factor of the cosine schedule (linear warmup, then cosine decay)."""
    warmup = round(cfg.optim.warmup_fraction * total_steps)
    return lambda step: warmup_cosine(step, total_steps, warmup, cfg.optim.min_lr_ratio)


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


def _config_yaml(cfg: TrainConfig) -> str:
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


def _diverged(cfg: TrainConfig, output: Path, epoch: int, batch: int | None, value: Any, kept: bool) -> str:
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


# ------------------------------------------------------------------------------------------ training
@dataclass
class _HeadRun:
    """What the steps of `fit` share: the run's settings, model, optimizer, schedule and progress."""

    cfg: TrainConfig
    output: Path
    info: D.DistInfo
    device: torch.device
    encoder: WeightSpaceEncoder
    base_fp: str
    data: RunData
    model: EncoderWithHead
    opt: torch.optim.Optimizer
    sched: Any
    stopper: EarlyStopper
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    """The last finished epoch (epochs count from 1)."""
    ddp_model: Any = None
    writer: Any = None


@holding_outputs  # the folder's lock is released when it returns
def fit(
    cfg: TrainConfig,
    output: str | Path,
    *,
    encoder: WeightSpaceEncoder,
    zoo: Zoo,
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train a head as `cfg` says, on `zoo` with `encoder`, into the run folder `output`; returns the final
    metrics. `zoo` and `encoder` must be what ``cfg.zoo`` / ``cfg.encoder`` name (the config records the
    sources; `zooprobe.train` loads them from it).

    Everything is validated before anything is written: the output folder (reads only), then the data
    (targets, monitor, split leaks, overlap). Only then is the folder claimed and config.yaml written, so a
    mistyped option never leaves a run folder that refuses the corrected command.
    """
    cfg.validate()
    start_time = time.perf_counter()
    info = D.init_distributed(cfg.device)
    if info.enabled and cfg.head.kind == "gbm":
        raise ConfigError("a gbm head trains in one process (LightGBM); run it without torchrun")
    device = resolve_device(cfg.device, info.local_rank if info.enabled else None)
    output = Path(output)
    encoder, base_fp, data = _prepare(cfg, output, encoder, zoo, info, device, resume, progress)
    _set_seed(cfg.seed)
    if cfg.head.kind == "gbm":
        return _fit_gbm(cfg, output, encoder, data, device, base_fp, start_time)
    run = _build(cfg, output, info, device, encoder, base_fp, data)
    if resume and (output / LAST).exists():
        _resume(run)
    run.ddp_model = _wrap(run)
    if info.is_main:
        from tensorboardX import SummaryWriter  # heavy: tensorboardX

        run.writer = SummaryWriter(
            str(output / "tensorboard"), purge_step=run.start_epoch + 1 if run.start_epoch else None
        )
        run.writer.add_text("config", "```yaml\n" + _config_yaml(cfg) + "```", run.start_epoch)
    with log_file(output / "train.log") if info.is_main else contextlib.nullcontext():
        _epochs(run, progress)
        result = _final_evaluation(
            cfg, output, run.model, encoder, data, device, info, run.stopper, run.history
        )
        result.seconds = time.perf_counter() - start_time
        if run.writer is not None:
            for k, v in result.test.items():
                if isinstance(v, float) and math.isfinite(v):
                    run.writer.add_scalar(f"test/{k}", v, run.stopper.best_epoch)
            run.writer.close()
        D.barrier(info)
        return result


def _prepare(
    cfg: TrainConfig,
    output: Path,
    encoder: WeightSpaceEncoder,
    zoo: Zoo,
    info: D.DistInfo,
    device: torch.device,
    resume: bool,
    progress: bool,
) -> tuple[WeightSpaceEncoder, str, RunData]:
    """Check the output folder and the data, load the inputs, then claim the folder and write config.yaml:
    (the encoder to train with, its fingerprint as loaded, the data)."""
    if info.is_main:
        check_run_output(output, cfg, resume)
    if cfg.mode == "finetune":
        encoder = copy.deepcopy(encoder)  # fine-tuning must never change the caller's encoder
    encoder.encoder.to(device)
    base_fp = encoder.fingerprint()
    data = plan_data(cfg, encoder, zoo)
    check_monitor(cfg.stop.monitor, data.spec)
    wait = lambda: D.barrier(info)  # noqa: E731
    load_inputs(data, cfg, encoder, main_process=info.is_main, wait=wait, progress=progress)
    if info.is_main:
        claim_output(output, RUN_OUTPUT, overwrite=not resume)
        atomic_write_text(output / "config.yaml", _config_yaml(cfg))
    D.barrier(info)
    return encoder, base_fp, data


def _build(
    cfg: TrainConfig,
    output: Path,
    info: D.DistInfo,
    device: torch.device,
    encoder: WeightSpaceEncoder,
    base_fp: str,
    data: RunData,
) -> _HeadRun:
    """The encoder + head, AdamW over its parameter groups, the LR schedule and the early stopper."""
    head = build_head(data.spec, cfg.head, encoder.latent_dim)
    model = EncoderWithHead(
        encoder,
        head,
        cfg.mode,
        encoder_lr_ratio=cfg.encoder_lr_ratio,
        unfreeze_top_layers=cfg.unfreeze_top_layers,
        encode_batch_size=cfg.encode_batch_size,
    ).to(device)
    train_stats = data.splits["train"].stats
    if train_stats is not None:
        model.head.set_statistics_normalization(train_stats.mean(0).to(device), train_stats.std(0).to(device))
    if cfg.init_from:
        _init_head(model, Path(cfg.init_from))
    opt = torch.optim.AdamW(model.param_groups(cfg.optim.lr, cfg.optim.weight_decay))
    lower = lower_is_better(cfg.stop.monitor)
    sched = _scheduler(cfg, opt, math.ceil(len(data.splits["train"]) / cfg.optim.batch_size), lower)
    stopper = EarlyStopper(cfg.stop.patience, cfg.stop.min_delta, lower)
    return _HeadRun(cfg, output, info, device, encoder, base_fp, data, model, opt, sched, stopper)


def _scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int, lower: bool) -> Any:
    """The LR schedule of ``optim.scheduler``: cosine (per step), plateau (per evaluation) or None."""
    if cfg.optim.scheduler == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, _cosine(cfg, steps_per_epoch * cfg.optim.epochs))
    if cfg.optim.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt,
            mode="min" if lower else "max",
            factor=cfg.optim.plateau_factor,
            patience=cfg.optim.plateau_patience,
            threshold=cfg.stop.min_delta,  # "improvement" means the same for the LR schedule and stopping
            threshold_mode="abs",
            min_lr=[g["lr"] * cfg.optim.min_lr_ratio for g in opt.param_groups],
        )
    return None


def _resume(run: _HeadRun) -> None:
    """Load the last state of the run folder (weights, optimizer, schedule, stopper, history, RNG)."""
    state_path = run.output / LAST
    tensors, meta = read_state(state_path)
    if meta.get("format") != STATE_FORMAT:
        raise InvalidInputError(
            f"{state_path}: training-state format {meta.get('format')!r} is not this zooprobe's "
            f"({STATE_FORMAT}); start the run over with --overwrite true"
        )
    run.model.load_trainable_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    unpack_optimizer(run.opt, tensors, meta["optimizer"])
    if run.sched is not None:
        run.sched.load_state_dict(meta["scheduler"])
    run.stopper.load(meta["stopper"])
    run.history = meta["history"]
    run.start_epoch = int(meta["epoch"])
    torch.set_rng_state(tensors["rng.torch"])
    if meta.get("stopped") or run.start_epoch >= run.cfg.optim.epochs:
        run.start_epoch = run.cfg.optim.epochs  # finished: go straight to the final evaluation


def _wrap(run: _HeadRun) -> Any:
    """The module the training steps call: the model, or under torchrun its trainable part in DDP."""
    if not run.info.enabled:
        return run.model
    trainable = run.model.head if run.model.frozen else run.model
    return DDP(
        trainable,
        device_ids=[run.info.local_rank] if run.device.type == "cuda" else None,
        find_unused_parameters=not run.model.frozen,
    )


def _epochs(run: _HeadRun, progress: bool) -> None:
    """The epochs after the last finished one, each checkpointed; stops early when the stopper says so."""
    cfg, info = run.cfg, run.info
    label = f"training {cfg.task} head ({cfg.mode})"
    bar = Progress(label, cfg.optim.epochs, enabled=progress and info.is_main, done=run.start_epoch)
    if run.start_epoch:
        log.info("resuming %s after epoch %d of %d", label, run.start_epoch, cfg.optim.epochs)
    try:
        bar.__enter__()
        for epoch in range(run.start_epoch + 1, cfg.optim.epochs + 1):
            record = _train_epoch(run, epoch)
            stopped = False
            if epoch % cfg.stop.eval_every == 0 or epoch == cfg.optim.epochs:
                stopped = _validate(run, epoch, record)
            run.history.append(record)
            if info.is_main:
                _log_epoch(run.writer, record)
                _save_state(
                    run.output, run.model, run.opt, run.sched, run.stopper, run.history, epoch, stopped
                )
            D.barrier(info)
            shown = record.get("validation", {}).get(cfg.stop.monitor)
            fields = {"loss": record["train"].get("loss", math.nan)}
            bar.advance(**fields, **({f"val {cfg.stop.monitor}": shown} if shown is not None else {}))
            _log_line(cfg, record, run.stopper)
            if stopped:
                log.info(
                    "early stopping after epoch %d: no improvement in %d evaluations",
                    epoch,
                    cfg.stop.patience,
                )
                break
    finally:
        bar.__exit__(None, None, None)
        if run.writer is not None:
            run.writer.flush()


def _train_epoch(run: _HeadRun, epoch: int) -> dict[str, Any]:
    """One epoch of training steps; its record (mean losses, seconds, learning rates)."""
    cfg, info, model, opt, device = run.cfg, run.info, run.model, run.opt, run.device
    train_split = run.data.splits["train"]
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch - 1)  # augmentations of this epoch
    sums: dict[str, float] = {}
    n_batches = 0
    epoch_start = time.perf_counter()
    for batch in train_batches(train_split, cfg.optim.batch_size, cfg.seed, epoch - 1):
        mine = batch[info.rank :: info.world_size]
        if len(mine) == 0 or (info.enabled and len(batch) < info.world_size):
            continue  # every rank must take part in every step
        with autocast(device, cfg.amp):
            inputs = model_inputs(model, train_split, mine, device, cfg, gen)
            if model.frozen:
                out = (run.ddp_model if info.enabled else model.head)(inputs["features"])
            else:
                out = run.ddp_model(**inputs)
        loss, parts = model.head.loss(out, split_targets(train_split, mine, device))
        value = loss.detach().item()
        if not math.isfinite(value):
            kept = (run.output / LAST).exists()
            raise TrainingDivergedError(_diverged(cfg, run.output, epoch, n_batches + 1, value, kept=kept))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for g in opt.param_groups for p in g["params"]], cfg.optim.grad_clip
            )
        opt.step()
        if cfg.optim.scheduler == "cosine":
            run.sched.step()
        sums["loss"] = sums.get("loss", 0.0) + value
        for k, v in parts.items():
            sums[f"loss/{k}"] = sums.get(f"loss/{k}", 0.0) + v.detach().item()
        n_batches += 1
    names = [g["name"] for g in opt.param_groups]
    return {
        "epoch": epoch,
        "train": {k: v / max(1, n_batches) for k, v in sums.items()},
        "seconds": time.perf_counter() - epoch_start,
        "lr": {name: g["lr"] for name, g in zip(names, opt.param_groups, strict=True)},
    }


def _validate(run: _HeadRun, epoch: int, record: dict[str, Any]) -> bool:
    """Evaluate on validation after `epoch` (into `record`), keep an improved head, step the plateau
    schedule; whether to stop (all ranks agree)."""
    cfg, output = run.cfg, run.output
    try:
        val_metrics, _ = evaluate_split(run.model, run.data.splits["validation"], run.device, cfg, run.info)
    except NonFiniteOutputError as e:
        raise TrainingDivergedError(
            _diverged(cfg, output, epoch, None, str(e), kept=(output / LAST).exists())
        ) from e
    value = val_metrics[cfg.stop.monitor]  # a metric name (check_monitor)
    improved = run.stopper.update(value, epoch)
    record["validation"] = val_metrics
    record["improved"] = improved
    if cfg.optim.scheduler == "plateau" and math.isfinite(value):
        run.sched.step(value)  # only on a real evaluation: never on a missing metric
    if improved and run.info.is_main:
        _save_best(output, cfg, run.model, run.encoder, run.base_fp, epoch, value)
    return D.any_rank(run.info, run.stopper.should_stop)


def _fit_gbm(
    cfg: TrainConfig,
    output: Path,
    encoder: WeightSpaceEncoder,
    data: RunData,
    device: torch.device,
    base_fp: str,
    start_time: float,
) -> TrainResult:
    """A ``gbm`` head (`zooprobe.heads.gbm_head`): LightGBM per target on the train split, early-stopped on
    validation; written as a run folder with one "epoch" (best epoch 1), so report, push, evaluate and
    predict read it like any run."""
    head = GradientBoostingHead(data.spec, cfg.head, encoder.latent_dim)
    model = EncoderWithHead(encoder, head, "frozen", encode_batch_size=cfg.encode_batch_size).to(device)
    x = {
        name: head.feature_matrix(split_features(split, np.arange(len(split)), device))
        for name, split in data.splits.items()
    }
    start = time.perf_counter()
    fit_info = head.fit(
        x["train"], data.splits["train"].targets, x["validation"], data.splits["validation"].targets, cfg.seed
    )
    info = D.DistInfo()
    val_metrics, _ = evaluate_split(model, data.splits["validation"], device, cfg, info)
    value = float(val_metrics[cfg.stop.monitor])
    stopper = EarlyStopper(cfg.stop.patience, cfg.stop.min_delta, lower_is_better(cfg.stop.monitor))
    stopper.best, stopper.best_epoch = value, 1
    record = {
        "epoch": 1,
        "train": {},
        "seconds": time.perf_counter() - start,
        "lr": {},
        "validation": val_metrics,
        "improved": True,
        "gbm": fit_info,
    }
    _save_best(output, cfg, model, encoder, base_fp, 1, value)
    result = _final_evaluation(cfg, output, model, encoder, data, device, info, stopper, [record])
    result.seconds = time.perf_counter() - start_time
    return result


def _init_head(model: EncoderWithHead, run_dir: Path) -> None:
    """Load the best head of a finished run into `model.head` (strict; same task, targets, architecture)."""

    folder = head_folder(run_dir)
    config = read_head_config(folder)
    same_head = HeadConfig.from_saved(config["head"]) == model.head.config
    if config["task"] != model.head.spec.to_dict() or not same_head:
        raise ConfigError(
            f"init_from {run_dir}: its head predicts other targets or has another architecture than this "
            "run's head"
        )
    tensors, _ = read_state(folder / "model.safetensors", what="head checkpoint", require_meta=False)
    model.head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")}, strict=True)


def _save_best(
    output: Path,
    cfg: TrainConfig,
    model: EncoderWithHead,
    encoder: WeightSpaceEncoder,
    base_fp: str,
    epoch: int,
    value: float,
) -> None:
    meta = {"epoch": epoch, "monitor": cfg.stop.monitor, "value": value}
    save_head(model, head_config(cfg, model, encoder, base_fp), output / "head", meta)


def _save_state(
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


def _log_line(cfg: TrainConfig, record: dict[str, Any], stopper: EarlyStopper) -> None:
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


def _log_epoch(writer: Any, record: dict[str, Any]) -> None:
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


def _final_evaluation(
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
    domain_summary: dict[str, Any] = {}
    if info.is_main:
        # calibration, reliability and the applicability domain, saved with the head before metrics.json
        trust, calibrated, extra = fit_trust(model, data, predictions, device, cfg)
        trust.save(output / "head")
        results["test"].update(extra)
        assert trust.domain is not None
        domain_summary = {**trust.domain.summary, "quantile": trust.domain.quantile}
        for name in ("validation", "test"):
            _write_predictions(output / "predictions" / f"{name}.json", data, name, calibrated[name])
    if info.is_main:
        metrics_doc = {
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
        atomic_write_json(output / "metrics.json", json_safe(metrics_doc))
    return TrainResult(
        output, stopper.best_epoch, len(history), results["validation"], results["test"], history
    )


def _write_predictions(path: Path, data: RunData, split: str, preds: dict[str, np.ndarray]) -> None:

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


__all__ = [
    "EarlyStopper",
    "TrainResult",
    "TrainingDivergedError",
    "check_run_output",
    "fit",
    "head_config",
]
