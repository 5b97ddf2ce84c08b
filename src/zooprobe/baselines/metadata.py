"""The hyperparameters-as-input reference's features (`zooprobe.baselines.models` module docs):
`MetadataEncoder` turns a zoo's metadata columns into a numeric matrix."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


class MetadataEncoder:
    """Zoo metadata columns -> a numeric matrix with a layout fixed at `fit` (on the train split).

    Column types are decided from the frame given to `fit`:

    - **bool** (bool dtype, or objects that are all bools): ``col`` (0/1) and ``col.missing``.
    - **log** (a float column whose non-missing train values are all >= 0, with positive values spanning
      at least a factor 10, e.g. ``learning_rate``, ``weight_decay``; or any column named in
      ``log_columns``): ``col.log10``, ``col.nonpositive`` and ``col.missing``; a value <= 0 maps to one
      decade below the smallest positive train value.
    - **numeric** (other ints and floats): ``col`` as it is and ``col.missing``.
    - **category** (anything else, compared as ``str``): one-hot ``col=value`` over the sorted train
      vocabulary. A value not seen in training, or a missing value, is all zeros (no column is added at
      transform time, so train and test matrices always align).

    A missing numeric value takes the train median (0 when the train column is all missing) with the
    ``.missing`` indicator set. The output never holds NaN.
    """

    def __init__(self, columns: Sequence[str], log_columns: Iterable[str] | None = None) -> None:
        """``log_columns``: ``None`` decides log scaling automatically (above); a list forces exactly
        those columns to log scale (``[]`` turns it off)."""
        self.columns = list(columns)
        self.log_columns = None if log_columns is None else set(log_columns)
        self.specs_: list[dict[str, Any]] | None = None
        self.feature_names_: list[str] = []

    @staticmethod
    def _is_bool(s: pd.Series) -> bool:
        import pandas as pd  # heavy: pandas (metadata frames only)

        if pd.api.types.is_bool_dtype(s.dtype):
            return True
        if s.dtype == object:
            values = s.dropna()
            return len(values) > 0 and all(isinstance(v, bool | np.bool_) for v in values)
        return False

    def fit(self, df: pd.DataFrame) -> MetadataEncoder:
        """Decide each column's type and vocabulary / fill values from ``df`` (the train split)."""
        import pandas as pd  # heavy: pandas (metadata frames only)

        specs: list[dict[str, Any]] = []
        names: list[str] = []
        for col in self.columns:
            if col not in df.columns:
                raise KeyError(f"metadata column {col!r} not in the frame")
            s = df[col]
            if self._is_bool(s):
                specs.append({"column": col, "type": "bool"})
                names += [col, f"{col}.missing"]
            elif pd.api.types.is_numeric_dtype(s.dtype):
                v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
                v = v[np.isfinite(v)]
                positive = v[v > 0]
                if self.log_columns is None:
                    use_log = (
                        pd.api.types.is_float_dtype(s.dtype)
                        and len(positive) > 0
                        and bool(np.all(v >= 0))
                        and positive.max() / positive.min() >= 10
                    )
                else:
                    use_log = col in self.log_columns
                if use_log:
                    floor = math.log10(positive.min()) - 1 if len(positive) else 0.0
                    logs = np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), floor)
                    fill = float(np.median(logs)) if len(logs) else 0.0
                    specs.append({"column": col, "type": "log", "floor": floor, "fill": fill})
                    names += [f"{col}.log10", f"{col}.nonpositive", f"{col}.missing"]
                else:
                    fill = float(np.median(v)) if len(v) else 0.0
                    specs.append({"column": col, "type": "numeric", "fill": fill})
                    names += [col, f"{col}.missing"]
            else:
                vocab = sorted({str(x) for x in s.dropna()})
                specs.append({"column": col, "type": "category", "vocabulary": vocab})
                names += [f"{col}={v}" for v in vocab]
        self.specs_ = specs
        self.feature_names_ = names
        return self

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """The ``[len(df), len(feature_names_)]`` float64 matrix of ``df`` (any split)."""
        import pandas as pd  # heavy: pandas (metadata frames only)

        if self.specs_ is None:
            raise RuntimeError("MetadataEncoder.transform called before fit")
        blocks: list[np.ndarray] = []
        for spec in self.specs_:
            col = spec["column"]
            if col not in df.columns:
                raise KeyError(f"metadata column {col!r} not in the frame")
            s = df[col]
            missing = s.isna().to_numpy()
            if spec["type"] == "bool":
                v = np.array([0.0 if m else float(bool(x)) for x, m in zip(s, missing, strict=True)])
                blocks.append(np.column_stack([v, missing.astype(np.float64)]))
            elif spec["type"] in ("log", "numeric"):
                v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
                missing = ~np.isfinite(v)
                if spec["type"] == "log":
                    nonpos = ~missing & (v <= 0)
                    safe = np.where(~missing & (v > 0), v, 1.0)
                    logs = np.where(nonpos, spec["floor"], np.log10(safe))
                    logs = np.where(missing, spec["fill"], logs)
                    blocks.append(np.column_stack([logs, nonpos, missing]).astype(np.float64))
                else:
                    v = np.where(missing, spec["fill"], v)
                    blocks.append(np.column_stack([v, missing]).astype(np.float64))
            else:
                vocab = spec["vocabulary"]
                index = {v: i for i, v in enumerate(vocab)}
                onehot = np.zeros((len(df), len(vocab)))
                for row, (x, m) in enumerate(zip(s, missing, strict=True)):
                    j = None if m else index.get(str(x))
                    if j is not None:
                        onehot[row, j] = 1.0
                blocks.append(onehot)
        if not blocks:
            return np.zeros((len(df), 0))
        return np.hstack(blocks).astype(np.float64)

    def fit_transform(self, df: pd.DataFrame) -> np.ndarray:
        """`fit` then `transform` on the same frame."""
        return self.fit(df).transform(df)


def metadata_features(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """``MetadataEncoder(columns).fit_transform(df)``: the vocabulary comes from all rows of ``df``.

    For train / test matrices, fit a `MetadataEncoder` on the train rows and transform every split.
    """
    return MetadataEncoder(columns).fit_transform(df)


__all__ = ["MetadataEncoder", "metadata_features"]
