"""`PretrainConfig` and its presets, torch-free (the command line builds ``encoder pretrain`` from it
without importing torch). Pretraining itself: `zooprobe.training.pretrain`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from zooprobe.core.config import config, requirement
from zooprobe.core.device import check_device_name
from zooprobe.encoder.config import EncoderConfig, NeuronEncoderConfig
from zooprobe.errors import ConfigError

SUMMARY_DIM = 32
"""Values per summary token; equal to `zooprobe.tokens.SUMMARY_DIM` (a test keeps them equal)."""

Pooling = Literal["mean", "cls", "mean+cls"]
_ENCODER_FIELDS = (
    "token_size",
    "d_model",
    "n_layers",
    "n_heads",
    "d_ff",
    "latent_dim",
    "dropout",
    "max_global_pos",
    "max_layers",
    "max_in_layer_pos",
    "pooling",
    "decoder_layers",
    "summary_tokens",
    "summary_dim",
)


@config()
@dataclass
class PretrainConfig:
    """Configuration of `pretrain_encoder`. Fields left as ``None`` take the preset's value.

    Two architectures (``architecture``): ``tokens``, the v2 transformer over SANE-style weight tokens,
    pretrained self-supervised (`zooprobe.training.objectives.tokens`); ``neurons``, the v3
    permutation-invariant neuron-level encoder, pretrained supervised on the zoo's metadata
    (`zooprobe.training.objectives.neurons`). Fields that only one architecture reads are refused for the
    other.

    Presets (times on two CPU cores): ``tiny`` (tests: a few seconds on the tiny zoo), ``small`` (the
    default encoder: 18 epochs on the small built-in zoo, budget 90 s), ``bench`` (tokens: a larger
    encoder, 8 epochs on the bench zoo, 15 minutes; neurons: 20 epochs, about 6 minutes on a disjoint
    8,192-model bench-generator zoo; see docs/encoder.md for measured times and results).
    """

    preset: Literal["tiny", "small", "bench"] = "small"
    architecture: Literal["tokens", "neurons", "layers"] = "tokens"
    """tokens: v2 weight-token transformer (self-supervised); neurons: v3 neuron-level encoder, invariant to
    hidden-neuron permutations, pretrained supervised on zoo metadata (pretrain it on models the heads will
    not be evaluated on); layers: the foundation encoder (a transformer over layer tokens), supervised on
    zoo metadata like neurons."""
    splits: list[str] | None = None
    """Zoo splits trained on (default: train). A zoo kept for pretraining only may use train and test; the
    validation split always picks the best epoch."""
    message_passing_rounds: int | None = None
    """neurons: rounds of message passing along the weights (0: DeepSets over neurons)."""
    encoder: EncoderConfig | None = None
    """A complete encoder configuration; when given it replaces the encoder fields below."""
    token_size: int | None = None
    """Values per weight token (the tokenizer's and the encoder's token size)."""
    d_model: int | None = None
    """Transformer width."""
    n_layers: int | None = None
    """Transformer blocks of the encoder."""
    n_heads: int | None = None
    d_ff: int | None = None
    """Hidden size of the transformer MLPs."""
    latent_dim: int | None = None
    """Size of the pooled model embedding (and of per-token latents)."""
    dropout: float | None = None
    pooling: Pooling | None = None
    """Model embedding: mean of token states, a learned cls token, or both."""
    decoder_layers: int | None = None
    """Transformer blocks of the reconstruction decoder (0: per-token MLP)."""
    summary_tokens: bool | None = None
    """Give the encoder one summary token per layer (statistics of the layer's raw weights)."""
    summary_dim: int | None = None
    """Values per summary token (must be zooprobe.tokens.SUMMARY_DIM)."""
    summary_mask_ratio: float | None = None
    """Fraction of summary tokens whose values are hidden from the encoder and reconstructed."""
    summary_loss_weight: float | None = None
    """Weight of the summary reconstruction MSE relative to the weight-token reconstruction MSE."""
    max_global_pos: int | None = None
    max_layers: int | None = None
    """Most layers a network may have (size of the layer-position table)."""
    max_in_layer_pos: int | None = None
    """Size of the in-layer position table; larger indices wrap around."""
    window: int | None = None
    """Tokens per training crop and per encoding window."""
    epochs: int | None = None
    batch_size: int | None = None
    """Models per batch (each contributes two views)."""
    lr: float | None = None
    """Peak learning rate (AdamW)."""
    warmup_fraction: float | None = None
    """Fraction of all steps spent in linear warmup before the cosine decay."""
    min_lr_ratio: float | None = None
    """Final learning rate as a fraction of lr."""
    weight_decay: float | None = None
    grad_clip: float | None = None
    """Maximum gradient norm (0 disables clipping)."""
    gamma: float | None = None
    """Weight of the contrastive loss (1 - gamma weighs the reconstruction loss)."""
    temperature: float | None = None
    """NT-Xent temperature."""
    mask_ratio: float | None = None
    """Fraction of tokens hidden from the encoder and reconstructed."""
    noise_sigma: float | None = None
    """Multiplicative noise on token values."""
    erase_ratio: float | None = None
    """Fraction of tokens whose values are erased (set to zero) in each view."""
    permute: bool | None = None
    """Function-preserving neuron permutations of zooprobe subject models in each view."""
    reconstruction: Literal["mse", "per_model"] | None = None
    """Reconstruction loss: MSE over all masked real entries of the batch ("mse"), or each model's masked
    MSE divided by the mean square of its own values, averaged over models ("per_model")."""
    seed: int = 0
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``cuda:N``."""
    mixed_precision: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""

    def resolved(self) -> PretrainConfig:
        """A copy with every ``None`` replaced by the preset's value (and `encoder` unpacked), validated."""
        if self.architecture in ("neurons", "layers"):
            given = [
                f.name
                for f in dataclasses.fields(self)
                if f.name in TOKEN_ONLY_FIELDS and getattr(self, f.name) is not None
            ]
            if given:
                raise ConfigError(
                    f"PretrainConfig: {', '.join(given)} only apply to architecture 'tokens', not "
                    f"{self.architecture!r}; remove them"
                )
            if self.architecture == "layers":
                if self.message_passing_rounds is not None:
                    raise ConfigError(
                        "PretrainConfig: message_passing_rounds only applies to architecture 'neurons'"
                    )
                values = self.preset_values(LAYER_PRESETS, "layer pretraining")
            else:
                values = self.preset_values(NEURON_PRESETS, "neuron pretraining")
            cfg = PretrainConfig(**values)
            cfg.validate()
            return cfg
        if self.message_passing_rounds is not None:
            raise ConfigError("PretrainConfig: message_passing_rounds only applies to architecture 'neurons'")
        values = self.preset_values(PRESETS, "pretraining")
        if self.encoder is not None:
            if not isinstance(self.encoder, EncoderConfig):
                raise ConfigError(f"PretrainConfig.encoder must be an EncoderConfig, got {self.encoder!r}")
            values.update(self.encoder.to_dict())
        values["encoder"] = None
        cfg = PretrainConfig(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        need = requirement("PretrainConfig", ConfigError)
        neurons = self.architecture == "neurons"
        layers = self.architecture == "layers"
        skip = {"encoder", *(TOKEN_ONLY_FIELDS if neurons or layers else ()), "message_passing_rounds"}
        if neurons:
            skip.discard("message_passing_rounds")
        for f in dataclasses.fields(self):
            if f.name not in skip:
                need(getattr(self, f.name) is not None, f"field {f.name!r} is not set")
        v: Any = self
        need(len(v.splits) >= 1, "splits must name at least one split")
        if layers:
            self._check_optim(need)
            need(
                v.noise_sigma == 0,
                "noise_sigma must be 0 for architecture 'layers' (its tokens are computed once per model)",
            )
            check_device_name(v.device, "PretrainConfig: device")
            self.layer_encoder_config()  # validates the encoder fields
            return
        if neurons:
            self._check_optim(need)
            need(v.noise_sigma >= 0, f"noise_sigma must be >= 0, got {v.noise_sigma}")
            check_device_name(v.device, "PretrainConfig: device")
            self.neuron_encoder_config()  # validates the encoder fields
            return
        self.encoder_config()  # validates the encoder fields (EncoderConfigError names the field)
        need(v.window >= 1, f"window must be >= 1, got {v.window}")
        self._check_optim(need)
        need(0 <= v.gamma <= 1, f"gamma must be in [0, 1], got {v.gamma}")
        need(v.temperature > 0, f"temperature must be > 0, got {v.temperature}")
        need(0 < v.mask_ratio < 1, f"mask_ratio must be in (0, 1), got {v.mask_ratio}")
        need(v.noise_sigma >= 0, f"noise_sigma must be >= 0, got {v.noise_sigma}")
        need(0 <= v.erase_ratio < 1, f"erase_ratio must be in [0, 1), got {v.erase_ratio}")
        need(
            0 <= v.summary_mask_ratio < 1, f"summary_mask_ratio must be in [0, 1), got {v.summary_mask_ratio}"
        )
        need(v.summary_loss_weight >= 0, f"summary_loss_weight must be >= 0, got {v.summary_loss_weight}")
        need(
            v.summary_dim == SUMMARY_DIM,
            f"summary_dim must be {SUMMARY_DIM} (zooprobe.tokens.SUMMARY_DIM), got {v.summary_dim}",
        )
        check_device_name(v.device, "PretrainConfig: device")
        need(
            v.reconstruction in ("mse", "per_model"),
            f"reconstruction must be 'mse' or 'per_model', got {v.reconstruction!r}",
        )
        if v.window > v.max_global_pos:
            raise ConfigError(
                f"PretrainConfig: window ({v.window}) exceeds max_global_pos ({v.max_global_pos}); global "
                "positions would wrap inside one window"
            )

    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(**{name: getattr(self, name) for name in _ENCODER_FIELDS})

    def neuron_encoder_config(self) -> NeuronEncoderConfig:
        """The `NeuronEncoderConfig` of a ``neurons`` pretraining (which validates the fields)."""
        return NeuronEncoderConfig(
            d_model=self.d_model,  # type: ignore[arg-type]
            latent_dim=self.latent_dim,  # type: ignore[arg-type]
            n_layers=self.n_layers,  # type: ignore[arg-type]
            n_heads=self.n_heads,  # type: ignore[arg-type]
            dropout=float(self.dropout),  # type: ignore[arg-type]
            message_passing_rounds=self.message_passing_rounds,  # type: ignore[arg-type]
            max_layers=self.max_layers,  # type: ignore[arg-type]
        )

    def layer_encoder_config(self) -> Any:
        """The `LayerEncoderConfig` of a ``layers`` pretraining (which validates the fields)."""
        from zooprobe.encoder.layer_model import LayerEncoderConfig  # heavy: torch (the module's network)

        return LayerEncoderConfig(
            d_model=self.d_model,  # type: ignore[arg-type]
            latent_dim=self.latent_dim,  # type: ignore[arg-type]
            n_layers=self.n_layers,  # type: ignore[arg-type]
            n_heads=self.n_heads,  # type: ignore[arg-type]
            dropout=float(self.dropout),  # type: ignore[arg-type]
            max_layers=self.max_layers,  # type: ignore[arg-type]
        )

    def _check_optim(self, need: Any) -> None:
        """The optimization fields both architectures share: epochs, batch size, learning rate, schedule,
        weight decay and clipping."""
        v: Any = self
        need(v.epochs >= 1, f"epochs must be >= 1, got {v.epochs}")
        need(v.batch_size >= 1, f"batch_size must be >= 1, got {v.batch_size}")
        need(v.lr > 0 and math.isfinite(v.lr), f"lr must be > 0, got {v.lr}")
        need(0 <= v.warmup_fraction < 1, f"warmup_fraction must be in [0, 1), got {v.warmup_fraction}")
        need(0 <= v.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {v.min_lr_ratio}")
        need(v.weight_decay >= 0, f"weight_decay must be >= 0, got {v.weight_decay}")
        need(v.grad_clip >= 0, f"grad_clip must be >= 0 (0 disables it), got {v.grad_clip}")


_COMMON: dict[str, Any] = {
    "dropout": 0.0,
    "pooling": "mean",
    "warmup_fraction": 0.1,
    "min_lr_ratio": 0.05,
    "weight_decay": 0.01,
    "grad_clip": 1.0,
    "gamma": 0.05,
    "temperature": 0.1,
    "mask_ratio": 0.2,
    "noise_sigma": 0.1,
    "erase_ratio": 0.05,
    "permute": True,
    "reconstruction": "mse",
    "summary_tokens": True,
    "summary_dim": SUMMARY_DIM,
    "summary_mask_ratio": 0.2,
    "summary_loss_weight": 1.0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        **_COMMON,
        "token_size": 16,
        "d_model": 32,
        "n_layers": 1,
        "n_heads": 2,
        "d_ff": 64,
        "latent_dim": 16,
        "decoder_layers": 0,
        "max_global_pos": 256,
        "max_layers": 64,
        "max_in_layer_pos": 256,
        "window": 128,
        "epochs": 2,
        "batch_size": 8,
        "lr": 3e-3,
    },
    "small": {
        **_COMMON,
        "token_size": 32,
        "d_model": 64,
        "n_layers": 2,
        "n_heads": 4,
        "d_ff": 128,
        "latent_dim": 32,
        "decoder_layers": 1,
        "max_global_pos": 256,
        "max_layers": 64,
        "max_in_layer_pos": 512,
        "window": 256,
        "epochs": 18,
        "batch_size": 32,
        "lr": 1e-3,
    },
    "bench": {
        **_COMMON,
        "token_size": 32,
        "d_model": 96,
        "n_layers": 3,
        "n_heads": 4,
        "d_ff": 192,
        "latent_dim": 64,
        "decoder_layers": 1,
        "max_global_pos": 256,
        "max_layers": 64,
        "max_in_layer_pos": 512,
        "window": 256,
        "epochs": 8,
        "batch_size": 32,
        "lr": 1e-3,
    },
}

for _preset in PRESETS.values():
    _preset.setdefault("splits", ["train"])

TOKEN_ONLY_FIELDS = (
    "encoder",
    "token_size",
    "d_ff",
    "pooling",
    "decoder_layers",
    "summary_tokens",
    "summary_dim",
    "summary_mask_ratio",
    "summary_loss_weight",
    "max_global_pos",
    "max_in_layer_pos",
    "window",
    "gamma",
    "temperature",
    "mask_ratio",
    "erase_ratio",
    "permute",
    "reconstruction",
)
"""`PretrainConfig` fields that only the token architecture reads."""

_TINY_ENCODER: dict[str, Any] = {
    "d_model": 16,
    "latent_dim": 8,
    "n_layers": 1,
    "n_heads": 2,
    "dropout": 0.0,
    "epochs": 2,
    "batch_size": 8,
    "lr": 3e-3,
}
"""The shape and schedule of the ``tiny`` preset (tests) of the neuron and layer architectures."""

_NEURONS: dict[str, Any] = {
    "splits": ["train"],
    "message_passing_rounds": 0,
    "max_layers": 64,
    "warmup_fraction": 0.05,
    "min_lr_ratio": 0.02,
    "weight_decay": 1e-4,
    "grad_clip": 1.0,
    "noise_sigma": 0.05,
}
NEURON_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {**_NEURONS, **_TINY_ENCODER},
    "small": {
        **_NEURONS,
        "d_model": 64,
        "latent_dim": 64,
        "n_layers": 2,
        "n_heads": 4,
        "dropout": 0.1,
        "epochs": 20,
        "batch_size": 32,
        "lr": 2e-3,
    },
}
NEURON_PRESETS["bench"] = dict(NEURON_PRESETS["small"])
"""Presets of architecture ``neurons`` (``bench``: the configuration measured in docs/encoder.md)."""

_LAYERS: dict[str, Any] = {
    "splits": ["train"],
    "max_layers": 48,
    "warmup_fraction": 0.05,
    "min_lr_ratio": 0.0,
    "weight_decay": 0.05,
    "grad_clip": 1.0,
    "noise_sigma": 0.0,
}
LAYER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {**_LAYERS, **_TINY_ENCODER},
    "small": {
        **_LAYERS,
        "d_model": 64,
        "latent_dim": 32,
        "n_layers": 2,
        "n_heads": 4,
        "dropout": 0.1,
        "epochs": 20,
        "batch_size": 64,
        "lr": 1e-3,
    },
    "bench": {  # the shipped foundation encoder's recipe (benchmarks/foundation/pretrain_transfer.py)
        **_LAYERS,
        "d_model": 128,
        "latent_dim": 64,
        "n_layers": 3,
        "n_heads": 4,
        "dropout": 0.1,
        "epochs": 20,
        "batch_size": 256,
        "lr": 1e-3,
    },
}
"""Presets of architecture ``layers`` (``bench``: the foundation encoder's recipe: AdamW, warmup then cosine
instead of the script's one-cycle schedule)."""
