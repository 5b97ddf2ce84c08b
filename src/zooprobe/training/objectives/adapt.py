"""The ``adapt`` objective: test-time adaptation of a foundation (``layers``) encoder to a user's zoo,
self-supervised on the zoo's **weights only**.

What it reads of the zoo: the weights of the chosen rows (`AdaptConfig.splits`, every split by default;
every checkpoint or only final ones) and, of the metadata, only the ``split`` and ``is_final`` columns
(and ``model_id`` with ``checkpoint_views``, to pair checkpoints of one run). No label of any split, not
even train's, is read; a test fails if one is.

The loss of a batch of models, each seen in two views:

- **contrastive** (NT-Xent, `losses.nt_xent`): a view hides a random ``drop_ratio`` of the model's layer
  tokens (the input token and one layer token always stay) and multiplies the token values by
  ``1 + noise_sigma * eps``; the second view is another checkpoint of the same run with
  ``checkpoint_views``. Hidden-neuron permutations, widening and dead neurons need no view: the layer
  tokens are invariant to them by construction;
- **anchor** (``anchor_weight``): each view's latent's squared distance from the *source* encoder's latent
  of the clean model, divided by the mean square of the source latents: adaptation cannot carry the
  representation far from the starting encoder.

The encoder's supervised target heads are frozen (kept as they are); the token standardization is the
source's. Under torchrun every rank computes the whole batch (its negatives span it) and its loss is
divided by the world size, so the summed gradients are the batch's.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zooprobe.core.progress import log
from zooprobe.encoder.layer_loader import LoadedLayerEncoder, save_layer_encoder
from zooprobe.encoder.layer_model import LayerEncoder
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.training import distributed as D
from zooprobe.training.objectives.base import (
    Objective,
    Step,
    refuse_other_kind,
    register_objective,
)
from zooprobe.training.objectives.layer_data import LayerData, tokenize_zoo
from zooprobe.training.objectives.losses import nt_xent

NAME = "adapt"
DESCRIPTION = (
    "self-supervised test-time adaptation on weights only: NT-Xent between views with hidden layer tokens "
    "and multiplicative token noise, plus an anchor to the source encoder's latent; target heads frozen"
)


def read_rows(zoo: Any, splits: list[str] | None, checkpoints: str) -> Any:
    """The rows of `zoo` adaptation reads: `splits` (all by default), every or only final checkpoints;
    reads the ``split`` column (and ``is_final``), no other."""
    if splits is not None:
        unknown = [s for s in splits if s not in zoo.splits]
        if unknown:
            raise InvalidInputError(f"zoo {zoo.source!s} has no split(s) {unknown}; it has {zoo.splits}")
        zoo = zoo.select(np.flatnonzero(zoo.metadata()["split"].isin(splits).to_numpy()))
    return zoo.final() if checkpoints == "final" else zoo


def _siblings(zoo: Any) -> list[np.ndarray]:
    """Per row, the rows of the same run (``model_id``), itself included."""
    ids = zoo.metadata()["model_id"].astype(str).to_numpy()
    groups: dict[str, list[int]] = {}
    for i, run in enumerate(ids):
        groups.setdefault(run, []).append(i)
    return [np.asarray(groups[run]) for run in ids]


@register_objective(NAME)
class AdaptObjective(Objective):
    """Self-supervised adaptation of a loaded foundation encoder (see the module docs). Built from a
    validated `AdaptConfig` and the loaded source encoder."""

    def __init__(self, cfg: Any, source: Any = None) -> None:
        super().__init__(cfg)
        if not isinstance(source, LoadedLayerEncoder):
            kind = getattr(source, "architecture", type(source).__name__)
            raise ConfigError(
                f"encoder adapt works on foundation encoders (kind 'layers'); {cfg.encoder!r} is of kind "
                f"{kind!r}"
            )
        self.source = source

    def check_state(self, path: Path, meta: dict[str, Any], output: Path) -> None:
        refuse_other_kind(meta, output, NAME)
        if meta.get("source_fingerprint") != self.source.fingerprint():
            raise ConfigError(
                f"{output} holds an adaptation of another source encoder; use another output folder or "
                "--overwrite"
            )

    def prepare(self, zoo: Any, saved: dict[str, Any] | None, progress: bool) -> None:
        cfg = self.cfg
        rows = read_rows(zoo, None if cfg.splits is None else list(cfg.splits), str(cfg.checkpoints))
        if len(rows) < 2:
            raise InvalidInputError(f"zoo {zoo.source!s}: {len(rows)} model(s) to adapt on; need at least 2")
        self.rows = rows
        self.data: LayerData = tokenize_zoo(rows, "zoo", self.source.config.max_layers, progress)
        self.siblings = _siblings(rows) if cfg.checkpoint_views else None
        teacher = self.source.encoder
        teacher.eval()
        with torch.no_grad():
            device = self.source.device
            parts = []
            for idx in self.data.batches(512, None):
                x, mask = self.data.rows(idx)
                parts.append(teacher.latent(x.to(device), mask.to(device)).float().cpu())
        self.teacher = torch.cat(parts)
        self.scale = float(self.teacher.pow(2).sum(1).mean().clamp_min(1e-12))
        log.info("adapting %s on %d models of %s", cfg.encoder, len(rows), zoo.source)

    def provenance(self) -> dict[str, Any]:
        src = self.source.provenance
        return {
            "adapted": True,
            "objective": f"{NAME}: {DESCRIPTION}",
            "source_encoder": str(self.cfg.encoder),
            "source_fingerprint": self.source.fingerprint(),
            "source_provenance": {
                k: src[k] for k in ("zoo_source", "corpus_sha256", "recipe", "n_models") if k in src
            },
            "labels_read": "none (weights only)",
            "zoo_split": "+".join(sorted(set(self.rows.metadata()["split"]))),
            "checkpoints": str(self.cfg.checkpoints),
            "model_hashes": [self.rows.content_hash(i) for i in range(len(self.rows))],
            "n_models": len(self.rows),
            "selection": "lowest training loss (no labels, no validation)",
        }

    def state_fields(self) -> dict[str, Any]:
        return {"architecture": NAME, "source_fingerprint": self.source.fingerprint()}

    def build_model(self, fresh: bool) -> nn.Module:
        model: LayerEncoder = copy.deepcopy(self.source.encoder).cpu()
        for p in model.heads.parameters():
            p.requires_grad_(False)  # the supervised target heads stay as they are
        return model

    def steps_per_epoch(self) -> int:
        return len(self.data.batches(int(self.cfg.batch_size), None))

    def batches(self, gen: torch.Generator) -> list[torch.Tensor]:
        return self.data.batches(int(self.cfg.batch_size), gen)

    def _view(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows `idx` with hidden layer tokens and multiplicative noise drawn from `gen`."""
        x, mask = self.data.rows(idx)
        x = x.clone()
        sigma = float(self.cfg.noise_sigma)
        noise = torch.randn(x.shape[0], x.shape[1], x.shape[2] - 2, generator=gen)
        x[..., 2:] = x[..., 2:] * (1 + sigma * noise)
        drop = torch.rand(mask.shape, generator=gen) < float(self.cfg.drop_ratio)
        drop[:, 0] = False  # the input token stays
        keep = mask & ~drop
        lost = keep[:, 1:].sum(1) == 0  # every layer token hidden: the first one comes back
        keep[lost, 1] = mask[lost, 1]
        return x * keep.unsqueeze(-1), keep

    def _partners(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.siblings is None:
            return idx
        pick = torch.rand(len(idx), generator=gen).numpy()
        out = [int(s[min(int(u * len(s)), len(s) - 1)]) for s, u in zip(
            (self.siblings[int(i)] for i in idx), pick, strict=True)]  # fmt: skip
        return torch.as_tensor(out)

    def train_step(
        self, model: nn.Module, batch: Any, gen: torch.Generator, info: D.DistInfo, device: torch.device
    ) -> Step:
        idx: torch.Tensor = batch
        enc: LayerEncoder = model  # type: ignore[assignment]
        x1, m1 = self._view(idx, gen)
        x2, m2 = self._view(self._partners(idx, gen), gen)
        z1 = enc.latent(x1.to(device), m1.to(device))
        z2 = enc.latent(x2.to(device), m2.to(device))
        t = self.teacher[idx].to(device)
        contrastive = nt_xent(z1, z2, float(self.cfg.temperature)) if len(idx) > 1 else z1.sum() * 0
        anchor = ((z1 - t).pow(2).sum(1).mean() + (z2 - t).pow(2).sum(1).mean()) / (2 * self.scale)
        loss = contrastive + float(self.cfg.anchor_weight) * anchor
        values = [float(loss.detach()), float(contrastive.detach()), float(anchor.detach())]
        share = 1.0 / info.world_size

        def report() -> dict[str, float]:
            total = D.sum_values(info, [v * share for v in values])
            return dict(zip(("loss", "contrastive", "anchor"), total, strict=True))

        return Step(loss * share, len(idx), report)

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float] | None:
        return None  # no labels and no held-out split: the training loss picks the epoch

    def save(self, model: nn.Module, folder: Path, provenance: dict[str, Any]) -> None:
        save_layer_encoder(model, provenance, folder)


__all__ = ["DESCRIPTION", "NAME", "AdaptObjective", "read_rows"]
