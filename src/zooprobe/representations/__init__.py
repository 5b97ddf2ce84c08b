"""Encoder outputs of a zoo's models, computed once and cached on disk (frozen head training)."""

from zooprobe.representations.cache import (
    RepresentationCache,
    Representations,
    compute_representations,
)

__all__ = ["RepresentationCache", "Representations", "compute_representations"]
