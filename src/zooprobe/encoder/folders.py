"""Reading any encoder folder (the name before zooprobe 0.3; the home is `zooprobe.encoder.auto`).

config.json's ``architecture`` (or, for v2 folders, ``format_version``) picks the kind:

- version 2: the token encoder (`encoder_loader`, SANE-style chunk tokens, self-supervised);
- version 3: the neuron-level encoder (`neuron_loader`, permutation-invariant, supervised multi-task).

Any other version (1, or one from a newer zooprobe) is refused with a message that says which versions
this zooprobe reads.
"""

from __future__ import annotations

from typing import TypeAlias

from zooprobe.encoder.auto import load_encoder
from zooprobe.encoder.base import WeightSpaceEncoder

AnyEncoder: TypeAlias = WeightSpaceEncoder
"""A loaded encoder of any kind; every kind offers tokenize/embed/encode/latent_dim/fingerprint."""

load_encoder_folder = load_encoder
"""Load an encoder from a local folder written by zooprobe, whatever its kind (`auto.load_encoder`)."""

__all__ = ["AnyEncoder", "load_encoder_folder"]
