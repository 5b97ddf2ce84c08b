"""Simple baselines for predicting a network's properties from its weights.

`features`: the fixed-length weight-statistics vector of a state dict (per-layer mean, std and percentiles,
aligned by tensor role so that mixed architectures share one layout). `models`: `fit_baseline` (LightGBM
early-stopped on a validation split, a linear model, or the mean / majority floor) and `MetadataEncoder`
for the hyperparameters-as-input reference.
"""

from zooprobe.baselines.features import (
    N_FEATURES,
    feature_names,
    featurize,
    weight_statistics_features,
)
from zooprobe.baselines.models import (
    GBM_DEFAULTS,
    Baseline,
    MetadataEncoder,
    fit_baseline,
    metadata_features,
)

__all__ = [
    "GBM_DEFAULTS",
    "N_FEATURES",
    "Baseline",
    "MetadataEncoder",
    "feature_names",
    "featurize",
    "fit_baseline",
    "metadata_features",
    "weight_statistics_features",
]
