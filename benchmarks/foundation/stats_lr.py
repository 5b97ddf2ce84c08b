"""What `zero_shot_length.py` and `zero_shot_steps.py` share: reading a `features.py` file and the
LightGBM regressor they fit on weight statistics."""

import lightgbm as lgb
import numpy as np
import pandas as pd


def load_stats(features_dir: str, name: str) -> tuple[np.ndarray, pd.DataFrame]:
    """The weight statistics and metadata of the models of ``F/NAME.npz`` that have layer tokens."""
    z = np.load(f"{features_dir}/{name}.npz")
    meta = pd.read_parquet(f"{features_dir}/{name}_meta.parquet")
    ok = z["mask"].any(1)
    return z["stats"][ok], meta[ok].reset_index(drop=True)


def fit_regressor(stats: np.ndarray, y: np.ndarray) -> lgb.LGBMRegressor:
    return lgb.LGBMRegressor(n_estimators=400, learning_rate=0.05, subsample=0.8, subsample_freq=1,
                             colsample_bytree=0.8, verbose=-1, n_jobs=1).fit(stats, y)  # fmt: skip
