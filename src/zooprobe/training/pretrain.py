"""Self-supervised pretraining of the weight-space encoder on a zoo (SANE recipe, field notes).

What it trains on: the final checkpoints of the zoo's **train** split only. The tokenizer's zoo-level
normalization is fit on exactly those models; the validation split's final checkpoints give the
validation loss that picks the best checkpoint (they are never trained on); the test split is not read.
The model ids used are recorded in the saved provenance so head training can refuse an overlapping
evaluation split.

Loss per batch of B models, two augmented views each (one forward over the 2B sequences)::

    (1 - gamma) * [MSE(reconstruction, clean view)   on masked tokens' real entries
                   + summary_loss_weight * MSE(summary_out(summary latent), summary)   on hidden summaries]
    + gamma * NT-Xent(projection(pooled view 1), projection(pooled view 2))   temperature 0.1

Summary tokens (``summary_tokens``, on in every preset; `zooprobe.tokens.summary`): one per layer, the
zoo-level standardized statistics of the layer's raw weights. The summarizer is fit on the train split
(like the tokenizer's normalization) and saved with the encoder. In each view a random
``summary_mask_ratio`` of the summary tokens have their values hidden from the encoder and are
reconstructed from their own latent, so the encoder has to derive layer statistics from weight tokens.

A view is: a function-preserving neuron permutation (`augment.permute_neurons`, zooprobe subject models
only; other state dicts are used unpermuted), tokenized and normalized (`io.prepare_tokens`), a random
crop of at most ``window`` tokens (independent per view), multiplicative noise and token erasing on the
input (`augment.noise_tokens`, `augment.erase_tokens`), and a random ``mask_ratio`` of tokens whose
values are hidden from the encoder (their mask bits are cleared, but they stay in the attention mask so
they receive a latent and are reconstructed). The reconstruction target is the clean permuted view.
``reconstruction="per_model"`` divides each view's masked MSE by the mean square of its own values
(a zoo with a few models at 10x the usual weight scale otherwise has its loss dominated by them); the
default ``"mse"`` is the plain MSE over all masked real entries of the batch. On the small zoo neither
variant changed the ridge-probe R² beyond noise (0.52 vs 0.56 on 75 held-out models), because masked
weight values are nearly unpredictable from their context (relative reconstruction error ~0.99): most of
the representation's signal comes from the contrastive term.

Long sequences are **cropped** during pretraining (a random window of ``window`` tokens per view and
epoch) and **windowed** when encoding (`io.LoadedEncoder.encode`: non-overlapping windows, embeddings
averaged by token count); the crop length equals the window length, so both see sequences of the same
size.

Batches are **bucketed by length**: each epoch the models are shuffled, cut into spans of
``8 * batch_size``, sorted by (cropped) length inside a span, cut into batches, and the batches shuffled
(the field notes measured that padding everything to the longest model wasted most of the compute). The
number of batches per epoch is always ``ceil(N / batch_size)``, so the schedule is known up front.

Distributed (``torchrun``): gloo on CPU, nccl on GPU (one device per local rank). Every rank draws the
same batch order and the whole batch's views from the shared generator (so the augmentations equal a
single process's), then computes an equal slice of the models: the reconstruction terms are divided by
the whole batch's counts, the contrastive term sees every rank's projections (gathered; each rank
backpropagates through its own), and the gradients are summed over the ranks, so N processes train the
model one process would (up to float summation order). Only rank 0 writes (encoder folders, training
state, TensorBoard, ``train.log``); the state holds nothing per rank, so a run resumes under another
number of processes.

Optimization: AdamW (no weight decay on biases and norm parameters), linear warmup over
``warmup_fraction`` of the steps then cosine decay to ``min_lr_ratio * lr``, gradient-norm clipping,
bf16 autocast on CUDA when ``mixed_precision`` (never on CPU).

Output folder::

    OUTPUT/config.json, model.safetensors, README.md   best encoder (lowest validation loss)
    OUTPUT/last/...                                    encoder after the last finished epoch
    OUTPUT/training_state.safetensors                  everything needed to resume (see below)
    OUTPUT/tensorboard/                                TensorBoard events: train/*, validation/*, lr/*,
                                                       the config as text
    OUTPUT/train.log                                   the run's log, written as it goes

``load_encoder(OUTPUT)`` loads the best encoder.

Resume: after every epoch the training state (encoder and projection head weights, AdamW state, LR
schedule, the data generator's and torch's RNG states, epoch, step, best loss, per-epoch history, config,
zoo fingerprint) is written atomically, as safetensors with a JSON header (never pickled). Running the
same call again continues after the last finished epoch and ends bit-identical to an uninterrupted run;
a different configuration or zoo is refused. Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from zooprobe.core.device import resolve_device
from zooprobe.core.environment import library_versions
from zooprobe.core.files import atomic_write_json, atomic_write_text, read_json
from zooprobe.core.outputs import check_output, claim_output, holding_outputs
from zooprobe.core.progress import Progress, log, log_file
from zooprobe.core.tensorfile import read_state, save_state
from zooprobe.encoder.augment import erase_tokens, noise_tokens, permutation_plan, permute_neurons
from zooprobe.encoder.config import EncoderConfig
from zooprobe.encoder.encoder_loader import (
    CARD_FILE,
    CONFIG_FILE,
    ENCODER_OUTPUT,
    Preprocessing,
    model_card,
    prepare_tokens,
    save_encoder,
)
from zooprobe.encoder.model import WeightEncoder
from zooprobe.errors import ConfigError, InvalidInputError, ZooprobeError
from zooprobe.tokens import (
    SUMMARY_DIM,
    LayerSummarizer,
    TokenizerConfig,
    WeightTokenizer,
    collate_summaries,
    raw_layer_summaries,
)
from zooprobe.training import distributed as D
from zooprobe.training.neuron_pretrain import pretrain_neurons
from zooprobe.training.pretrain_config import NEURON_PRESETS, PRESETS, PretrainConfig
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
_BUCKET_SPAN = 8  # batches per length-sorting span


# ------------------------------------------------------------------------------------------ data
@dataclass
class _Item:
    model_id: str
    state_dict: dict[str, torch.Tensor]
    num_tokens: int
    plan: Any  # augment.PermutationPlan | None
    summaries: torch.Tensor | None = None  # standardized layer summaries (permutations leave them unchanged)


def _float32(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.dtype == torch.float64 else v for k, v in sd.items()}


def _fit_summarizer(zoo: Any, tokenizer: WeightTokenizer) -> LayerSummarizer:
    """Zoo-level statistics of the raw layer summaries of `zoo`'s models (its train split's final ones)."""

    def raw() -> Any:
        for sd in zoo.state_dicts():
            sd = _float32(sd)
            layout = tokenizer.tokenize(sd).layout
            yield raw_layer_summaries(sd, layout), [layer["kind"] for layer in layout["layers"]]

    return LayerSummarizer().fit(raw())


def _load_items(
    zoo: Any,
    tokenizer: WeightTokenizer,
    cfg: EncoderConfig,
    what: str,
    summarizer: LayerSummarizer | None = None,
) -> list[_Item]:
    meta = zoo.metadata()
    items = []
    for i in range(len(zoo)):
        sd = _float32(zoo.state_dict(i))
        try:
            tm = prepare_tokens(tokenizer, sd, cfg, summarizer=summarizer)
        except InvalidInputError as e:
            raise type(e)(f"{what} model {meta['model_id'].iloc[i]!r}: {e}") from e
        if tm.num_tokens == 0:
            raise InvalidInputError(f"{what} model {meta['model_id'].iloc[i]!r} has no weights to tokenize")
        items.append(
            _Item(str(meta["model_id"].iloc[i]), sd, tm.num_tokens, permutation_plan(sd), tm.summaries)
        )
    return items


def length_buckets(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Batches of indices bucketed by length (see the module docs); always ``ceil(N / batch_size)``."""
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    span = batch_size * _BUCKET_SPAN
    batches: list[list[int]] = []
    for s in range(0, len(perm), span):
        chunk = sorted(perm[s : s + span], key=lambda i: lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


class _Views:
    """Builds the padded two-view batch of a list of items (see the module docs)."""

    def __init__(self, cfg: PretrainConfig, tokenizer: WeightTokenizer, enc_cfg: EncoderConfig) -> None:
        self.cfg, self.tokenizer, self.enc_cfg = cfg, tokenizer, enc_cfg
        # summaries are precomputed per item (neuron permutations leave them unchanged)
        self.token_cfg = dataclasses.replace(enc_cfg, summary_tokens=False)

    def _view(self, item: _Item, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        cfg = self.cfg
        sd = permute_neurons(item.state_dict, gen, plan=item.plan) if cfg.permute else item.state_dict
        tm = prepare_tokens(self.tokenizer, sd, self.token_cfg)
        n, window = tm.num_tokens, int(cfg.window)  # type: ignore[arg-type]
        start = int(torch.randint(0, n - window + 1, (1,), generator=gen)) if n > window else 0
        stop = min(n, start + window)
        target, mask, positions = tm.tokens[start:stop], tm.mask[start:stop], tm.positions[start:stop].clone()
        positions[:, 0] -= start  # global index counted from the crop's start, as when encoding windows
        inp = noise_tokens(target, mask, float(cfg.noise_sigma), gen)  # type: ignore[arg-type]
        inp = erase_tokens(inp, mask, float(cfg.erase_ratio), gen)  # type: ignore[arg-type]
        hidden = torch.rand(stop - start, generator=gen) < float(cfg.mask_ratio)  # type: ignore[arg-type]
        if not bool(hidden.any()):
            hidden[int(torch.randint(0, stop - start, (1,), generator=gen))] = True
        return inp, mask & ~hidden[:, None], target, mask, positions, hidden

    def batch(self, items: list[_Item], gen: torch.Generator) -> dict[str, torch.Tensor]:
        views = [self._view(item, gen) for item in items] + [self._view(item, gen) for item in items]
        summary_batch: dict[str, torch.Tensor] = {}
        if self.enc_cfg.summary_tokens:
            summary_batch = collate_summaries([it.summaries for it in items] * 2)  # type: ignore[misc]
            real = summary_batch["summary_attention"]
            ratio = float(self.cfg.summary_mask_ratio)  # type: ignore[arg-type]
            hidden = (torch.rand(real.shape, generator=gen) < ratio) & real
            summary_batch["summary_keep"] = real & ~hidden
            summary_batch["summary_hidden"] = hidden
        longest = max(v[0].shape[0] for v in views)
        b, size = len(views), self.enc_cfg.token_size
        out = {
            "inputs": torch.zeros(b, longest, size),
            "input_mask": torch.zeros(b, longest, size, dtype=torch.bool),
            "target": torch.zeros(b, longest, size),
            "real": torch.zeros(b, longest, size, dtype=torch.bool),
            "positions": torch.zeros(b, longest, 3, dtype=torch.int64),
            "hidden": torch.zeros(b, longest, dtype=torch.bool),
        }
        for i, view in enumerate(views):
            n = view[0].shape[0]
            for key, value in zip(out, view, strict=True):
                out[key][i, :n] = value
        out["attention_mask"] = out["real"].any(dim=-1)
        out.update(summary_batch)
        return out


# ------------------------------------------------------------------------------------------ model + loss
class PretrainModel(nn.Module):
    """The encoder plus a projection head for the contrastive loss (the head is not exported)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.encoder = WeightEncoder(config)
        d = config.latent_dim
        self.projection = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR) loss: each view's positive is the other view of the same model."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def _losses(
    model: PretrainModel,
    batch: dict[str, torch.Tensor],
    cfg: PretrainConfig,
    device: torch.device,
    info: D.DistInfo | None = None,
    part: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss to backpropagate, then detached: its value, token reconstruction MSE, NT-Xent, summary
    reconstruction MSE) of one batch of B models (2B views).

    Under torchrun every rank holds the whole batch and computes the models `part` of it (indices into
    the B; empty on a rank that got none). The reconstruction terms are divided by the whole batch's
    counts, so the ranks' shares add up to the single process's; the contrastive term is computed over the
    projections of every rank (`distributed.all_gather_rows`), each rank backpropagating through its own.
    The summed gradients are then the whole batch's. The value and both MSEs returned are this rank's
    shares (they add up over the ranks; rank 0's value includes the contrastive term); the NT-Xent is the
    whole batch's on every rank.
    """
    info = info or D.DistInfo()
    n_models = batch["inputs"].shape[0] // 2
    weight = 1.0
    if part is not None:
        if len(part) == 0:  # no model for this rank: compute one at weight 0 and contribute no projection
            part, weight = torch.zeros(1, dtype=torch.long), 0.0
        rows = torch.cat([part, part + n_models])
        b = {k: v[rows].to(device) for k, v in batch.items()}
    else:
        b = {k: v.to(device) for k, v in batch.items()}
    # denominators of the whole batch (the masks are not learned)
    masked = float((batch["real"] & batch["hidden"].unsqueeze(-1)).sum())
    autocast = device.type == "cuda" and bool(cfg.mixed_precision)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
        extra = {
            k: b[k] for k in ("summaries", "summary_layers", "summary_attention", "summary_keep") if k in b
        }
        out = model.encoder(b["inputs"], b["input_mask"], b["positions"], b["attention_mask"], **extra)
        assert out.latent_tokens is not None
        recon = model.encoder.decode(out.latent_tokens, b["positions"], b["attention_mask"])
        z = model.projection(out.pooled)
    sel = (b["real"] & b["hidden"].unsqueeze(-1)).float()
    sq = ((recon.float() - b["target"]) ** 2) * sel
    if cfg.reconstruction == "per_model":
        # each view's masked MSE relative to the mean square of its own real target values: a few models
        # with weights far larger than the zoo's (normalized mean square 20 vs a median of 0.5) would
        # otherwise dominate the loss; the encoder's inputs keep their scale.
        real = b["real"].float()
        scale = (b["target"] ** 2 * real).sum(dim=(1, 2)) / real.sum(dim=(1, 2)).clamp_min(1.0)
        per_view = sq.sum(dim=(1, 2)) / sel.sum(dim=(1, 2)).clamp_min(1.0)
        mse = (per_view / scale.clamp_min(1e-3)).sum() / (2 * n_models)
    else:
        mse = sq.sum() / max(masked, 1.0)
    summary_mse = torch.zeros((), device=mse.device)
    if out.summary_latents is not None and model.encoder.summary_out is not None:
        # hidden summaries are reconstructed from their own latent (the encoder sees the layer's weight
        # tokens and the other layers' summaries): it has to compute the statistics itself
        pred = model.encoder.summary_out(out.summary_latents).float()
        ssel = b["summary_hidden"].unsqueeze(-1).float()
        hidden_summaries = float(batch["summary_hidden"].sum()) * pred.shape[-1]
        summary_mse = (((pred - b["summaries"]) ** 2) * ssel).sum() / max(hidden_summaries, 1.0)
    if info.enabled:
        # every rank's projections, in rank order (the parts are consecutive): view 1 of all, then view 2
        chunks = D.all_gather_rows(info, z if weight else z[:0])
        z1 = torch.cat([c[: c.shape[0] // 2] for c in chunks])
        z2 = torch.cat([c[c.shape[0] // 2 :] for c in chunks])
    else:
        z1, z2 = z[: z.shape[0] // 2], z[z.shape[0] // 2 :]
    contrastive = nt_xent(z1, z2, float(cfg.temperature))  # type: ignore[arg-type]
    gamma = float(cfg.gamma)  # type: ignore[arg-type]
    recon_loss = weight * (mse + float(cfg.summary_loss_weight) * summary_mse)  # type: ignore[arg-type]
    loss = (1 - gamma) * recon_loss + gamma * contrastive
    value = loss if info.is_main else (1 - gamma) * recon_loss
    return (
        loss,
        value.detach(),
        weight * mse.detach(),
        contrastive.detach(),
        weight * summary_mse.detach(),
    )


# ------------------------------------------------------------------------------------------ state
def _optimizer(model: nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "norm" not in name else no_decay).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": float(cfg.weight_decay)},  # type: ignore[arg-type]
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=float(cfg.lr),  # type: ignore[arg-type]
    )


def _read_pretraining_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, meta = read_state(path)
    if meta.get("format_version") != STATE_FORMAT_VERSION:
        raise InvalidInputError(f"{path}: training state format {meta.get('format_version')!r} not supported")
    return tensors, meta


def _mark_finished(folder: Path) -> None:
    """Record in `folder`'s config.json (and card) that its pretraining run reached the last epoch.

    The best encoder is saved when the validation loss improves, possibly epochs before the end; until the
    run ends its provenance says ``finished: false`` (loading it warns), and this flips it.
    """
    path = folder / CONFIG_FILE
    if not path.is_file():
        return
    config = read_json(path, "encoder config")
    if config.get("provenance", {}).get("finished") is False:
        config["provenance"]["finished"] = True
        atomic_write_json(path, config)
        atomic_write_text(folder / CARD_FILE, model_card(config))


# ------------------------------------------------------------------------------------------ training
EpochCallback = Callable[[int, dict[str, Any]], None]


def _validation_batches(
    items: list[_Item], views: _Views, cfg: PretrainConfig
) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """Fixed validation batches (augmentations drawn from a generator seeded from the config).

    Built once per run: the validation loss of every epoch is measured on exactly the same views.
    """
    gen = torch.Generator().manual_seed(int(cfg.seed) + 1_000_003)
    bs = int(cfg.batch_size)  # type: ignore[arg-type]
    order = sorted(range(len(items)), key=lambda i: items[i].num_tokens)
    batches = []
    for s in range(0, len(order), bs):
        chosen = [items[i] for i in order[s : s + bs]]
        batches.append((len(chosen), views.batch(chosen, gen)))
    return batches


def _evaluate(
    model: PretrainModel,
    batches: list[tuple[int, dict[str, torch.Tensor]]],
    cfg: PretrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """Mean loss over the fixed validation batches, in eval mode without gradients."""
    totals = {"loss": 0.0, "reconstruction": 0.0, "contrastive": 0.0, "summary_reconstruction": 0.0}
    count = sum(n for n, _ in batches)
    model.eval()
    with torch.no_grad():
        for n, batch in batches:
            losses = _losses(model, batch, cfg, device)[1:]
            for key, value in zip(totals, losses, strict=True):
                totals[key] += float(value) * n
    model.train()
    return {k: v / count for k, v in totals.items()}


@holding_outputs  # the folder's lock is released when it returns
def pretrain(
    config: PretrainConfig | None,
    zoo: Zoo,
    output: str | Path,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> Path:
    """Pretrain an encoder on the train split of `zoo`; returns `output` (load it with `load_encoder`).

    `zooprobe.api.pretrain_encoder` takes any zoo source (folder, Hub id, ``default``) and calls this. With
    ``resume=True`` (default) a run found in `output` continues after its last finished epoch (a finished
    run returns at once); its configuration and zoo must match. With ``resume=False`` the files a previous
    run wrote into `output` are deleted first (only those). `on_epoch_end(epoch, record)` is called after
    each epoch's checkpoint is written (1-based epoch).
    """
    cfg = (config or PretrainConfig()).resolved()
    if cfg.architecture == "neurons":
        return pretrain_neurons(cfg, zoo, output, resume=resume, progress=progress, on_epoch_end=on_epoch_end)
    enc_cfg = cfg.encoder_config()
    info = D.init_distributed(str(cfg.device))
    device = resolve_device(cfg.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    output = Path(output)
    check_output(output, ENCODER_OUTPUT, overwrite=not resume)  # before anything is read or written
    zoo_source = zoo.source
    fingerprint = zoo.fingerprint()
    state_path = output / STATE_FILE
    saved: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
    if state_path.exists() and resume:
        saved = _read_pretraining_state(state_path)
        meta = saved[1]
        check_resumable(output, meta, cfg.to_dict(), fingerprint)
        if meta["finished"]:
            if info.is_main:
                _mark_finished(output)  # a kill between the last state and this mark leaves it undone
            D.barrier(info)
            return output

    if cfg.summary_dim != SUMMARY_DIM:  # the torch-free config cannot import tokens.SUMMARY_DIM
        raise ConfigError(f"PretrainConfig: summary_dim must be {SUMMARY_DIM}, got {cfg.summary_dim}")
    if list(cfg.splits) != ["train"]:
        raise ConfigError("PretrainConfig.splits: the token architecture pretrains on the train split only")
    train_zoo = zoo.split("train").final()
    if len(train_zoo) == 0:
        raise InvalidInputError(f"zoo {zoo_source!s}: the train split is empty; nothing to pretrain on")
    val_zoo = zoo.split("validation").final()
    tokenizer = WeightTokenizer(TokenizerConfig(token_size=enc_cfg.token_size))
    summarizer: LayerSummarizer | None = None
    if saved is not None:
        tokenizer = WeightTokenizer.from_dict(saved[1]["tokenizer"])
        if saved[1].get("summaries") is not None:
            summarizer = LayerSummarizer.from_dict(saved[1]["summaries"])
    else:
        tokenizer.fit_normalization(_float32(sd) for sd in train_zoo.state_dicts())
        if enc_cfg.summary_tokens:
            summarizer = _fit_summarizer(train_zoo, tokenizer)
    train_items = _load_items(train_zoo, tokenizer, enc_cfg, "train", summarizer)
    val_items = _load_items(val_zoo, tokenizer, enc_cfg, "validation", summarizer)
    views = _Views(cfg, tokenizer, enc_cfg)
    val_batches = _validation_batches(val_items, views, cfg) if val_items else []
    preprocessing = Preprocessing(window=int(cfg.window))  # type: ignore[arg-type]
    bs = int(cfg.batch_size)  # type: ignore[arg-type]
    steps_per_epoch = math.ceil(len(train_items) / bs)
    total_steps = steps_per_epoch * int(cfg.epochs)  # type: ignore[arg-type]
    warmup = round(float(cfg.warmup_fraction) * total_steps)  # type: ignore[arg-type]
    lengths = [min(it.num_tokens, int(cfg.window)) for it in train_items]  # type: ignore[arg-type]
    if info.is_main:
        claim_output(output, ENCODER_OUTPUT, overwrite=not resume)  # the input is valid: now write
    D.barrier(info)
    progress = progress and info.is_main
    provenance_base = {
        "zoo_source": str(zoo_source),
        "zoo_fingerprint": fingerprint,
        "zoo_split": "train",
        "checkpoints": "final",
        "model_ids": [it.model_id for it in train_items],
        "model_hashes": [train_zoo.content_hash(i) for i in range(len(train_zoo))],
        "n_models": len(train_items),
        "validation_model_ids": [it.model_id for it in val_items],
        "selection": "lowest validation loss" if val_items else "lowest training loss (no validation split)",
        "pretrain_config": cfg.to_dict(),
        "library_versions": library_versions(),
        "world_size": info.world_size,
    }

    # The caller's RNG states are restored afterwards; inside, every random draw is seeded or resumed.
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        gen = torch.Generator()
        torch.manual_seed(int(cfg.seed))
        model = PretrainModel(enc_cfg)  # initialized from the seed
        model.to(device)
        opt = _optimizer(model, cfg)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda step: warmup_cosine(step, total_steps, warmup, float(cfg.min_lr_ratio)),  # type: ignore[arg-type]
        )
        epoch, step, best, best_epoch, history = 0, 0, math.inf, None, []
        if saved is not None:
            tensors, meta = saved
            restore_training_state(model, opt, sched, gen, tensors, meta, device)
            epoch, step = int(meta["epoch"]), int(meta["step"])
            best = math.inf if meta["best_loss"] is None else float(meta["best_loss"])
            best_epoch, history = meta["best_epoch"], list(meta["history"])
        else:
            gen.manual_seed(int(cfg.seed))

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
            while epoch < int(cfg.epochs):  # type: ignore[arg-type]
                start = time.perf_counter()
                model.train()
                sums = {"loss": 0.0, "reconstruction": 0.0, "contrastive": 0.0, "summary_reconstruction": 0.0}
                label = f"pretrain epoch {epoch + 1}/{cfg.epochs}"
                bar.describe(label)
                for batch_idx in length_buckets(lengths, bs, gen):
                    # every rank draws the whole batch's views (so the generator stays in step and the
                    # augmentations equal a single process's) and computes its slice of the models
                    batch = views.batch([train_items[i] for i in batch_idx], gen)
                    part = torch.arange(len(batch_idx)).tensor_split(info.world_size)[info.rank]
                    loss, value, mse, con, smse = _losses(
                        model, batch, cfg, device, info, part if info.enabled else None
                    )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    D.sum_gradients(info, model)
                    if float(cfg.grad_clip) > 0:  # type: ignore[arg-type]
                        nn.utils.clip_grad_norm_(model.parameters(), float(cfg.grad_clip))  # type: ignore[arg-type]
                    opt.step()
                    lr = opt.param_groups[0]["lr"]
                    sched.step()
                    step += 1
                    summed = D.sum_values(info, [float(value), float(mse), float(smse)])
                    values = (summed[0], summed[1], float(con), summed[2])
                    if not math.isfinite(values[0]):
                        kept = (
                            f"the state after epoch {epoch} is kept in {output} (best encoder included)"
                            if epoch
                            else "no epoch finished, so nothing was saved"
                        )
                        raise ZooprobeError(
                            f"pretraining stopped: the loss became non-finite ({values[0]}) at step {step}, "
                            f"in epoch {epoch + 1} of {cfg.epochs}; {kept}. Lower --lr (now {cfg.lr:g}) or "
                            "--grad_clip, then start over (--resume false)"
                        )
                    for key, value in zip(sums, values, strict=True):
                        sums[key] += value * len(batch_idx)
                        writer.add_scalar(f"train/{key}", value, step)
                    writer.add_scalar("lr/encoder", lr, step)
                    bar.advance(loss=values[0])
                epoch += 1
                record: dict[str, Any] = {"epoch": epoch, "step": step}
                record.update({f"train_{k}": v / len(train_items) for k, v in sums.items()})
                if val_items:
                    record.update(
                        {f"val_{k}": v for k, v in _evaluate(model, val_batches, cfg, device).items()}
                    )
                    score = record["val_loss"]
                else:
                    score = record["train_loss"]
                record["seconds"] = time.perf_counter() - start
                history.append(record)
                for key, value in record.items():
                    if key.startswith("val_"):
                        writer.add_scalar(f"validation/{key.removeprefix('val_')}", value, step)
                writer.flush()
                log.info(
                    "pretrain epoch %d/%d: train loss %.4f%s, %.1f s",
                    epoch,
                    cfg.epochs,
                    record["train_loss"],
                    f", validation loss {record['val_loss']:.4f}" if "val_loss" in record else "",
                    record["seconds"],
                )
                finished = epoch >= int(cfg.epochs)  # type: ignore[arg-type]
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
                    save_encoder(
                        model.encoder,
                        tokenizer,
                        {**provenance, "checkpoint": "last", "best_epoch": best_epoch, "best_loss": best},
                        output / LAST_DIR,
                        preprocessing=preprocessing,
                        summarizer=summarizer,
                    )
                    if improved:
                        save_encoder(
                            model.encoder,
                            tokenizer,
                            {**provenance, "checkpoint": "best", "best_epoch": epoch, "best_loss": score},
                            output,
                            preprocessing=preprocessing,
                            summarizer=summarizer,
                        )
                    tensors, opt_meta = pack_training_state(model, opt, gen, device)
                    save_state(
                        state_path,
                        tensors,
                        {
                            "format_version": STATE_FORMAT_VERSION,
                            "config": cfg.to_dict(),
                            "zoo_source": str(zoo_source),
                            "zoo_fingerprint": fingerprint,
                            "tokenizer": tokenizer.to_dict(),
                            "summaries": None if summarizer is None else summarizer.to_dict(),
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
                    if finished:
                        _mark_finished(output)
                D.barrier(info)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
    return output


def training_history(output: str | Path) -> list[dict[str, Any]]:
    """Per-epoch records (losses, lr step, seconds) of the pretraining run in `output`."""
    path = Path(output) / STATE_FILE
    if not path.exists():
        raise InvalidInputError(f"{output}: no {STATE_FILE}; not a pretraining output folder")
    return list(_read_pretraining_state(path)[1]["history"])


__all__ = [
    "NEURON_PRESETS",
    "PRESETS",
    "PretrainConfig",
    "PretrainModel",
    "length_buckets",
    "nt_xent",
    "pretrain",
    "training_history",
]
