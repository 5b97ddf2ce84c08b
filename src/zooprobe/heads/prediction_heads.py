"""Prediction heads: small MLPs over an encoder's representation of a network, one per task.

Every head is a trunk (configurable MLP) followed by one output layer (or branch) per target:

- `PatternClassificationHead`: multi-label, one logit per pattern (``has_conv_layers``, ...);
- `AccuracyPredictionHead`: one regressed value (standardized, or through a sigmoid in [0, 1] when the
  target is ``bounded``);
- `HyperparameterPredictionHead`: a separate branch per target (a small MLP) on the shared trunk:
  continuous targets regress standardized (log10) values, discrete ones output class logits.

The input is the encoder's pooled representation (``pooling="mean"``) or, with ``pooling="attention"``,
the per-token latents, pooled by learned queries (masked attention over real tokens only).

`Head.loss` masks missing targets (NaN / -1) out; `Head.predict` turns raw outputs into what users read
(probabilities for binary and discrete targets, values in metric space for continuous ones).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zooprobe.errors import ConfigError
from zooprobe.heads.config import HeadConfig
from zooprobe.heads.targets import TargetSpec, TaskSpec
from zooprobe.tokens.statistics import N_FEATURES

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def mlp(in_dim: int, hidden: list[int], config: HeadConfig) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for h in hidden:
        layers.append(nn.Linear(in_dim, h))
        if config.norm == "layernorm":
            layers.append(nn.LayerNorm(h))
        elif config.norm == "batchnorm":
            layers.append(nn.BatchNorm1d(h))
        layers.append(_ACTIVATIONS[config.activation]())
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        in_dim = h
    return nn.Sequential(*layers), in_dim


class AttentionPooling(nn.Module):
    """Learned queries attend over per-token latents; padded tokens get no weight."""

    def __init__(self, dim: int, queries: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, dim) * dim**-0.5)
        self.key = nn.Linear(dim, dim)
        self.out_dim = dim * queries

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("bld,qd->bql", self.key(tokens), self.queries) * tokens.shape[-1] ** -0.5
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a model without tokens pools to 0
        return torch.einsum("bql,bld->bqd", weights, tokens).flatten(1)


class Head(nn.Module):
    """Trunk MLP + one output per target (see the module docs). Subclasses pick the output layers."""

    task = ""

    def __init__(self, spec: TaskSpec, config: HeadConfig, in_dim: int) -> None:
        super().__init__()
        if spec.task != self.task:
            raise ConfigError(
                f"{type(self).__name__} predicts task {self.task!r}, got a spec for {spec.task!r}"
            )
        self.spec, self.config, self.in_dim = spec, config, in_dim
        self.pool = (
            AttentionPooling(in_dim, config.attention_queries) if config.pooling == "attention" else None
        )
        feat_dim = self.pool.out_dim if self.pool is not None else in_dim
        if config.statistics:
            # standardization of the statistics, fitted on the train split (`set_statistics_normalization`);
            # buffers, so they are saved and loaded strictly with the head's weights
            self.register_buffer("stats_mean", torch.zeros(N_FEATURES))
            self.register_buffer("stats_std", torch.ones(N_FEATURES))
            feat_dim += N_FEATURES
        self.input_norm = nn.LayerNorm(feat_dim) if config.input_norm else nn.Identity()
        self.trunk, self.trunk_dim = mlp(feat_dim, config.hidden_sizes, config)
        self.outputs = self._build_outputs()

    def _build_outputs(self) -> nn.ModuleDict:
        return nn.ModuleDict({t.name: nn.Linear(self.trunk_dim, t.n_outputs) for t in self.spec.targets})

    def set_statistics_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardization of the weight-statistics input (train split mean and std; std 0 -> 1)."""
        self.stats_mean.copy_(mean)
        self.stats_std.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))

    def features(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.pool is not None:
            if "tokens" not in inputs:
                raise ConfigError("this head pools attention over tokens: its inputs need per-token latents")
            x = self.pool(inputs["tokens"], inputs["token_mask"])
        else:
            x = inputs["pooled"]
        if self.config.statistics:
            if "stats" not in inputs:
                raise ConfigError("this head reads weight statistics: its inputs need 'stats'")
            z = ((inputs["stats"].to(x.dtype) - self.stats_mean) / self.stats_std).clamp(-10.0, 10.0)
            x = torch.cat([x, z], dim=-1)
        return x

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw outputs per target: binary logits [B], continuous values [B], class logits [B, C]."""
        h = self.trunk(self.input_norm(self.features(inputs)))
        out = {}
        for t in self.spec.targets:
            y = self.outputs[t.name](h)
            out[t.name] = y if t.kind == "categorical" else y.squeeze(-1)
        return out

    # ---------------------------------------------------------------- loss and predictions
    def loss(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted mean of the per-target losses over known entries; targets without any known entry in
        the batch are left out (of the sum and of the weights). Returns (total, per-target losses)."""
        parts: dict[str, torch.Tensor] = {}
        total = outputs[self.spec.targets[0].name].new_zeros(())
        weight = 0.0
        for t in self.spec.targets:
            y, pred = targets[t.name], outputs[t.name].float()
            if t.kind == "categorical":
                known = y >= 0
                if not bool(known.any()):
                    continue
                loss = F.cross_entropy(pred[known], y[known])
            else:
                known = ~torch.isnan(y)
                if not bool(known.any()):
                    continue
                if t.kind == "binary":
                    loss = F.binary_cross_entropy_with_logits(pred[known], y[known].to(pred.dtype))
                elif t.bounded:
                    loss = F.mse_loss(torch.sigmoid(pred[known]), y[known].to(pred.dtype))
                else:
                    loss = F.mse_loss(pred[known], y[known].to(pred.dtype))
            parts[t.name] = loss
            total = total + t.weight * loss
            weight += t.weight
        return (total / weight if weight > 0 else total), parts

    @staticmethod
    def predict_target(t: TargetSpec, raw: np.ndarray) -> np.ndarray:
        """Raw outputs of one target -> probabilities (binary [N], discrete [N, C]) or metric-space values."""
        raw = np.asarray(raw, dtype=np.float64)
        if t.kind == "binary":
            return 1.0 / (1.0 + np.exp(-raw))
        if t.kind == "categorical":
            z = raw - raw.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        if t.bounded:
            return 1.0 / (1.0 + np.exp(-raw))
        return t.from_model_space(raw)

    def predict(self, raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {t.name: self.predict_target(t, raw[t.name]) for t in self.spec.targets}


class PatternClassificationHead(Head):
    """Multi-label classification of architectural patterns (one logit per pattern, BCE loss)."""

    task = "patterns"

    def _build_outputs(self) -> nn.ModuleDict:
        return nn.ModuleDict({"logits": nn.Linear(self.trunk_dim, len(self.spec.targets))})

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.outputs["logits"](self.trunk(self.input_norm(self.features(inputs))))
        return {t.name: logits[:, i] for i, t in enumerate(self.spec.targets)}


class AccuracyPredictionHead(Head):
    """Regression of test accuracy (standardized, or bounded to [0, 1] through a sigmoid); MSE loss."""

    task = "accuracy"


class HyperparameterPredictionHead(Head):
    """Multi-task: one branch per hyperparameter on a shared trunk; weighted MSE + cross-entropy loss."""

    task = "hyperparameters"

    def _build_outputs(self) -> nn.ModuleDict:
        branches = {}
        for t in self.spec.targets:
            if self.config.branch_hidden > 0:
                body, dim = mlp(self.trunk_dim, [self.config.branch_hidden], self.config)
                branches[t.name] = nn.Sequential(*body, nn.Linear(dim, t.n_outputs))
            else:
                branches[t.name] = nn.Linear(self.trunk_dim, t.n_outputs)
        return nn.ModuleDict(branches)


HEADS: dict[str, type[Head]] = {
    "patterns": PatternClassificationHead,
    "accuracy": AccuracyPredictionHead,
    "hyperparameters": HyperparameterPredictionHead,
}


def build_head(spec: TaskSpec, config: HeadConfig, in_dim: int) -> Head:
    """The neural head class of `spec.task`, built for representations of size `in_dim` (a ``gbm`` head is
    `zooprobe.heads.gbm_head.make_head`'s)."""
    if config.kind != "mlp":
        raise ConfigError(f"build_head builds neural heads; kind {config.kind!r} is built by make_head")
    return HEADS[spec.task](spec, config, in_dim)


__all__ = [
    "HEADS",
    "AccuracyPredictionHead",
    "AttentionPooling",
    "Head",
    "HeadConfig",
    "HyperparameterPredictionHead",
    "PatternClassificationHead",
    "build_head",
]
