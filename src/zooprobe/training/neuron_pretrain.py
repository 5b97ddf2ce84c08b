"""Supervised multi-task pretraining of the v3 (neuron-level) encoder on a zoo's metadata.

Why supervised: on the bench zoo, self-supervised objectives (SANE reconstruction, contrastive views)
gave representations that added almost nothing to the weight statistics, while an encoder trained to
predict the metadata of a *disjoint* pretraining zoo gave heads and gradient boosting a large gain
(docs/encoder.md has the table). Pretrain on models the heads will not be evaluated on: the overlap guard
of `zooprobe train` refuses an encoder that saw the evaluation split, and training heads on the very models
the encoder was fitted to makes its predictions in-sample (measured: optimizer accuracy fell from 0.59 to
0.48 on validation), so zooprobe warns about that too.

What it trains on: the final checkpoints of ``PretrainConfig.splits`` of the zoo (``["train"]`` by
default; a zoo reserved for pretraining may give ``["train", "test"]``); the validation split picks the
best epoch (lowest multi-task loss) and is never trained on.

Targets (`metadata_targets`): every metadata column present with at least two distinct values on the
training models:

- continuous, standardized with the training models' mean and std: ``test_accuracy``,
  ``train_accuracy``, ``log10_learning_rate``, ``log10_weight_decay`` (floored at 1e-7), ``epochs``,
  ``log2_batch_size``, ``dropout``, ``momentum``, ``label_smoothing``;
- categorical: ``optimizer``, ``activation``, ``init``, ``scheduler``, ``normalization``;
- binary: ``has_dropout``, ``has_residual``, ``zero_weight_decay``.

Loss: the sum over targets of MSE / cross-entropy / binary cross-entropy (`multitask_loss`); missing
values do not count. Inputs get multiplicative weight noise ``w * (1 + noise_sigma * eps)`` (weights,
biases and norm affines). No permutation augmentation is needed: the encoder is invariant by construction.

Optimization, checkpoints, resume, TensorBoard and logs follow `zooprobe.training.pretrain`: AdamW (no
decay on biases and norms), warmup then cosine decay, gradient clipping; ``OUTPUT/`` holds the best encoder,
``OUTPUT/last/`` the last epoch's, ``training_state.safetensors`` everything needed to resume (never
pickled), ``tensorboard/`` and ``train.log``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn

from zooprobe.core.device import resolve_device
from zooprobe.core.environment import library_versions
from zooprobe.core.outputs import check_output, claim_output, holding_outputs
from zooprobe.core.progress import Progress, log, log_file
from zooprobe.core.tensorfile import load_safetensors, read_state, save_state
from zooprobe.encoder.config import NeuronEncoderConfig, PretrainTarget
from zooprobe.encoder.encoder_loader import ENCODER_OUTPUT, WEIGHTS_FILE
from zooprobe.encoder.neuron_loader import save_neuron_encoder
from zooprobe.encoder.neuron_model import NeuronEncoder, multitask_loss
from zooprobe.errors import ConfigError, InvalidInputError, ZooprobeError
from zooprobe.tokens.neurons import (
    NeuronModel,
    StackedLayer,
    featurize_batch,
    index_stack,
    neuron_model,
    noise_stack,
    stack_groups,
)
from zooprobe.training import distributed as D
from zooprobe.training.state import (
    check_resumable,
    pack_training_state,
    restore_training_state,
    warmup_cosine,
)
from zooprobe.zoo.store import Zoo

STATE_FILE = "training_state.safetensors"
STATE_FORMAT_VERSION = 1
LAST_DIR = "last"
TB_DIR = "tensorboard"
LOG_FILE = "train.log"
NORM_SAMPLE = 1500  # training models used to fit the feature standardization

EpochCallback = Callable[[int, dict[str, Any]], None]


# ------------------------------------------------------------------------------------------ targets
def _column(meta: pd.DataFrame, name: str) -> np.ndarray | None:
    return None if name not in meta.columns else meta[name].to_numpy()


def _continuous(meta: pd.DataFrame) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in ("test_accuracy", "train_accuracy", "epochs", "dropout", "momentum", "label_smoothing"):
        col = _column(meta, name)
        if col is not None:
            out[name] = pd.to_numeric(pd.Series(col), errors="coerce").to_numpy(dtype=np.float64)
    for name, floor, base in (("learning_rate", 1e-8, 10), ("weight_decay", 1e-7, 10), ("batch_size", 1, 2)):
        col = _column(meta, name)
        if col is not None:
            x = pd.to_numeric(pd.Series(col), errors="coerce").to_numpy(dtype=np.float64)
            log_name = f"log{base}_{name}"
            out[log_name] = np.log(np.maximum(x, floor)) / math.log(base)
    return out


def _binary(meta: pd.DataFrame) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in ("has_dropout", "has_residual"):
        col = _column(meta, name)
        if col is not None:
            s = pd.Series(col)
            out[name] = np.where(s.isna(), -1, s.fillna(False).astype(bool).astype(int)).astype(np.int64)
    col = _column(meta, "weight_decay")
    if col is not None:
        x = pd.to_numeric(pd.Series(col), errors="coerce").to_numpy(dtype=np.float64)
        out["zero_weight_decay"] = np.where(np.isfinite(x), (x == 0).astype(int), -1).astype(np.int64)
    return out


def metadata_targets(meta: pd.DataFrame) -> list[PretrainTarget]:
    """The pretraining targets that the training models' metadata `meta` supports (module docs)."""
    specs: list[PretrainTarget] = []
    for name, y in _continuous(meta).items():
        y = y[np.isfinite(y)]
        if len(y) >= 2 and y.std() > 1e-9:
            specs.append(PretrainTarget(name, "continuous", mean=float(y.mean()), std=float(y.std())))
    for name in ("optimizer", "activation", "init", "scheduler", "normalization"):
        col = _column(meta, name)
        if col is None:
            continue
        classes = sorted(
            {str(v) for v in col if v is not None and not (isinstance(v, float) and math.isnan(v))}
        )
        if len(classes) >= 2:
            specs.append(PretrainTarget(name, "categorical", classes=classes))
    for name, y in _binary(meta).items():
        if len(set(y[y >= 0].tolist())) == 2:
            specs.append(PretrainTarget(name, "binary"))
    return specs


