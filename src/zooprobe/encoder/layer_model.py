"""The foundation encoder's network: a small transformer over layer tokens (`zooprobe.tokens.layers`).

Each model arrives as ``[T, N_TOKEN_F]`` tokens (an input token, then one per main layer) with a mask.
Tokens are standardized per token type with corpus-level statistics fitted once at pretraining (never per
model: a model's own scale carries much of the signal), clipped, embedded by a 2-layer MLP, given
positions counted from the first and from the last layer, and read by a pre-norm transformer with a
class token. The latent is a linear map of ``[class state, mean of the token states]``. One linear head per
pretraining target (`PretrainTarget`) predicts the corpus metadata; the representation is ``[latent,
predictions]`` (probabilities for discrete targets), as in the v3 encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zooprobe.core.config import check_field_types, config, requirement
from zooprobe.encoder.config import EncoderConfigError, PretrainTarget
from zooprobe.encoder.supervised import TargetHeadsModule
from zooprobe.tokens.layers import N_TOKEN_F

MAX_PARAMETERS = 50_000_000


@config(EncoderConfigError, require_all=True)
@dataclass(frozen=True)
class LayerEncoderConfig:
    """Hyperparameters of `LayerEncoder`; saved with the encoder (config.json) and validated on load.

    Attributes:
        d_model: width of the token states.
        latent_dim: size of the latent (the representation adds one value per target output).
        n_layers, n_heads: transformer blocks and their attention heads.
        dropout: dropout in the transformer.
        max_layers: size of the position tables; deeper networks are refused.
        clip: standardized token values are clipped to [-clip, clip].
    """

    d_model: int = 128
    latent_dim: int = 64
    n_layers: int = 3
    n_heads: int = 4
    dropout: float = 0.1
    max_layers: int = 48
    clip: float = 8.0

    def __post_init__(self) -> None:
        check_field_types(self, EncoderConfigError)
        need = requirement("LayerEncoderConfig", EncoderConfigError)
        need(self.d_model >= 1 and self.d_model % self.n_heads == 0, "d_model must be a multiple of n_heads")
        need(self.latent_dim >= 1, f"latent_dim must be >= 1, got {self.latent_dim}")
        need(self.n_layers >= 1, f"n_layers must be >= 1, got {self.n_layers}")
        need(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        need(self.max_layers >= 1, f"max_layers must be >= 1, got {self.max_layers}")
        need(self.clip > 0, f"clip must be > 0, got {self.clip}")
        d = self.d_model
        estimate = self.n_layers * 12 * d * d + 4 * N_TOKEN_F * d + 2 * self.max_layers * d
        need(
            estimate <= MAX_PARAMETERS,
            f"about {estimate:,} parameters, over the limit of {MAX_PARAMETERS:,}: "
            "use a smaller d_model or n_layers",
        )


class LayerEncoder(TargetHeadsModule):
    """Transformer over layer tokens (see the module docs). ``forward(x, mask)`` is the representation."""

    def __init__(self, config: LayerEncoderConfig, targets: list[PretrainTarget]) -> None:
        super().__init__()
        self._set_targets(config, targets)
        d = config.d_model
        self.register_buffer("token_mean", torch.zeros(2, N_TOKEN_F))
        self.register_buffer("token_std", torch.ones(2, N_TOKEN_F))
        self.embed = nn.Sequential(nn.Linear(N_TOKEN_F, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.pos_start = nn.Embedding(config.max_layers + 1, d)
        self.pos_end = nn.Embedding(config.max_layers + 1, d)
        self.cls = nn.Parameter(torch.zeros(d))
        self._add_transformer_and_heads()

    @torch.no_grad()
    def fit_standardization(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        """Per token type (input, layer), the mean and std of every value over the real tokens of `x`."""
        for k in range(2):
            sel = x[mask & (x[..., 1] == k)]
            if len(sel) >= 2:
                self.token_mean[k] = sel.mean(0)
                self.token_std[k] = sel.std(0).clamp_min(1e-3)

    def latent(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, latent_dim]`` from tokens ``[B, T, N_TOKEN_F]`` and their mask ``[B, T]``."""
        kind = x[..., 1].long().clamp(0, 1)
        clip = self.config.clip
        xn = ((x - self.token_mean[kind]) / self.token_std[kind]).clamp(-clip, clip) * mask.unsqueeze(-1)
        h = self.embed(xn)
        n = mask.sum(1, keepdim=True)
        top = self.config.max_layers
        idx = torch.arange(x.shape[1], device=x.device).expand_as(mask)
        h = h + self.pos_start(idx.clamp(max=top)) + self.pos_end((n - 1 - idx).clamp(0, top))
        h = torch.cat([self.cls.expand(x.shape[0], 1, -1), h], 1)
        keep = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        h = self.transformer(h, src_key_padding_mask=~keep)
        mean = (h[:, 1:] * mask.unsqueeze(-1)).sum(1) / n.clamp_min(1)
        return self.to_latent(torch.cat([h[:, 0], mean], -1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.represent(self.latent(x, mask))
