"""Simple baselines for predicting a network's properties from its weights.

`models`: `fit_baseline` (LightGBM early-stopped on a validation split, a linear model, or the mean /
majority floor) and `MetadataEncoder` for the hyperparameters-as-input reference. Their input, the
weight-statistics features of a state dict, is `zooprobe.tokens.statistics`.
"""

from zooprobe.baselines.models import (
    GBM_DEFAULTS,
    Baseline,
    MetadataEncoder,
    fit_baseline,
    metadata_features,
)

__all__ = [
    "GBM_DEFAULTS",
    "Baseline",
    "MetadataEncoder",
    "fit_baseline",
    "metadata_features",
]