def target_tensors(meta: pd.DataFrame, specs: list[PretrainTarget]) -> dict[str, torch.Tensor]:
    """Per target, the values of `meta`'s rows: standardized floats (NaN: missing) or class indices (-1)."""
    cont, binary = _continuous(meta), _binary(meta)
    out: dict[str, torch.Tensor] = {}
    for t in specs:
        if t.kind == "continuous":
            y = cont.get(t.name, np.full(len(meta), np.nan))
            out[t.name] = torch.tensor((y - t.mean) / t.std, dtype=torch.float32)
        elif t.kind == "categorical":
            codes = {c: i for i, c in enumerate(t.classes)}
            col = _column(meta, t.name)
            values = [codes.get(str(v), -1) for v in col] if col is not None else [-1] * len(meta)
            out[t.name] = torch.tensor(values, dtype=torch.long)
        else:
            out[t.name] = torch.tensor(binary.get(t.name, np.full(len(meta), -1)), dtype=torch.long)
    return out


# ------------------------------------------------------------------------------------------ data
class _Prepared:
    """Models parsed once and stacked by signature; batches are index selections of those stacks."""

    def __init__(self, models: list[NeuronModel], edges: bool = True) -> None:
        self.n = len(models)
        self.edges = edges  # per-weight edge channels: only message passing reads them
        self.groups: list[tuple[np.ndarray, list[StackedLayer]]] = [
            (np.asarray(idx), stacked) for idx, stacked in stack_groups(models)
        ]

    def batches(self, batch_size: int, gen: torch.Generator | None) -> list[tuple[int, np.ndarray]]:
        """(group, positions in the group) chunks; shuffled inside groups and in order when `gen` is given."""
        chunks: list[tuple[int, np.ndarray]] = []
        for g, (idx, _) in enumerate(self.groups):
            pos = np.arange(len(idx))
            if gen is not None:
                pos = pos[torch.randperm(len(idx), generator=gen).numpy()]
            chunks += [(g, pos[s : s + batch_size]) for s in range(0, len(pos), batch_size)]
        if gen is not None:
            chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=gen).tolist()]
        return chunks

    def features(
        self,
        g: int,
        pos: np.ndarray,
        noise: float = 0.0,
        gen: torch.Generator | None = None,
        part: np.ndarray | None = None,
    ) -> Any:
        """Features of the models at `pos` of group `g`, with weight noise drawn for all of them; `part`
        (indices into `pos`) keeps only those: under torchrun each rank draws the whole batch's noise, so
        every rank's generator stays in step and the noise equals a single process's."""
        stacked = index_stack(self.groups[g][1], torch.as_tensor(pos))
        if noise > 0:
            stacked = noise_stack(stacked, noise, gen)
        if part is not None:
            stacked = index_stack(stacked, torch.as_tensor(part))
        return featurize_batch(stacked, edges=self.edges)

    def rows(self, g: int, pos: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.groups[g][0][pos])


