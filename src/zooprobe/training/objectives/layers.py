"""The ``layers`` objective: supervised multi-task pretraining of the foundation encoder
(`zooprobe.encoder.layer_model.LayerEncoder`, a transformer over layer tokens) on a zoo's metadata.

The recipe of ``benchmarks/foundation/pretrain_transfer.py``, which pretrained the shipped encoder, run by
the one engine (`zooprobe.training.loop.run_loop`: resume, checkpoints, torchrun):

- data: the final checkpoints of ``PretrainConfig.splits`` (``["train"]`` by default); the validation
  split picks the best epoch and is never trained on; each model's layer tokens are computed once;
- targets: `metadata_targets` of the training models (standardization fitted on them), values from
  `target_tensors`; loss `multitask_loss` (missing values do not count);
- the token standardization (per token type) is fitted on the training models' tokens, once.

Preset ``bench`` is the shipped encoder's configuration (width 128, 3 blocks, latent 64, batch 256, AdamW
1e-3, weight decay 0.05, 20 epochs); the script used a one-cycle schedule, the engine warmup + cosine.
Distributed: each rank computes its slice of the global batch, weighted by its share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zooprobe.encoder.layer_loader import save_layer_encoder
from zooprobe.encoder.layer_model import LayerEncoder
from zooprobe.encoder.neuron_model import multitask_loss
from zooprobe.training import distributed as D
from zooprobe.training.objectives.base import Step, register_objective
from zooprobe.training.objectives.layer_data import LayerData, tokenize_zoo
from zooprobe.training.objectives.supervised import SupervisedObjective

ARCHITECTURE = "layers"


def _loss(
    model: LayerEncoder, data: LayerData, ys: dict[str, torch.Tensor], idx: torch.Tensor
) -> torch.Tensor:
    x, mask = data.rows(idx)
    device = next(model.parameters()).device
    out = model.predict(model.latent(x.to(device), mask.to(device)))
    return multitask_loss(model.targets, out, {k: v[idx].to(device) for k, v in ys.items()})


@register_objective(ARCHITECTURE)
class LayerObjective(SupervisedObjective):
    """Supervised multi-task pretraining of the foundation encoder (see the module docs)."""

    kind = ARCHITECTURE

    def prepare(self, zoo: Any, saved: dict[str, Any] | None, progress: bool) -> None:
        train_zoo, val_zoo = self.take_data(zoo, saved)
        self.enc_cfg = self.cfg.layer_encoder_config()
        top = self.enc_cfg.max_layers
        self.train = tokenize_zoo(train_zoo, "train", top, progress)
        self.val = tokenize_zoo(val_zoo, "validation", top, progress) if len(val_zoo) else None
        self.take_targets()

    def build_model(self, fresh: bool) -> nn.Module:
        model = LayerEncoder(self.enc_cfg, self.specs)
        if fresh:  # corpus-level token standardization, fitted on the training models once
            model.fit_standardization(self.train.x, self.train.mask)
        return model

    def train_step(
        self, model: nn.Module, batch: Any, gen: torch.Generator, info: D.DistInfo, device: torch.device
    ) -> Step:
        idx: torch.Tensor = batch
        part = np.array_split(np.arange(len(idx)), info.world_size)[info.rank]
        share = len(part) / len(idx)
        chosen = idx[torch.as_tensor(part if len(part) else np.arange(1))]
        loss = _loss(model, self.train, self.y_train, chosen)  # type: ignore[arg-type]
        value = float(loss.detach()) * share
        return Step(loss * share, len(idx), lambda: {"loss": float(D.sum_value(info, value))})

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float] | None:
        if self.val is None:
            return None
        model.eval()
        total = 0.0
        with torch.no_grad():
            for idx in self.val.batches(1024, None):
                total += float(_loss(model, self.val, self.y_val, idx)) * len(idx)  # type: ignore[arg-type]
        model.train()
        return {"loss": total / max(len(self.val), 1)}

    def save(self, model: nn.Module, folder: Path, provenance: dict[str, Any]) -> None:
        save_layer_encoder(model, provenance, folder)


__all__ = ["LayerObjective"]
