"""The ``tokens`` objective: self-supervised pretraining of the v2 token encoder (SANE recipe, field notes).

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

Distributed (``torchrun``): every rank draws the same batch order and the whole batch's views from the
shared generator (so the augmentations equal a single process's), then computes an equal slice of the
models: the reconstruction terms are divided by the whole batch's counts, the contrastive term sees every
rank's projections (gathered; each rank backpropagates through its own), and `run_loop` sums the
gradients, so N processes train the model one process would (up to float summation order).

Optimization, checkpoints, resume, TensorBoard and logs: `zooprobe.training.loop` (bf16 autocast on CUDA
when ``mixed_precision``, never on CPU, is this objective's).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zooprobe.encoder.augment import erase_tokens, noise_tokens, permutation_plan, permute_neurons
from zooprobe.encoder.config import EncoderConfig
from zooprobe.encoder.encoder_loader import save_encoder
from zooprobe.encoder.model import WeightEncoder
from zooprobe.encoder.token_inputs import Preprocessing, prepare_tokens
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.tokens import (
    SUMMARY_DIM,
    LayerSummarizer,
    TokenizerConfig,
    WeightTokenizer,
    collate_summaries,
    raw_layer_summaries,
)
from zooprobe.training import distributed as D
from zooprobe.training.objectives.base import Objective, Step, register_objective
from zooprobe.training.objectives.losses import nt_xent
from zooprobe.training.pretrain_config import PretrainConfig

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
        n, window = tm.num_tokens, int(cfg.window)
        start = int(torch.randint(0, n - window + 1, (1,), generator=gen)) if n > window else 0
        stop = min(n, start + window)
        target, mask, positions = tm.tokens[start:stop], tm.mask[start:stop], tm.positions[start:stop].clone()
        positions[:, 0] -= start  # global index counted from the crop's start, as when encoding windows
        inp = noise_tokens(target, mask, float(cfg.noise_sigma), gen)
        inp = erase_tokens(inp, mask, float(cfg.erase_ratio), gen)
        hidden = torch.rand(stop - start, generator=gen) < float(cfg.mask_ratio)
        if not bool(hidden.any()):
            hidden[int(torch.randint(0, stop - start, (1,), generator=gen))] = True
        return inp, mask & ~hidden[:, None], target, mask, positions, hidden

    def batch(self, items: list[_Item], gen: torch.Generator) -> dict[str, torch.Tensor]:
        views = [self._view(item, gen) for item in items] + [self._view(item, gen) for item in items]
        summary_batch: dict[str, torch.Tensor] = {}
        if self.enc_cfg.summary_tokens:
            summary_batch = collate_summaries([it.summaries for it in items] * 2)  # type: ignore[misc]
            real = summary_batch["summary_attention"]
            ratio = float(self.cfg.summary_mask_ratio)
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
    mse = _reconstruction_mse(recon, b, cfg, masked, n_models)
    summary_mse = _summary_mse(model, out, b, batch, mse.device)
    z1, z2 = _views_of_all_ranks(info, z, weight)
    contrastive = nt_xent(z1, z2, float(cfg.temperature))
    gamma = float(cfg.gamma)
    recon_loss = weight * (mse + float(cfg.summary_loss_weight) * summary_mse)
    loss = (1 - gamma) * recon_loss + gamma * contrastive
    value = loss if info.is_main else (1 - gamma) * recon_loss
    return (
        loss,
        value.detach(),
        weight * mse.detach(),
        contrastive.detach(),
        weight * summary_mse.detach(),
    )


def _reconstruction_mse(
    recon: torch.Tensor, b: dict[str, torch.Tensor], cfg: PretrainConfig, masked: float, n_models: int
) -> torch.Tensor:
    """The masked token reconstruction MSE of this rank's views (`masked`: the whole batch's count)."""
    sel = (b["real"] & b["hidden"].unsqueeze(-1)).float()
    sq = ((recon.float() - b["target"]) ** 2) * sel
    if cfg.reconstruction == "per_model":
        # each view's masked MSE relative to the mean square of its own real target values: a few models
        # with weights far larger than the zoo's (normalized mean square 20 vs a median of 0.5) would
        # otherwise dominate the loss; the encoder's inputs keep their scale.
        real = b["real"].float()
        scale = (b["target"] ** 2 * real).sum(dim=(1, 2)) / real.sum(dim=(1, 2)).clamp_min(1.0)
        per_view = sq.sum(dim=(1, 2)) / sel.sum(dim=(1, 2)).clamp_min(1.0)
        return (per_view / scale.clamp_min(1e-3)).sum() / (2 * n_models)
    return sq.sum() / max(masked, 1.0)


def _summary_mse(
    model: PretrainModel,
    out: Any,
    b: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    device: torch.device,
) -> torch.Tensor:
    """The reconstruction MSE of the hidden summary tokens (0 without summary tokens)."""
    if out.summary_latents is None or model.encoder.summary_out is None:
        return torch.zeros((), device=device)
    # hidden summaries are reconstructed from their own latent (the encoder sees the layer's weight
    # tokens and the other layers' summaries): it has to compute the statistics itself
    pred = model.encoder.summary_out(out.summary_latents).float()
    ssel = b["summary_hidden"].unsqueeze(-1).float()
    hidden_summaries = float(batch["summary_hidden"].sum()) * pred.shape[-1]
    return (((pred - b["summaries"]) ** 2) * ssel).sum() / max(hidden_summaries, 1.0)


def _views_of_all_ranks(
    info: D.DistInfo, z: torch.Tensor, weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The projections of view 1 and of view 2 of every model of the batch: under torchrun every rank's,
    in rank order (the parts are consecutive); a rank with weight 0 contributes none."""
    if not info.enabled:
        return z[: z.shape[0] // 2], z[z.shape[0] // 2 :]
    chunks = D.all_gather_rows(info, z if weight else z[:0])
    z1 = torch.cat([c[: c.shape[0] // 2] for c in chunks])
    z2 = torch.cat([c[c.shape[0] // 2 :] for c in chunks])
    return z1, z2


def _validation_batches(
    items: list[_Item], views: _Views, cfg: PretrainConfig
) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """Fixed validation batches (augmentations drawn from a generator seeded from the config).

    Built once per run: the validation loss of every epoch is measured on exactly the same views.
    """
    gen = torch.Generator().manual_seed(int(cfg.seed) + 1_000_003)
    bs = int(cfg.batch_size)
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


# ------------------------------------------------------------------------------------------ the objective
@register_objective("tokens")
class TokenObjective(Objective):
    """Masked reconstruction + contrastive views of the v2 token encoder (see the module docs)."""

    def prepare(self, zoo: Any, saved: dict[str, Any] | None, progress: bool) -> None:
        cfg = self.cfg
        if cfg.summary_dim != SUMMARY_DIM:  # the torch-free config cannot import tokens.SUMMARY_DIM
            raise ConfigError(f"PretrainConfig: summary_dim must be {SUMMARY_DIM}, got {cfg.summary_dim}")
        if list(cfg.splits) != ["train"]:
            raise ConfigError(
                "PretrainConfig.splits: the token architecture pretrains on the train split only"
            )
        self.enc_cfg = enc_cfg = cfg.encoder_config()
        train_zoo = zoo.split("train").final()
        if len(train_zoo) == 0:
            raise InvalidInputError(f"zoo {zoo.source!s}: the train split is empty; nothing to pretrain on")
        val_zoo = zoo.split("validation").final()
        self.tokenizer, self.summarizer = self._fit_preprocessing(train_zoo, saved)
        self.train_items = _load_items(train_zoo, self.tokenizer, enc_cfg, "train", self.summarizer)
        self.val_items = _load_items(val_zoo, self.tokenizer, enc_cfg, "validation", self.summarizer)
        self.views = _Views(cfg, self.tokenizer, enc_cfg)
        self.val_batches = _validation_batches(self.val_items, self.views, cfg) if self.val_items else []
        self.preprocessing = Preprocessing(window=int(cfg.window))
        self.lengths = [min(it.num_tokens, int(cfg.window)) for it in self.train_items]
        self.model_hashes = [train_zoo.content_hash(i) for i in range(len(train_zoo))]

    def _fit_preprocessing(
        self, train_zoo: Any, saved: dict[str, Any] | None
    ) -> tuple[WeightTokenizer, LayerSummarizer | None]:
        """The tokenizer's normalization and the summarizer: fitted on the train split, or the saved ones."""
        if saved is not None:
            summaries = saved.get("summaries")
            return (
                WeightTokenizer.from_dict(saved["tokenizer"]),
                None if summaries is None else LayerSummarizer.from_dict(summaries),
            )
        tokenizer = WeightTokenizer(TokenizerConfig(token_size=self.enc_cfg.token_size))
        tokenizer.fit_normalization(_float32(sd) for sd in train_zoo.state_dicts())
        summarizer = _fit_summarizer(train_zoo, tokenizer) if self.enc_cfg.summary_tokens else None
        return tokenizer, summarizer

    def provenance(self) -> dict[str, Any]:
        return {
            "zoo_split": "train",
            "checkpoints": "final",
            "model_ids": [it.model_id for it in self.train_items],
            "model_hashes": self.model_hashes,
            "n_models": len(self.train_items),
            "validation_model_ids": [it.model_id for it in self.val_items],
            "selection": (
                "lowest validation loss" if self.val_items else "lowest training loss (no validation split)"
            ),
        }

    def state_fields(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer.to_dict(),
            "summaries": None if self.summarizer is None else self.summarizer.to_dict(),
        }

    def build_model(self, fresh: bool) -> nn.Module:
        return PretrainModel(self.enc_cfg)

    def encoder_module(self, model: nn.Module) -> nn.Module:
        return model.encoder  # type: ignore[return-value]

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_items) / int(self.cfg.batch_size))

    def batches(self, gen: torch.Generator) -> Iterator[list[int]]:
        yield from length_buckets(self.lengths, int(self.cfg.batch_size), gen)

    def train_step(
        self, model: nn.Module, batch: Any, gen: torch.Generator, info: D.DistInfo, device: torch.device
    ) -> Step:
        # every rank draws the whole batch's views (so the generator stays in step and the augmentations
        # equal a single process's) and computes its slice of the models
        views = self.views.batch([self.train_items[i] for i in batch], gen)
        part = torch.arange(len(batch)).tensor_split(info.world_size)[info.rank]
        loss, value, mse, con, smse = _losses(
            model,
            views,
            self.cfg,
            device,
            info,
            part if info.enabled else None,
        )

        def values() -> dict[str, float]:
            summed = D.sum_values(info, [float(value), float(mse), float(smse)])
            return {
                "loss": summed[0],
                "reconstruction": summed[1],
                "contrastive": float(con),
                "summary_reconstruction": summed[2],
            }

        return Step(loss, len(batch), values)

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float] | None:
        if not self.val_items:
            return None
        return _evaluate(model, self.val_batches, self.cfg, device)

    def save(self, model: nn.Module, folder: Path, provenance: dict[str, Any]) -> None:
        save_encoder(
            model,
            self.tokenizer,
            provenance,
            folder,
            preprocessing=self.preprocessing,
            summarizer=self.summarizer,
        )


__all__ = ["PretrainModel", "TokenObjective", "length_buckets", "nt_xent"]
