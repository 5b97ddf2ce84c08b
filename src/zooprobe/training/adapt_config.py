"""`AdaptConfig`: the configuration of ``zooprobe encoder adapt`` / `zooprobe.adapt_encoder`, torch-free (the
command line builds its options from it). Adaptation itself: `zooprobe.training.adapt`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from zooprobe.core.config import config, requirement
from zooprobe.core.device import check_device_name
from zooprobe.errors import ConfigError

ADAPT_CONFIG_FILE = "adapt_config.yaml"
"""The configuration of an adaptation run, written next to the encoder in its output folder."""


@config()
@dataclass
class AdaptConfig:
    """Test-time adaptation of a foundation (``layers``) encoder to a user's zoo: continued self-supervised
    training on the zoo's weights only (no metadata column besides the split, the final-checkpoint flag
    and the run id is read, so no label of any split). See `zooprobe.training.objectives.adapt`.

    The loss: NT-Xent between two augmented views of each model (layer tokens dropped, multiplicative
    noise on their values; with ``checkpoint_views`` the second view is another checkpoint of the same
    run) plus ``anchor_weight`` times the squared distance of the adapted latent from the source
    encoder's latent on the clean model, relative to the latter's mean square (so adaptation cannot
    drift far from the starting encoder). The supervised target heads stay frozen.
    """

    zoo: str = ""
    """The zoo to adapt to: folder, Hub dataset repo id or built-in name (its weights only are read)."""
    encoder: str = "foundation"
    """The encoder to start from: a foundation-kind (``layers``) encoder folder, Hub id or built-in name."""
    splits: list[str] | None = None
    """Splits whose models are read (default: every split of the zoo)."""
    checkpoints: Literal["final", "all"] = "all"
    """Models read: every stored checkpoint, or only each run's final one."""
    checkpoint_views: bool = False
    """The second view of a model is another checkpoint of the same run (when the zoo stores several)."""
    epochs: int = 8
    batch_size: int = 64
    """Models per step (each gives two views)."""
    lr: float = 1e-4
    """Peak learning rate (AdamW), lower than pretraining's: adaptation starts from a trained encoder."""
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    temperature: float = 0.2
    """NT-Xent temperature."""
    drop_ratio: float = 0.25
    """Fraction of layer tokens hidden in each view (the input token and one layer token always stay)."""
    noise_sigma: float = 0.05
    """Multiplicative noise on the token values of each view."""
    anchor_weight: float = 1.0
    """Weight of the term that keeps the latent close to the source encoder's."""
    seed: int = 0
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``cuda:N``."""

    def validate(self) -> None:
        need = requirement("AdaptConfig", ConfigError)
        v: Any = self
        if not str(v.zoo):
            raise ConfigError(
                "AdaptConfig: zoo is not set; give --zoo (a zoo folder, Hub id or built-in name)"
            )
        need(bool(str(v.encoder)), "encoder must name an encoder")
        need(v.splits is None or len(v.splits) >= 1, "splits must name at least one split (or be unset)")
        need(
            v.checkpoints in ("final", "all"), f"checkpoints must be 'final' or 'all', got {v.checkpoints!r}"
        )
        need(v.epochs >= 1, f"epochs must be >= 1, got {v.epochs}")
        need(v.batch_size >= 2, f"batch_size must be >= 2 (contrastive negatives), got {v.batch_size}")
        need(v.lr > 0 and math.isfinite(v.lr), f"lr must be > 0, got {v.lr}")
        need(v.weight_decay >= 0, f"weight_decay must be >= 0, got {v.weight_decay}")
        need(0 <= v.warmup_fraction < 1, f"warmup_fraction must be in [0, 1), got {v.warmup_fraction}")
        need(0 <= v.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {v.min_lr_ratio}")
        need(v.grad_clip >= 0, f"grad_clip must be >= 0 (0 disables it), got {v.grad_clip}")
        need(v.temperature > 0, f"temperature must be > 0, got {v.temperature}")
        need(0 <= v.drop_ratio < 1, f"drop_ratio must be in [0, 1), got {v.drop_ratio}")
        need(v.noise_sigma >= 0, f"noise_sigma must be >= 0, got {v.noise_sigma}")
        need(v.anchor_weight >= 0, f"anchor_weight must be >= 0, got {v.anchor_weight}")
        check_device_name(v.device, "AdaptConfig: device")


__all__ = ["ADAPT_CONFIG_FILE", "AdaptConfig"]
