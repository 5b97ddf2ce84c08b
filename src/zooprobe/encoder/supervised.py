"""What the supervised encoder kinds (neurons, layers) share: `TargetHeadsModule`, the module side (their
pretraining targets, one head per target on the latent, the representation ``[latent, predictions]``), and
`SupervisedEncoder`, the loaded side (fingerprint, latent size, saving and strict loading of their folder).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from zooprobe.core.config import check_record
from zooprobe.core.device import resolve_device
from zooprobe.encoder.base import (
    CONFIG_FILE,
    LIBRARY_NAME,
    EncoderFormatError,
    WeightSpaceEncoder,
    load_weights,
    warn_if_unfinished,
    write_encoder_folder,
)
from zooprobe.encoder.config import EncoderConfigError, PretrainTarget
from zooprobe.errors import ZooprobeError


class TargetHeadsModule(nn.Module):
    """An encoder module with a latent (``config.latent_dim``), a transformer (``self.transformer``) and one
    linear head per pretraining target; a subclass calls `_set_targets` first and
    `_add_transformer_and_heads` last in its ``__init__`` and implements ``latent``."""

    config: Any
    targets: list[PretrainTarget]
    heads: nn.ModuleDict
    transformer: nn.TransformerEncoder

    def _set_targets(self, config: Any, targets: list[PretrainTarget]) -> None:
        names = [t.name for t in targets]
        if len(set(names)) != len(names):
            raise EncoderConfigError(f"{type(self).__name__}: target names must be unique, got {names}")
        self.config = config
        self.targets = list(targets)

    def _add_transformer_and_heads(self) -> None:
        """The transformer over the tokens, the latent projection of ``[cls, mean]`` and the target heads
        (registered last, in this order)."""
        cfg = self.config
        d = cfg.d_model
        block = nn.TransformerEncoderLayer(
            d, cfg.n_heads, 2 * d, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(block, cfg.n_layers, enable_nested_tensor=False)
        self.to_latent = nn.Sequential(nn.LayerNorm(2 * d), nn.Linear(2 * d, cfg.latent_dim))
        self.heads = nn.ModuleDict({t.name: nn.Linear(cfg.latent_dim, t.n_out) for t in self.targets})

    @property
    def representation_dim(self) -> int:
        """Latent size plus one value per target output."""
        return int(self.config.latent_dim) + sum(t.n_out for t in self.targets)

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks (fine-tuning can unfreeze the top ones)."""
        return self.transformer.layers

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def predict(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw multi-task outputs (logits for categorical and binary targets) from latents."""
        return {t.name: self.heads[t.name](z) for t in self.targets}

    def represent(self, z: torch.Tensor) -> torch.Tensor:
        """``[latent, predictions]``: probabilities for discrete targets, standardized values otherwise."""
        parts = [z]
        out = self.predict(z)
        for t in self.targets:
            o = out[t.name]
            parts.append(
                o.softmax(-1) if t.kind == "categorical" else o.sigmoid() if t.kind == "binary" else o
            )
        return torch.cat(parts, -1)


class SupervisedEncoder(WeightSpaceEncoder):
    """A kind pretrained supervised on metadata targets (neurons, layers): its module is a
    `TargetHeadsModule` built as ``module_class(config, targets)``, its representation the
    latent plus the module's own predictions of the targets, and its folder holds ``architecture``,
    ``encoder`` (the config) and ``targets`` besides the shared fields. A subclass is a dataclass with the
    fields ``encoder``, ``provenance``, ``source`` and sets the class attributes (``module_class`` too)."""

    module_class: ClassVar[type] = object
    """The kind's `torch.nn.Module`, built from its config and its targets."""
    required_fields: ClassVar[tuple[str, ...]] = (
        "format_version",
        "library_name",
        "architecture",
        "encoder",
        "targets",
        "provenance",
    )

    def __post_init__(self) -> None:
        self.encoder.eval()

    @property
    def targets(self) -> list[PretrainTarget]:
        return self.encoder.targets  # type: ignore[no-any-return]

    @property
    def latent_dim(self) -> int:
        """Size of the representation: the latent plus one value per target output."""
        return int(self.encoder.representation_dim)

    def _fingerprint_meta(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "config": self.config.to_dict(),
            "targets": [t.to_dict() for t in self.targets],
        }

    def save_pretrained(self, folder: str | Path) -> Path:
        """The kind's folder of this encoder and its provenance (`save_module`)."""
        return self.save_module(self.encoder, self.provenance, folder)

    @classmethod
    def save_module(cls, encoder: torch.nn.Module, provenance: Mapping[str, Any], folder: str | Path) -> Path:
        """Write the folder of the kind's module `encoder` atomically; weights first, config.json after."""
        fields = {
            "architecture": cls.architecture,
            "encoder": encoder.config.to_dict(),  # type: ignore[operator]
            "targets": [t.to_dict() for t in encoder.targets],  # type: ignore[union-attr]
        }
        return write_encoder_folder(folder, encoder, cls.format_version, fields, provenance, cls.model_card)

    @classmethod
    def from_folder(cls, folder: Path, data: dict[str, Any], device: str = "cpu") -> WeightSpaceEncoder:
        return cls.load_module(folder, data, device, stacklevel=3)

    @classmethod
    def load_module(
        cls, folder: Path, data: dict[str, Any], device: str = "cpu", stacklevel: int = 2
    ) -> WeightSpaceEncoder:
        """Load the kind's folder whose config.json content is `data` (strict: every field checked)."""
        path = folder / CONFIG_FILE
        check_record(
            data, str(path), EncoderFormatError, fields=cls.required_fields, version=cls.format_version
        )
        if data["library_name"] != LIBRARY_NAME or data["architecture"] != cls.architecture:
            raise EncoderFormatError(
                f"{path}: library_name {data['library_name']!r} / architecture {data['architecture']!r} is "
                f"not a zooprobe {cls.architecture!r} encoder"
            )
        if not isinstance(data["provenance"], dict) or not isinstance(data["targets"], list):
            raise EncoderFormatError(f"{path}: provenance must be an object and targets a list")
        try:
            config = cls.config_class.from_dict(data["encoder"])  # type: ignore[attr-defined]
            targets = [PretrainTarget.from_dict(t) for t in data["targets"]]
            encoder = cls.module_class(config, targets)
        except ZooprobeError as e:
            raise EncoderFormatError(f"{path}: {e}") from e
        load_weights(folder, encoder)
        encoder.to(resolve_device(device)).eval()
        loaded = cls(encoder, dict(data["provenance"]), folder)  # type: ignore[call-arg]
        warn_if_unfinished(loaded, stacklevel + 1)
        return loaded
