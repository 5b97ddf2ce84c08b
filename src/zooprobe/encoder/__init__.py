"""Weight-space encoder: the transformer (`model`), self-supervised pretraining (`pretrain`, `augment`),
saving and loading as a Hugging Face model folder (`io`), and its benchmark (`bench`)."""

from zooprobe.encoder.io import LoadedEncoder, load_encoder, save_encoder
from zooprobe.encoder.model import (
    EncoderConfig,
    EncoderConfigError,
    EncoderOutput,
    TransformerBlock,
    WeightEncoder,
)
from zooprobe.encoder.pretrain import PretrainConfig, pretrain_encoder

__all__ = [
    "EncoderConfig",
    "EncoderConfigError",
    "EncoderOutput",
    "LoadedEncoder",
    "PretrainConfig",
    "TransformerBlock",
    "WeightEncoder",
    "load_encoder",
    "pretrain_encoder",
    "save_encoder",
]
