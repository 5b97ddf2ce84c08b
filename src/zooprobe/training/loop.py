"""The one pretraining engine: `run_loop(objective, optim, zoo, output, ...)`.

What an objective (`zooprobe.training.objectives`) does not decide is done here, the same way for every
objective:

- **torchrun**: gloo on CPU, nccl on GPU (one device per local rank); the objective computes its slice of
  each global batch, the gradients are summed over the ranks (`distributed.sum_gradients`), and only
  rank 0 writes (encoder folders, training state, TensorBoard, ``train.log``). The state holds nothing
  per rank, so a run resumes under another number of processes.
- **optimization**: AdamW with two parameter groups (biases and norm parameters are exempt from weight
  decay), linear warmup over ``warmup_fraction`` of the steps then cosine decay to ``min_lr_ratio * lr``,
  gradient-norm clipping (``grad_clip``; 0: off).
- **divergence**: a non-finite training loss stops the run with `TrainingDivergedError`, saying what is
  kept and what to change.
- **checkpoints**: after every epoch ``OUTPUT/last/`` (the encoder after that epoch), the best encoder in
  ``OUTPUT/`` when the validation loss (the training loss without validation data) improved, and
  ``OUTPUT/training_state.safetensors``; after the last epoch the best encoder is written again with the
  run's full provenance (``finished: true``). Every file is written atomically.
- **resume**: the state (model and training-head weights, AdamW state, LR schedule, the data generator's
  and torch's RNG states, epoch, step, best loss, history, config, zoo fingerprint, the objective's fitted
  preprocessing) is safetensors with a JSON header, never pickled. Running the same call again continues
  after the last finished epoch and ends bit-identical to an uninterrupted run; another configuration or
  zoo is refused.
- **logs**: TensorBoard (``tensorboard/``: train/*, validation/*, lr/encoder, the config as text),
  ``train.log``, the progress bar.

Output folder::

    OUTPUT/config.json, model.safetensors, README.md   best encoder
    OUTPUT/last/...                                    encoder after the last finished epoch
    OUTPUT/training_state.safetensors                  everything needed to resume
    OUTPUT/tensorboard/, OUTPUT/train.log
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from zooprobe.core.device import resolve_device
from zooprobe.core.environment import library_versions
from zooprobe.core.files import atomic_write_json, atomic_write_text, read_json
from zooprobe.core.outputs import check_output, claim_output, holding_outputs
from zooprobe.core.progress import Progress, log, log_file
from zooprobe.core.tensorfile import load_safetensors, read_state, save_state
from zooprobe.encoder.auto import model_card
from zooprobe.encoder.base import CARD_FILE, CONFIG_FILE, ENCODER_OUTPUT, WEIGHTS_FILE
from zooprobe.errors import InvalidInputError, TrainingDivergedError
from zooprobe.training import distributed as D
from zooprobe.training.objectives.base import STATE_FORMAT_VERSION, Objective
from zooprobe.training.state import (
    check_resumable,
    pack_training_state,
    restore_training_state,
    warmup_cosine,
)

STATE_FILE = "training_state.safetensors"
LAST_DIR = "last"
TB_DIR = "tensorboard"
LOG_FILE = "train.log"

EpochCallback = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class OptimSettings:
    """What the loop reads of a configuration (`from_config`: a resolved `PretrainConfig`)."""

    epochs: int
    lr: float
    weight_decay: float
    warmup_fraction: float
    min_lr_ratio: float
    grad_clip: float
    seed: int
    device: str
    config: dict[str, Any] = field(default_factory=dict)
    """The whole configuration: resume refuses another one; TensorBoard and provenance record it."""

    @classmethod
    def from_config(cls, cfg: Any) -> OptimSettings:
        return cls(
            epochs=int(cfg.epochs),
            lr=float(cfg.lr),
            weight_decay=float(cfg.weight_decay),
            warmup_fraction=float(cfg.warmup_fraction),
            min_lr_ratio=float(cfg.min_lr_ratio),
            grad_clip=float(cfg.grad_clip),
            seed=int(cfg.seed),
            device=str(cfg.device),
            config=cfg.to_dict(),
        )


@dataclass
class _Run:
    """The loop's state: the model, its optimizer and schedule, the data generator and the counters."""

    model: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    gen: torch.Generator
    total_steps: int
    epoch: int = 0
    step: int = 0
    best: float = math.inf
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ the loop
@holding_outputs  # the folder's lock is released when it returns
def run_loop(
    objective: Objective,
    optim: OptimSettings,
    zoo: Any,
    output: str | Path,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> Path:
    """Pretrain with `objective` on `zoo` into `output` (see the module docs); returns `output`.

    With ``resume=True`` a run found in `output` continues after its last finished epoch (a finished run
    returns at once); with ``resume=False`` the files a previous run wrote into `output` are deleted first
    (only those). `on_epoch_end(epoch, record)` is called after each epoch's checkpoint (1-based epoch).
    """
    info = D.init_distributed(optim.device)
    device = resolve_device(optim.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    output = Path(output)
    check_output(output, ENCODER_OUTPUT, overwrite=not resume)  # before anything is read or written
    fingerprint = zoo.fingerprint()
    saved = _saved_state(objective, optim, output, fingerprint) if resume else None
    if saved is not None and saved[1]["finished"]:
        if info.is_main:
            mark_finished(output)  # a kill between the last state and this mark leaves it undone
        D.barrier(info)
        return output
    progress = progress and info.is_main
    objective.prepare(zoo, None if saved is None else saved[1], progress)
    if info.is_main:
        claim_output(output, ENCODER_OUTPUT, overwrite=not resume)  # the input is valid: now write
    D.barrier(info)
    provenance = {
        "zoo_source": str(zoo.source),
        "zoo_fingerprint": fingerprint,
        **objective.provenance(),
        "pretrain_config": optim.config,
        "library_versions": library_versions(),
        "world_size": info.world_size,
    }
    # The caller's RNG states are restored afterwards; inside, every random draw is seeded or resumed.
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        run = _start(objective, optim, saved, device)
        with _logs(optim, output, run, info, progress, resumed=saved is not None) as (writer, bar):
            while run.epoch < optim.epochs:
                start = time.perf_counter()
                sums, count = _train_epoch(objective, optim, run, info, device, output, writer, bar)
                record = _end_epoch(objective, optim, run, sums, count, device, writer, start)
                if info.is_main:  # rank 0 writes; the others wait for it
                    _checkpoint(
                        objective, optim, run, output, provenance, fingerprint, str(zoo.source), device
                    )
                D.barrier(info)
                if on_epoch_end is not None:
                    on_epoch_end(run.epoch, record)
    return output


def _saved_state(
    objective: Objective, optim: OptimSettings, output: Path, fingerprint: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The training state in `output` when there is one to resume (checked: kind, configuration, zoo)."""
    path = output / STATE_FILE
    if not path.exists():
        return None
    tensors, meta = read_state(path)
    objective.check_state(path, meta, output)
    check_resumable(output, meta, optim.config, fingerprint)
    return tensors, meta


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's two groups: matrices decay; biases, norm parameters and other vectors do not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "norm" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _start(
    objective: Objective,
    optim: OptimSettings,
    saved: tuple[dict[str, torch.Tensor], dict[str, Any]] | None,
    device: torch.device,
) -> _Run:
    """The model (from the seed), AdamW, the schedule and the generator; a saved run's state restored."""
    torch.manual_seed(optim.seed)
    gen = torch.Generator().manual_seed(optim.seed)
    model = objective.build_model(fresh=saved is None)
    model.to(device)
    opt = torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr)
    total_steps = objective.steps_per_epoch() * optim.epochs
    warmup = round(optim.warmup_fraction * total_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, total_steps, warmup, optim.min_lr_ratio)
    )
    run = _Run(model, opt, sched, gen, total_steps)
    if saved is not None:
        tensors, meta = saved
        restore_training_state(model, opt, sched, gen, tensors, meta, device)
        run.epoch, run.step = int(meta["epoch"]), int(meta["step"])
        run.best = math.inf if meta["best_loss"] is None else float(meta["best_loss"])
        run.best_epoch, run.history = meta["best_epoch"], list(meta["history"])
    return run


@contextlib.contextmanager
def _logs(
    optim: OptimSettings, output: Path, run: _Run, info: D.DistInfo, progress: bool, resumed: bool
) -> Iterator[tuple[Any, Progress]]:
    """TensorBoard's writer (rank 0; a no-op elsewhere), the progress bar and ``train.log``."""
    from tensorboardX import SummaryWriter  # heavy: tensorboardX

    writer: Any = (
        SummaryWriter(str(output / TB_DIR), purge_step=run.step if resumed else None)
        if info.is_main
        else D.NoWriter()
    )
    writer.add_text("config", "```yaml\n" + yaml.safe_dump(optim.config, sort_keys=False) + "```", run.step)
    bar = Progress("pretrain", run.total_steps, unit="steps", enabled=progress, done=run.step, loss="-")
    logging: Any = log_file(output / LOG_FILE) if info.is_main else contextlib.nullcontext()
    with logging, bar, contextlib.closing(writer):
        yield writer, bar


def _train_epoch(
    objective: Objective,
    optim: OptimSettings,
    run: _Run,
    info: D.DistInfo,
    device: torch.device,
    output: Path,
    writer: Any,
    bar: Progress,
) -> tuple[dict[str, float], int]:
    """One epoch of steps: the loss terms summed over it (each weighted by its batch's models), and the
    number of models."""
    model, opt = run.model, run.opt
    model.train()
    bar.describe(f"pretrain epoch {run.epoch + 1}/{optim.epochs}")
    sums: dict[str, float] = {}
    count = 0
    for batch in objective.batches(run.gen):
        step = objective.train_step(model, batch, run.gen, info, device)
        opt.zero_grad(set_to_none=True)
        step.loss.backward()
        D.sum_gradients(info, model)
        values = step.values()
        if optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()
        lr = opt.param_groups[0]["lr"]
        run.sched.step()
        run.step += 1
        if not math.isfinite(values["loss"]):
            raise TrainingDivergedError(_diverged(optim, run, output, values["loss"]))
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value * step.n
            writer.add_scalar(f"train/{key}", value, run.step)
        count += step.n
        writer.add_scalar("lr/encoder", lr, run.step)
        bar.advance(loss=values["loss"])
    return sums, count


def _diverged(optim: OptimSettings, run: _Run, output: Path, value: float) -> str:
    kept = (
        f"the state after epoch {run.epoch} is kept in {output} (best encoder included)"
        if run.epoch
        else "no epoch finished, so nothing was saved"
    )
    return (
        f"pretraining stopped: the loss became non-finite ({value}) at step {run.step}, in epoch "
        f"{run.epoch + 1} of {optim.epochs}; {kept}. Lower --lr (now {optim.lr:g}) or --grad_clip, then "
        "start over (--overwrite)"
    )


def _end_epoch(
    objective: Objective,
    optim: OptimSettings,
    run: _Run,
    sums: dict[str, float],
    count: int,
    device: torch.device,
    writer: Any,
    start: float,
) -> dict[str, Any]:
    """The epoch's record (train and validation means), logged and appended to the history."""
    run.epoch += 1
    record: dict[str, Any] = {"epoch": run.epoch, "step": run.step}
    record.update({f"train_{k}": v / max(count, 1) for k, v in sums.items()})
    validation = objective.validate(run.model, device)
    if validation is not None:
        record.update({f"val_{k}": v for k, v in validation.items()})
    record["seconds"] = time.perf_counter() - start
    run.history.append(record)
    for key, value in record.items():
        if key.startswith("val_"):
            writer.add_scalar(f"validation/{key.removeprefix('val_')}", value, run.step)
    writer.flush()
    log.info(
        "pretrain epoch %d/%d: train loss %.4f%s, %.1f s",
        run.epoch,
        optim.epochs,
        record["train_loss"],
        f", validation loss {record['val_loss']:.4f}" if "val_loss" in record else "",
        record["seconds"],
    )
    return record


def _checkpoint(
    objective: Objective,
    optim: OptimSettings,
    run: _Run,
    output: Path,
    base: dict[str, Any],
    fingerprint: str,
    zoo_source: str,
    device: torch.device,
) -> None:
    """After an epoch: the last encoder, the best one (when improved, and at the end with the whole run's
    provenance) and the training state, in that order."""
    record = run.history[-1]
    score = record.get("val_loss", record["train_loss"])
    finished = run.epoch >= optim.epochs
    improved = score < run.best
    if improved:
        run.best, run.best_epoch = score, run.epoch
    best_loss = None if math.isinf(run.best) else run.best
    provenance = {**base, "epochs_trained": run.epoch, "finished": finished, "history": run.history}
    marks = {"best_epoch": run.best_epoch, "best_loss": best_loss}
    encoder = objective.encoder_module(run.model)
    objective.save(encoder, output / LAST_DIR, {**provenance, "checkpoint": "last", **marks})
    if improved or (finished and (output / WEIGHTS_FILE).is_file()):
        # the best encoder; on the last epoch written again (its weights from the folder) so that its
        # provenance records the whole, finished run
        keep = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        if not improved:
            encoder.load_state_dict(load_safetensors(output / WEIGHTS_FILE))
        objective.save(encoder, output, {**provenance, "checkpoint": "best", **marks})
        encoder.load_state_dict(keep)
    tensors, opt_meta = pack_training_state(run.model, run.opt, run.gen, device)
    meta = {
        "format_version": STATE_FORMAT_VERSION,
        "config": optim.config,
        "zoo_source": zoo_source,
        "zoo_fingerprint": fingerprint,
        **objective.state_fields(),
        "epoch": run.epoch,
        "step": run.step,
        "best_loss": best_loss,
        "best_epoch": run.best_epoch,
        "history": run.history,
        "optimizer": opt_meta,
        "scheduler": run.sched.state_dict(),
        "finished": finished,
    }
    save_state(output / STATE_FILE, tensors, meta)


# ------------------------------------------------------------------------------------------ after a run
def mark_finished(folder: Path) -> None:
    """Record in `folder`'s config.json (and card) that its pretraining run reached the last epoch.

    Runs written before the best encoder was rewritten at the end could stop between the last state and
    this mark; resuming such a finished run flips ``finished`` here (any encoder kind: the card is the
    kind's).
    """
    path = folder / CONFIG_FILE
    if not path.is_file():
        return
    config = read_json(path, "encoder config")
    if config.get("provenance", {}).get("finished") is False:
        config["provenance"]["finished"] = True
        atomic_write_json(path, config)
        atomic_write_text(folder / CARD_FILE, model_card(config, path))


def training_history(output: str | Path) -> list[dict[str, Any]]:
    """Per-epoch records (losses, lr step, seconds) of the pretraining run in `output`."""
    path = Path(output) / STATE_FILE
    if not path.exists():
        raise InvalidInputError(f"{output}: no {STATE_FILE}; not a pretraining output folder")
    tensors, meta = read_state(path)
    del tensors
    if meta.get("format_version") != STATE_FORMAT_VERSION:
        raise InvalidInputError(f"{path}: training state format {meta.get('format_version')!r} not supported")
    return list(meta["history"])


__all__ = [
    "LAST_DIR",
    "LOG_FILE",
    "STATE_FILE",
    "TB_DIR",
    "EpochCallback",
    "OptimSettings",
    "mark_finished",
    "param_groups",
    "run_loop",
    "training_history",
]