def _parse(zoo: Zoo, what: str, progress: bool) -> list[NeuronModel]:
    models: list[NeuronModel] = []
    with Progress(f"parsing {what} models", len(zoo), unit="models", enabled=progress) as bar:
        for i, sd in enumerate(zoo.state_dicts()):
            try:
                models.append(neuron_model(sd))
            except InvalidInputError as e:
                raise InvalidInputError(f"{what} model {zoo.metadata().iloc[i]['model_id']}: {e}") from e
            bar.advance()
    return models


# ------------------------------------------------------------------------------------------ training
def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


def _loss(
    model: NeuronEncoder,
    data: _Prepared,
    ys: dict[str, torch.Tensor],
    g: int,
    pos: np.ndarray,
    part: np.ndarray | None = None,
    **kw: Any,
) -> torch.Tensor:
    rows = data.rows(g, pos if part is None else pos[part])
    out = model.predict(model.latent(data.features(g, pos, part=part, **kw)))
    return multitask_loss(model.targets, out, {k: v[rows] for k, v in ys.items()})


def _validation_loss(model: NeuronEncoder, data: _Prepared, ys: dict[str, torch.Tensor]) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for g, pos in data.batches(256, None):
            total += float(_loss(model, data, ys, g, pos)) * len(pos)
            count += len(pos)
    model.train()
    return total / max(count, 1)


def _selection(zoo: Zoo, splits: list[str]) -> Zoo:
    unknown = [s for s in splits if s not in zoo.splits]
    if unknown:
        raise InvalidInputError(f"zoo {zoo.source!s} has no split(s) {unknown}; it has {zoo.splits}")
    rows = np.flatnonzero(zoo.metadata()["split"].isin(splits).to_numpy())
    return zoo.select(rows).final()


