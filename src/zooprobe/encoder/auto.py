"""Any encoder kind, by its folder: `load_encoder`, `save_encoder`, `list_encoders`.

Importing this module registers the built-in kinds (``tokens``: `encoder_loader.LoadedEncoder`, format 2;
``neurons``: `neuron_loader.LoadedNeuronEncoder`, format 3); a kind defined elsewhere registers itself
with `zooprobe.encoder.registry.register_encoder` and is then read and written here like those.
Loading reads config.json, picks the kind (`registry.kind_for_config`: its ``architecture`` field, or the
format version for v2 folders, which predate the field) and calls the kind's strict ``from_folder``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zooprobe.encoder import encoder_loader, layer_loader, neuron_loader
from zooprobe.encoder.base import CONFIG_FILE, WeightSpaceEncoder, read_encoder_config
from zooprobe.encoder.registry import kind_for_config, registered_kinds
from zooprobe.errors import ConfigError

BUILTIN_KINDS: tuple[type[WeightSpaceEncoder], ...] = (
    encoder_loader.LoadedEncoder,
    neuron_loader.LoadedNeuronEncoder,
    layer_loader.LoadedLayerEncoder,
)
"""The kinds this package defines (imported above, so they are registered)."""


def load_encoder(folder: str | Path, device: str = "cpu") -> WeightSpaceEncoder:
    """Load the encoder in the local `folder`, of any registered kind (strict: see the kind's reader)."""
    folder = Path(folder)
    data = read_encoder_config(folder)
    kind = kind_for_config(data, folder / CONFIG_FILE)
    return kind.from_folder(folder, data, device)


def save_encoder(encoder: WeightSpaceEncoder, folder: str | Path) -> Path:
    """Write `encoder` (any registered kind) as an encoder folder; returns `folder`."""
    if not isinstance(encoder, WeightSpaceEncoder):
        raise ConfigError(
            f"save_encoder: expected a loaded encoder (WeightSpaceEncoder), got {type(encoder).__name__}"
        )
    return encoder.save_pretrained(folder)


def model_card(config: dict[str, Any], where: str | Path = CONFIG_FILE) -> str:
    """The README.md of an encoder folder whose config.json content is `config`, by its kind."""
    return kind_for_config(config, where).model_card(config)


def list_encoders() -> list[str]:
    """The architecture tags of every registered encoder kind (the built-in ones and any registered since)."""
    return sorted(registered_kinds())


__all__ = ["BUILTIN_KINDS", "list_encoders", "load_encoder", "model_card", "save_encoder"]
