"""Reading any encoder folder: config.json's ``format_version`` picks the loader.

- version 2: the token encoder (`encoder_loader`, SANE-style chunk tokens, self-supervised);
- version 3: the neuron-level encoder (`neuron_loader`, permutation-invariant, supervised multi-task).

Any other version (1, or one from a newer zooprobe) is refused with a message that says which versions
this zooprobe reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

from zooprobe.core.files import read_json
from zooprobe.encoder.encoder_loader import (
    CONFIG_FILE,
    FORMAT_VERSION,
    EncoderFormatError,
    LoadedEncoder,
    load_token_encoder_folder,
)
from zooprobe.encoder.neuron_loader import (
    NEURON_FORMAT_VERSION,
    LoadedNeuronEncoder,
    load_neuron_encoder_folder,
)

AnyEncoder: TypeAlias = LoadedEncoder | LoadedNeuronEncoder
"""A loaded encoder of either architecture; both offer tokenize/embed/encode/latent_dim/fingerprint."""


def load_encoder_folder(folder: str | Path, device: str = "cpu") -> AnyEncoder:
    """Load an encoder from a local folder written by zooprobe, whatever its format version."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise EncoderFormatError(f"{folder}: no {CONFIG_FILE}, so this folder is not a zooprobe encoder")
    data: Any = read_json(path, "encoder config", EncoderFormatError)
    version = data.get("format_version") if isinstance(data, dict) else None
    if version == NEURON_FORMAT_VERSION:
        return load_neuron_encoder_folder(folder, data, device)
    if version == FORMAT_VERSION:
        return load_token_encoder_folder(folder, device)
    raise EncoderFormatError(
        f"{path}: format_version {version!r} is not supported; this zooprobe reads {FORMAT_VERSION} (token "
        f"encoders) and {NEURON_FORMAT_VERSION} (neuron encoders). Pretrain the encoder again with this "
        "version (`zooprobe encoder pretrain`), or load it with the zooprobe version that wrote it"
    )


__all__ = ["AnyEncoder", "load_encoder_folder"]
