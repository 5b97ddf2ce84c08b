"""The ``neurons`` objective: supervised multi-task pretraining of the v3 (neuron-level) encoder on a zoo's
metadata.

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
  ``log2_batch_size``, ``dropout``, ``momentum``, ``label_smoothing``; ``log10_steps`` and
  ``log10_train_samples`` where the zoo records its runs' training length (``train_samples_range``);
- categorical: ``optimizer``, ``activation``, ``init``, ``scheduler``, ``normalization``;
- binary: ``has_dropout``, ``has_residual``, ``zero_weight_decay``.

Loss: the sum over targets of MSE / cross-entropy / binary cross-entropy (`multitask_loss`); missing
values do not count. Inputs get multiplicative weight noise ``w * (1 + noise_sigma * eps)`` (weights,
biases and norm affines). No permutation augmentation is needed: the encoder is invariant by construction.

Distributed (``torchrun``): each rank takes a slice of the global batch; its loss is weighted by its
share, so the gradients `run_loop` sums equal the whole batch's (a rank with an empty slice computes one
model at weight 0, to draw the same noise and join the sum).

Optimization, checkpoints, resume, TensorBoard and logs: `zooprobe.training.loop`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zooprobe.core.progress import Progress
from zooprobe.encoder.config import NeuronEncoderConfig
from zooprobe.encoder.neuron_loader import save_neuron_encoder
from zooprobe.encoder.neuron_model import NeuronEncoder, multitask_loss
from zooprobe.errors import ConfigError, InvalidInputError
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
from zooprobe.training.objectives.base import Step, register_objective
from zooprobe.training.objectives.supervised import SupervisedObjective
from zooprobe.training.objectives.targets import metadata_targets, target_tensors

ARCHITECTURE = "neurons"

NORM_SAMPLE = 1500  # training models used to fit the feature standardization


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


def _parse(zoo: Any, what: str, progress: bool) -> list[NeuronModel]:
    models: list[NeuronModel] = []
    with Progress(f"parsing {what} models", len(zoo), unit="models", enabled=progress) as bar:
        for i, sd in enumerate(zoo.state_dicts()):
            try:
                models.append(neuron_model(sd))
            except InvalidInputError as e:
                raise InvalidInputError(f"{what} model {zoo.metadata().iloc[i]['model_id']}: {e}") from e
            bar.advance()
    return models


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


# ------------------------------------------------------------------------------------------ the objective
@register_objective(ARCHITECTURE)
class NeuronObjective(SupervisedObjective):
    """Supervised multi-task pretraining of the v3 encoder on the zoo's metadata (see the module docs)."""

    kind = ARCHITECTURE

    def prepare(self, zoo: Any, saved: dict[str, Any] | None, progress: bool) -> None:
        cfg = self.cfg
        train_zoo, val_zoo = self.take_data(zoo, saved)
        edges = int(cfg.message_passing_rounds) > 0
        self.train = _Prepared(_parse(train_zoo, "train", progress), edges)
        self.val = _Prepared(_parse(val_zoo, "validation", progress), edges) if len(val_zoo) else None
        self.take_targets()
        self.enc_cfg = self._encoder_config()

    def _encoder_config(self) -> NeuronEncoderConfig:
        cfg = self.cfg
        enc_cfg = cfg.neuron_encoder_config()
        deepest = max(len(stacked) for _, stacked in self.train.groups)
        if deepest > enc_cfg.max_layers:
            raise ConfigError(
                f"the zoo has networks with {deepest} layers; raise --max_layers (now {cfg.max_layers})"
            )
        return enc_cfg

    def build_model(self, fresh: bool) -> nn.Module:
        model = NeuronEncoder(self.enc_cfg, self.specs)
        if fresh:  # zoo-level feature standardization from a fixed sample of the training models
            train = self.train
            sample_gen = torch.Generator().manual_seed(int(self.cfg.seed) + 17)
            fit_batches = []
            for g, (idx, _) in enumerate(train.groups):
                keep = math.ceil(len(idx) * min(1.0, NORM_SAMPLE / train.n))
                pos = torch.randperm(len(idx), generator=sample_gen)[:keep].numpy()
                fit_batches += [train.features(g, pos[s : s + 256]) for s in range(0, len(pos), 256)]
            model.norm.fit(fit_batches)
        return model

    def train_step(
        self, model: nn.Module, batch: Any, gen: torch.Generator, info: D.DistInfo, device: torch.device
    ) -> Step:
        g, pos = batch
        part = np.array_split(np.arange(len(pos)), info.world_size)[info.rank]
        share = len(part) / len(pos)
        part = part if len(part) else np.arange(1)
        noise = float(self.cfg.noise_sigma)
        chosen = part if info.enabled else None
        loss = _loss(model, self.train, self.y_train, g, pos, chosen, noise=noise, gen=gen)  # type: ignore[arg-type]
        value = float(loss.detach()) * share
        # (the value passes through float32, as the loss always did)
        return Step(loss * share, len(pos), lambda: {"loss": float(torch.tensor(D.sum_value(info, value)))})

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float] | None:
        if self.val is None:
            return None
        return {"loss": _validation_loss(model, self.val, self.y_val)}  # type: ignore[arg-type]

    def save(self, model: nn.Module, folder: Path, provenance: dict[str, Any]) -> None:
        save_neuron_encoder(model, provenance, folder)  # type: ignore[arg-type]


__all__ = ["NORM_SAMPLE", "NeuronObjective", "metadata_targets", "target_tensors"]
