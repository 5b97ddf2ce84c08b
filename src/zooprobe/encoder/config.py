"""Encoder configurations, torch-free (the command line builds its parsers from them without torch).

`EncoderConfig` describes the v2 token transformer (`encoder.model`); `NeuronEncoderConfig` and
`PretrainTarget` the v3 neuron-level encoder (`encoder.neuron_model`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from zooprobe.core.config import check_field_types, config, requirement
from zooprobe.errors import ConfigError


class EncoderConfigError(ConfigError):
    """An `EncoderConfig` field is missing, unknown, mistyped or out of range; the message names it."""


Pooling = Literal["mean", "cls", "mean+cls"]

ENCODER_LIMITS: dict[str, int] = {
    "token_size": 4096,
    "d_model": 8192,
    "n_layers": 128,
    "n_heads": 256,
    "d_ff": 65536,
    "latent_dim": 8192,
    "max_global_pos": 1 << 20,
    "max_layers": 1 << 16,
    "max_in_layer_pos": 1 << 20,
    "decoder_layers": 128,
    "summary_dim": 4096,
    "message_passing_rounds": 64,
}
"""The largest value of each size field of `EncoderConfig` and `NeuronEncoderConfig`. A saved config asking
for more (a damaged or hostile config.json: ``d_model`` 1e7 would allocate tens of GB) is refused before
anything is allocated, naming the field and its limit; so is one whose estimated parameter count exceeds
`MAX_ENCODER_PARAMS`. Every preset is far inside them."""
MAX_ENCODER_PARAMS = 1 << 30
"""The most parameters (estimated from the config) an encoder may have: 4 GiB of float32."""


def _check_limits(cfg: object, name: str, estimate: int) -> None:
    for field in dataclasses.fields(cfg):  # type: ignore[arg-type]
        limit = ENCODER_LIMITS.get(field.name)
        value = getattr(cfg, field.name)
        if limit is not None and value > limit:
            raise EncoderConfigError(
                f"{name}.{field.name}: {value} exceeds the limit {limit} (zooprobe.encoder.config."
                "ENCODER_LIMITS); the config.json is damaged or not meant for zooprobe"
            )
    if estimate > MAX_ENCODER_PARAMS:
        raise EncoderConfigError(
            f"{name}: about {estimate:,} parameters, beyond the limit {MAX_ENCODER_PARAMS:,} "
            "(zooprobe.encoder.config.MAX_ENCODER_PARAMS); the config.json is damaged or not meant for "
            "zooprobe"
        )


@config(EncoderConfigError, require_all=True)
@dataclass(frozen=True)
class EncoderConfig:
    """Hyperparameters of `WeightEncoder`; saved with a trained encoder and validated strictly on load.

    Attributes:
        token_size: values per weight token; must equal the tokenizer's `TokenizerConfig.token_size`.
        d_model, n_layers, n_heads, d_ff: transformer width, depth, heads and MLP hidden size.
        latent_dim: size of the per-token latents and of the pooled model embedding.
        dropout: dropout on attention weights and residual branches (0 disables it).
        max_global_pos: size of the global-index table; larger indices wrap around (see module docs).
        max_layers, max_in_layer_pos: sizes of the layer-index and in-layer-index tables; larger indices
            raise.
        pooling: model embedding from the ``"mean"`` of real token states, a learned ``"cls"`` token, or
            both concatenated (``"mean+cls"``).
        decoder_layers: transformer blocks in the reconstruction decoder (0: a per-token MLP).
        summary_tokens: read one extra *summary token* per layer (standardized statistics of the layer's raw
            weights, `zooprobe.tokens.summary`), attended to like any token; the pooled embedding then
            also includes the mean of the summary-token states (see `WeightEncoder.forward`).
        summary_dim: values per summary token (`zooprobe.tokens.SUMMARY_DIM`).
    """

    token_size: int = 32
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    latent_dim: int = 32
    dropout: float = 0.0
    max_global_pos: int = 4096
    max_layers: int = 64
    max_in_layer_pos: int = 2048
    pooling: Pooling = "mean"
    decoder_layers: int = 1
    summary_tokens: bool = False
    summary_dim: int = 32

    def __post_init__(self) -> None:
        check_field_types(self, EncoderConfigError)
        not_positive = ("dropout", "pooling", "decoder_layers", "summary_tokens")
        positive = [name for name in self.to_dict() if name not in not_positive]
        for name in positive:
            if getattr(self, name) < 1:
                raise EncoderConfigError(f"EncoderConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.decoder_layers < 0:
            raise EncoderConfigError(f"EncoderConfig.decoder_layers: must be >= 0, got {self.decoder_layers}")
        d = self.d_model
        block = 4 * d * d + 2 * d * self.d_ff
        tables = (self.max_global_pos + self.max_layers + self.max_in_layer_pos) * d
        estimate = (
            (self.n_layers + self.decoder_layers) * block
            + tables
            + 2 * (self.token_size + self.summary_dim) * d
        )
        _check_limits(self, "EncoderConfig", estimate)
        if self.d_model % self.n_heads:
            raise EncoderConfigError(
                f"EncoderConfig.n_heads: d_model ({self.d_model}) must be divisible by "
                f"n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise EncoderConfigError(f"EncoderConfig.dropout: must be in [0, 1), got {self.dropout}")

    @property
    def uses_cls(self) -> bool:
        return self.pooling in ("cls", "mean+cls")


TargetKind = Literal["continuous", "categorical", "binary"]


@config(EncoderConfigError, require_all=True)
@dataclass(frozen=True)
class PretrainTarget:
    """One pretraining target: a metadata column and how it is predicted.

    Attributes:
        name: the target's name (a zoo column, or ``log_learning_rate`` style derived names).
        kind: ``continuous`` (standardized with the train split's ``mean`` and ``std``), ``categorical``
            (``classes`` in index order) or ``binary``.
        weight: weight of this target's loss in the multi-task sum.
    """

    name: str
    kind: TargetKind
    classes: list[str] = dataclasses.field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    weight: float = 1.0

    @property
    def n_out(self) -> int:
        return len(self.classes) if self.kind == "categorical" else 1


@config(EncoderConfigError, require_all=True)
@dataclass(frozen=True)
class NeuronEncoderConfig:
    """Hyperparameters of `NeuronEncoder`; saved with the encoder (config.json) and validated on load.

    Attributes:
        d_model: width of neuron, layer and transformer states.
        latent_dim: size of the latent (the representation adds one value per target output).
        n_layers, n_heads: transformer blocks over the layer tokens, and their attention heads.
        dropout: dropout in the transformer.
        message_passing_rounds: 0 for DeepSets over neurons; k > 0 adds k rounds of message passing along
            the weights (measured: no better on the bench zoo, 1.6x slower).
        max_layers: size of the layer-position tables; deeper networks are refused.

    The pretraining targets (`PretrainTarget`, saved next to this config) complete the architecture: one
    linear head each, whose predictions are part of the representation.
    """

    d_model: int = 64
    latent_dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.1
    message_passing_rounds: int = 0
    max_layers: int = 64

    def __post_init__(self) -> None:
        check_field_types(self, EncoderConfigError)
        need = requirement("NeuronEncoderConfig", EncoderConfigError)
        need(self.d_model >= 1 and self.d_model % self.n_heads == 0, "d_model must be a multiple of n_heads")
        need(self.latent_dim >= 1, f"latent_dim must be >= 1, got {self.latent_dim}")
        need(self.n_layers >= 1, f"n_layers must be >= 1, got {self.n_layers}")
        need(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        need(self.message_passing_rounds >= 0, "message_passing_rounds must be >= 0")
        need(self.max_layers >= 1, f"max_layers must be >= 1, got {self.max_layers}")
        d = self.d_model
        estimate = (self.n_layers + self.message_passing_rounds) * 12 * d * d + self.max_layers * d
        _check_limits(self, "NeuronEncoderConfig", estimate + d * self.latent_dim)