@holding_outputs  # the folder's lock is released when it returns
def pretrain_neurons(
    cfg: Any,
    zoo: Zoo,
    output: str | Path,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> Path:
    """Pretrain a v3 encoder on `zoo` with the resolved `PretrainConfig` `cfg` (architecture ``neurons``);
    returns `output`. Resume, overwrite and the callback behave as in `training.pretrain.pretrain`."""
    info = D.init_distributed(str(cfg.device))
    device = resolve_device(cfg.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    output = Path(output)
    check_output(output, ENCODER_OUTPUT, overwrite=not resume)
    fingerprint = zoo.fingerprint()
    state_path = output / STATE_FILE
    saved: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
    if state_path.exists() and resume:
        saved = read_state(state_path)
        meta = saved[1]
        if meta.get("format_version") != STATE_FORMAT_VERSION or meta.get("architecture") != "neurons":
            raise ConfigError(
                f"{output} holds a pretraining run of another kind or version; use another output folder or "
                "--overwrite"
            )
        check_resumable(output, meta, cfg.to_dict(), fingerprint)
        if meta["finished"]:
            return output

    splits = list(cfg.splits)
    if "validation" in splits:
        raise ConfigError(
            "PretrainConfig.splits: the validation split picks the best epoch; do not train on it"
        )
    train_zoo = _selection(zoo, splits)
    if len(train_zoo) < 2:
        raise InvalidInputError(f"zoo {zoo.source!s}: {len(train_zoo)} model(s) in {splits}; need at least 2")
    val_zoo = zoo.split("validation").final() if "validation" in zoo.splits else zoo.select([])
    specs = (
        [PretrainTarget.from_dict(t) for t in saved[1]["targets"]]
        if saved
        else metadata_targets(train_zoo.metadata())
    )
    if not specs:
        raise InvalidInputError(
            f"zoo {zoo.source!s}: no metadata column to pretrain on (supervised pretraining needs one "
            "of test_accuracy, learning_rate, optimizer, activation, ... with two or more distinct values)"
        )
    log.info("supervised pretraining targets: %s", ", ".join(t.name for t in specs))
    edges = int(cfg.message_passing_rounds) > 0
    train = _Prepared(_parse(train_zoo, "train", progress), edges)
    val = _Prepared(_parse(val_zoo, "validation", progress), edges) if len(val_zoo) else None
    y_train = target_tensors(train_zoo.metadata().reset_index(drop=True), specs)
    y_val = target_tensors(val_zoo.metadata().reset_index(drop=True), specs) if val is not None else {}
    enc_cfg = NeuronEncoderConfig(
        d_model=int(cfg.d_model),
        latent_dim=int(cfg.latent_dim),
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        dropout=float(cfg.dropout),
        message_passing_rounds=int(cfg.message_passing_rounds),
        max_layers=int(cfg.max_layers),
    )
    deepest = max(len(stacked) for _, stacked in train.groups)
    if deepest > enc_cfg.max_layers:
        raise ConfigError(
            f"the zoo has networks with {deepest} layers; raise --max_layers (now {cfg.max_layers})"
        )
    bs, epochs = int(cfg.batch_size), int(cfg.epochs)
    steps_per_epoch = len(train.batches(bs, None))
    total_steps = steps_per_epoch * epochs
    warmup = round(float(cfg.warmup_fraction) * total_steps)
    if info.is_main:
        claim_output(output, ENCODER_OUTPUT, overwrite=not resume)  # the input is valid: now write
    D.barrier(info)
    progress = progress and info.is_main
    provenance_base = {
        "zoo_source": str(zoo.source),
        "zoo_fingerprint": fingerprint,
        "zoo_split": "+".join(splits),
        "checkpoints": "final",
        "objective": "supervised multi-task",
        "model_ids": train_zoo.metadata()["model_id"].astype(str).tolist(),
        "model_hashes": [train_zoo.content_hash(i) for i in range(len(train_zoo))],
        "n_models": len(train_zoo),
        "validation_model_ids": val_zoo.metadata()["model_id"].astype(str).tolist(),
        "selection": "lowest validation loss" if val is not None else "lowest training loss (no validation)",
        "pretrain_config": cfg.to_dict(),
        "library_versions": library_versions(),
        "world_size": info.world_size,
    }

    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(int(cfg.seed))
        gen = torch.Generator().manual_seed(int(cfg.seed))
        model = NeuronEncoder(enc_cfg, specs)
        if saved is None:  # zoo-level feature standardization from a fixed sample of the training models
            sample_gen = torch.Generator().manual_seed(int(cfg.seed) + 17)
            fit_batches = []
            for g, (idx, _) in enumerate(train.groups):
                keep = math.ceil(len(idx) * min(1.0, NORM_SAMPLE / train.n))
                pos = torch.randperm(len(idx), generator=sample_gen)[:keep].numpy()
                fit_batches += [train.features(g, pos[s : s + 256]) for s in range(0, len(pos), 256)]
            model.norm.fit(fit_batches)
        model.to(device)
        opt = _optimizer(model, float(cfg.lr), float(cfg.weight_decay))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, total_steps, warmup, float(cfg.min_lr_ratio))
        )
        epoch, step, best, best_epoch, history = 0, 0, math.inf, None, []
        if saved is not None:
            tensors, meta = saved
            restore_training_state(model, opt, sched, gen, tensors, meta, device)
            epoch, step = int(meta["epoch"]), int(meta["step"])
            best = math.inf if meta["best_loss"] is None else float(meta["best_loss"])
            best_epoch, history = meta["best_epoch"], list(meta["history"])

        from tensorboardX import SummaryWriter  # heavy: tensorboardX

        writer: Any = (
            SummaryWriter(str(output / TB_DIR), purge_step=step if saved is not None else None)
            if info.is_main
            else D.NoWriter()
        )
        writer.add_text("config", "```yaml\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False) + "```", step)
        bar = Progress("pretrain", total_steps, unit="steps", enabled=progress, done=step, loss="-")
        logging: Any = log_file(output / LOG_FILE) if info.is_main else contextlib.nullcontext()
        with logging, bar, contextlib.closing(writer):
            while epoch < epochs:
                start = time.perf_counter()
                model.train()
                bar.describe(f"pretrain epoch {epoch + 1}/{epochs}")
                total, count = 0.0, 0
                for g, pos in train.batches(bs, gen):
                    # under torchrun each rank takes a slice of the global batch; its loss is weighted by
                    # its share, and the summed gradients equal the whole batch's (a rank with an empty
                    # slice computes one model at weight 0, to draw the same noise and join the sum)
                    part = np.array_split(np.arange(len(pos)), info.world_size)[info.rank]
                    share = len(part) / len(pos)
                    part = part if len(part) else np.arange(1)
                    loss = _loss(
                        model,
                        train,
                        y_train,
                        g,
                        pos,
                        part if info.enabled else None,
                        noise=float(cfg.noise_sigma),
                        gen=gen,
                    )
                    opt.zero_grad(set_to_none=True)
                    (loss * share).backward()
                    D.sum_gradients(info, model)
                    loss = torch.tensor(D.sum_value(info, float(loss.detach()) * share))
                    if float(cfg.grad_clip) > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), float(cfg.grad_clip))
                    opt.step()
                    lr = opt.param_groups[0]["lr"]
                    sched.step()
                    step += 1
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise ZooprobeError(
                            f"pretraining stopped: the loss became non-finite ({value}) at step {step}, in "
                            f"epoch {epoch + 1} of {epochs}; lower --lr (now {cfg.lr:g}) and start over "
                            "(--overwrite)"
                        )
                    total += value * len(pos)
                    count += len(pos)
                    writer.add_scalar("train/loss", value, step)
                    writer.add_scalar("lr/encoder", lr, step)
                    bar.advance(loss=value)
                epoch += 1
                record: dict[str, Any] = {"epoch": epoch, "step": step, "train_loss": total / max(count, 1)}
                if val is not None:
                    record["val_loss"] = _validation_loss(model, val, y_val)
                    writer.add_scalar("validation/loss", record["val_loss"], step)
                score = record.get("val_loss", record["train_loss"])
                record["seconds"] = time.perf_counter() - start
                history.append(record)
                writer.flush()
                log.info(
                    "pretrain epoch %d/%d: train loss %.4f%s, %.1f s",
                    epoch,
                    epochs,
                    record["train_loss"],
                    f", validation loss {record['val_loss']:.4f}" if "val_loss" in record else "",
                    record["seconds"],
                )
                finished = epoch >= epochs
                provenance = {
                    **provenance_base,
                    "epochs_trained": epoch,
                    "finished": finished,
                    "history": history,
                }
                improved = score < best
                if improved:
                    best, best_epoch = score, epoch
                if info.is_main:  # rank 0 writes; the others wait for it
                    save_neuron_encoder(
                        model,
                        {**provenance, "checkpoint": "last", "best_epoch": best_epoch},
                        output / LAST_DIR,
                    )
                    if improved or finished:
                        # the best encoder; on the last epoch rewritten so its provenance says finished
                        if improved:
                            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                        else:
                            best_state = _best_state(output)
                        keep = {k: v.detach().clone() for k, v in model.state_dict().items()}
                        model.load_state_dict(best_state)
                        save_neuron_encoder(
                            model,
                            {**provenance, "checkpoint": "best", "best_epoch": best_epoch, "best_loss": best},
                            output,
                        )
                        model.load_state_dict(keep)
                    tensors, opt_meta = pack_training_state(model, opt, gen, device)
                    save_state(
                        state_path,
                        tensors,
                        {
                            "format_version": STATE_FORMAT_VERSION,
                            "architecture": "neurons",
                            "config": cfg.to_dict(),
                            "zoo_source": str(zoo.source),
                            "zoo_fingerprint": fingerprint,
                            "targets": [t.to_dict() for t in specs],
                            "epoch": epoch,
                            "step": step,
                            "best_loss": None if math.isinf(best) else best,
                            "best_epoch": best_epoch,
                            "history": history,
                            "optimizer": opt_meta,
                            "scheduler": sched.state_dict(),
                            "finished": finished,
                        },
                    )
                D.barrier(info)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
    return output


def _best_state(output: Path) -> dict[str, torch.Tensor]:
    return load_safetensors(output / WEIGHTS_FILE)
