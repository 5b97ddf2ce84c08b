"""Transformer weight-space encoder over tokenized weights (see `zooprobe.encoder.model`)."""

from zooprobe.encoder.model import (
    EncoderConfig,
    EncoderConfigError,
    EncoderOutput,
    TransformerBlock,
    WeightEncoder,
)

__all__ = ["EncoderConfig", "EncoderConfigError", "EncoderOutput", "TransformerBlock", "WeightEncoder"]
