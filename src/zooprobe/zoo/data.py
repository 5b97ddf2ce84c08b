"""The data subject models are trained on: offline, deterministic, with fixed and recorded splits.

Six tasks ship with zooprobe, none needs a download:

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, bundled inside scikit-learn).
- ``mnist1d``: MNIST-1D signals of length 40, generated procedurally by ``mnist1d.data.make_dataset``
  (never ``get_dataset``, which downloads). Generation takes a few seconds, so the arrays are cached.
- ``tabular``, ``tabular_reg`` (regression), ``shapes16`` (16x16 RGB images) and ``motifs`` (one-hot
  sequences): procedural, see `synthetic.py`. The foundation corpus uses all six.

For the regression task the "accuracy" columns of a zoo hold the coefficient of determination R² of the
split, clipped to [0, 1] (0 = no better than predicting the mean), and the losses are mean squared errors
of the standardized target.

Each task is split 60/20/20 into train/validation/test, stratified by class, with a fixed seed. The split
sizes and a fingerprint of the split indices are recorded in every zoo's manifest.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from zooprobe.core.files import atomic_path, cache_dir
from zooprobe.core.guards import load_npz
from zooprobe.errors import ConfigError

TASKS = ("digits", "mnist1d", "tabular", "tabular_reg", "shapes16", "motifs")
SPLIT_SEED = 20261125
MNIST1D_SAMPLES = 4000


@dataclass(frozen=True)
class TaskData:
    """Standardized tensors of one task, split by sample. ``x_*`` are float32 with a channel axis."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    fingerprint: str
    regression: bool = False
    """A regression task: ``y_*`` are float32 targets (standardized), the model has one output."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, channel first: (1, 8, 8) for digits, (1, 40) for mnist1d, (16,) tabular."""
        return tuple(self.x_train.shape[1:])

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "task_type": "regression" if self.regression else "classification",
            "n_train": len(self.y_train),
            "n_validation": len(self.y_val),
            "n_test": len(self.y_test),
            "split_seed": SPLIT_SEED,
            "fingerprint": self.fingerprint,
        }


def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Generate (or read from cache) MNIST-1D with the package's default arguments, offline."""
    path = cache_dir() / "data" / f"mnist1d-{MNIST1D_SAMPLES}-seed42.npz"
    if path.exists():
        try:
            arrays = load_npz(path)  # guards: never unpickled
            return arrays["x"], arrays["y"]
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # corrupt cache: regenerate below
    from mnist1d.data import (  # heavy: mnist1d
        get_dataset_args,
        make_dataset,
    )

    args = get_dataset_args()
    args.num_samples = MNIST1D_SAMPLES
    state = np.random.get_state()  # make_dataset reseeds numpy's global RNG; do not leak that
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, x=x, y=y)
    return x, y


def _stratified_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """60/20/20 split indices, stratified by class (by target quintile for a real-valued ``y``)."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    if y.dtype.kind == "f":
        y = np.searchsorted(np.quantile(y, [0.2, 0.4, 0.6, 0.8]), y)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_tr, n_va = round(0.6 * len(idx)), round(0.2 * len(idx))
        parts[0].append(idx[:n_tr])
        parts[1].append(idx[n_tr : n_tr + n_va])
        parts[2].append(idx[n_tr + n_va :])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


@functools.lru_cache(maxsize=8)
def load_task(name: str) -> TaskData:
    """Load one task's standardized, split tensors. Cached per process; identical on every machine.

    Inputs are standardized with the training split's statistics: per feature for tabular tasks, over all
    values otherwise; a regression target likewise."""
    from zooprobe.zoo import synthetic  # heavy: its generators import scikit-learn

    per_feature = False
    if name == "digits":
        from sklearn.datasets import load_digits  # heavy: scikit-learn

        bunch = load_digits()
        x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
        y = bunch.target.astype(np.int64)
    elif name == "mnist1d":
        x, y = _mnist1d_arrays()
        x = x.reshape(-1, 1, x.shape[-1])
    elif name in synthetic.GENERATORS:
        x, y = synthetic.GENERATORS[name]()
        per_feature = x.ndim == 2
    else:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    regression = name in synthetic.REGRESSION
    tr, va, te = _stratified_split(y, SPLIT_SEED)
    if per_feature:
        mean, std = x[tr].mean(0, keepdims=True), x[tr].std(0, keepdims=True)
        x = ((x - mean) / std).astype(np.float32)
    else:
        mean_all, std_all = float(x[tr].mean()), float(x[tr].std())
        x = (x - mean_all) / std_all
    if regression:
        y = ((y - y[tr].mean()) / y[tr].std()).astype(np.float32)
    digest = hashlib.sha256()
    for part in (tr, va, te):
        digest.update(part.astype(np.int64).tobytes())

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return TaskData(
        name=name,
        x_train=t(x[tr]),
        y_train=t(y[tr]),
        x_val=t(x[va]),
        y_val=t(y[va]),
        x_test=t(x[te]),
        y_test=t(y[te]),
        n_classes=1 if regression else int(y.max()) + 1,
        fingerprint=digest.hexdigest()[:16],
        regression=regression,
    )
