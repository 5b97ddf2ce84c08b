"""Weight-space encoder: the transformer (`model`), function-preserving augmentations (`augment`), and
saving and loading as a Hugging Face model folder with the exact preprocessing (`encoder_loader`).

Pretraining is training: `zooprobe.training.pretrain`. The benchmark is `zooprobe.bench.encoder`."""

from zooprobe.encoder.encoder_loader import LoadedEncoder, load_encoder_folder, save_encoder
from zooprobe.encoder.model import (
    EncoderConfig,
    EncoderConfigError,
    EncoderOutput,
    TransformerBlock,
    WeightEncoder,
)

__all__ = [
    "EncoderConfig",
    "EncoderConfigError",
    "EncoderOutput",
    "LoadedEncoder",
    "TransformerBlock",
    "WeightEncoder",
    "load_encoder_folder",
    "save_encoder",
]
