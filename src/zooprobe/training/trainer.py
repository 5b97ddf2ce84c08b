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
from torch.nn.parallel import DistributedDataParallel as DDP

from zooprobe.core.device import autocast, resolve_device
from zooprobe.core.files import atomic_write_text
from zooprobe.core.outputs import claim_output, holding_outputs
from zooprobe.core.progress import Progress, log_file
from zooprobe.core.tensorfile import read_state
from zooprobe.encoder.base import WeightSpaceEncoder
from zooprobe.errors import ConfigError, InvalidInputError, TrainingDivergedError
from zooprobe.heads.encoder_with_head import EncoderWithHead
from zooprobe.heads.gbm_head import GradientBoostingHead
from zooprobe.heads.head_loader import head_folder, read_head_config, save_head
from zooprobe.heads.prediction_heads import HeadConfig, build_head
from zooprobe.training import distributed as D
from zooprobe.training.batches import train_batches
from zooprobe.training.config import TrainConfig
from zooprobe.training.data_loader import (
    RunData,
    load_inputs,
    model_inputs,
    plan_data,
    split_features,
    split_targets,
)
from zooprobe.training.evaluator import (
    NonFiniteOutputError,
    check_monitor,
    evaluate_split,
    lower_is_better,
)
from zooprobe.training.head_outputs import (
    STATE_FORMAT,
    EarlyStopper,
    TrainResult,
    check_run_output,
    config_yaml,
    diverged_message,
    final_evaluation,
    head_config,
    log_epoch,
    log_line,
    save_run_state,
)
from zooprobe.training.run_folder import LAST, RUN_OUTPUT
from zooprobe.training.state import unpack_optimizer, warmup_cosine
from zooprobe.zoo.store import Zoo

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ helpers
def _set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _cosine(cfg: TrainConfig, total_steps: int) -> Any:
    """The LambdaLR factor of the cosine schedule (linear warmup, then cosine decay)."""
    warmup = round(cfg.optim.warmup_fraction * total_steps)
    return lambda step: warmup_cosine(step, total_steps, warmup, cfg.optim.min_lr_ratio)


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
        run.writer.add_text("config", "```yaml\n" + config_yaml(cfg) + "```", run.start_epoch)
    with log_file(output / "train.log") if info.is_main else contextlib.nullcontext():
        _epochs(run, progress)
        result = final_evaluation(
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
        atomic_write_text(output / "config.yaml", config_yaml(cfg))
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
                log_epoch(run.writer, record)
                save_run_state(
                    run.output, run.model, run.opt, run.sched, run.stopper, run.history, epoch, stopped
                )
            D.barrier(info)
            shown = record.get("validation", {}).get(cfg.stop.monitor)
            fields = {"loss": record["train"].get("loss", math.nan)}
            bar.advance(**fields, **({f"val {cfg.stop.monitor}": shown} if shown is not None else {}))
            log_line(cfg, record, run.stopper)
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
            raise TrainingDivergedError(
                diverged_message(cfg, run.output, epoch, n_batches + 1, value, kept=kept)
            )
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
            diverged_message(cfg, output, epoch, None, str(e), kept=(output / LAST).exists())
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
    result = final_evaluation(cfg, output, model, encoder, data, device, info, stopper, [record])
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


__all__ = [
    "EarlyStopper",
    "TrainResult",
    "TrainingDivergedError",
    "check_run_output",
    "fit",
    "head_config",
]
