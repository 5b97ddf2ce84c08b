"""Procedural datasets of the foundation corpus: generated from a fixed seed, offline, in a second or less.

Each generator returns ``(x, y)`` as numpy arrays, ``x`` float32 with a channel axis for images and
sequences, ``y`` int64 class labels (float32 targets for regression). They are deterministic: the same
arrays on every machine, whatever numpy's global random state.

- ``tabular``: 16 features, 4 classes, scikit-learn's ``make_classification`` (8 informative, 4 redundant,
  3% flipped labels).
- ``tabular_reg``: 10 features, one real target: Friedman's #1 regression problem (``make_friedman1``,
  noise 1.0; 5 of the 10 features matter).
- ``shapes16``: 16x16 RGB images of six shape classes (filled and hollow squares, discs, rings, plus
  signs, bars) of random size, position and colour over a noisy background of another colour.
- ``motifs``: one-hot DNA-like sequences (4 channels, length 32); the class says which of four 5-letter
  motifs was planted at a random position (each letter mutated with probability 0.1).
"""

from __future__ import annotations

import numpy as np

SYNTHETIC_SEED = 20261207
N_TABULAR = 2000
N_SHAPES = 2400
N_MOTIFS = 2400


def tabular() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification  # heavy: scikit-learn

    x, y = make_classification(
        n_samples=N_TABULAR,
        n_features=16,
        n_informative=8,
        n_redundant=4,
        n_classes=4,
        n_clusters_per_class=2,
        flip_y=0.03,
        class_sep=1.0,
        random_state=SYNTHETIC_SEED,
    )
    return x.astype(np.float32), y.astype(np.int64)


def tabular_reg() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_friedman1  # heavy: scikit-learn

    x, y = make_friedman1(n_samples=N_TABULAR, n_features=10, noise=1.0, random_state=SYNTHETIC_SEED)
    return x.astype(np.float32), y.astype(np.float32)


def shapes16() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SYNTHETIC_SEED, 16])
    n, size, n_classes = N_SHAPES, 16, 6
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    r = rng.uniform(2.5, 5.5, n).astype(np.float32)[:, None, None]  # half-size of the shape
    cy = rng.uniform(5, size - 5, n).astype(np.float32)[:, None, None]
    cx = rng.uniform(5, size - 5, n).astype(np.float32)[:, None, None]
    dy, dx = rows[None] - cy, cols[None] - cx
    cheb, eucl = np.maximum(np.abs(dy), np.abs(dx)), np.sqrt(dy**2 + dx**2)
    thick = np.where(rng.random(n) < 0.5, 1.0, 1.6).astype(np.float32)[:, None, None]
    masks = [
        cheb <= r,  # filled square
        (cheb <= r) & (cheb >= r - thick),  # hollow square
        eucl <= r,  # disc
        (eucl <= r) & (eucl >= r - thick),  # ring
        ((np.abs(dy) <= thick * 0.6) | (np.abs(dx) <= thick * 0.6)) & (cheb <= r),  # plus sign
        (np.abs(dy) <= thick * 0.6) & (np.abs(dx) <= r),  # horizontal bar
    ]
    mask = np.select([y[:, None, None] == c for c in range(n_classes)], masks, False).astype(np.float32)
    fg = rng.uniform(0.3, 1.0, (n, 3, 1, 1)).astype(np.float32)
    bg = rng.uniform(0.0, 0.5, (n, 3, 1, 1)).astype(np.float32)
    x = bg + (fg - bg) * mask[:, None] + rng.normal(0, 0.15, (n, 3, size, size)).astype(np.float32)
    return x.astype(np.float32), y.astype(np.int64)


def motifs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SYNTHETIC_SEED, 32])
    n, length, width, n_classes = N_MOTIFS, 32, 5, 4
    patterns = rng.integers(0, 4, (n_classes, width))
    seq = rng.integers(0, 4, (n, length))
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    start = rng.integers(0, length - width + 1, n)
    planted = patterns[y]
    mutate = rng.random((n, width)) < 0.1
    planted = np.where(mutate, rng.integers(0, 4, (n, width)), planted)
    cols = start[:, None] + np.arange(width)[None]
    seq[np.arange(n)[:, None], cols] = planted
    x = np.eye(4, dtype=np.float32)[seq].transpose(0, 2, 1)  # [n, 4 channels, length]
    return np.ascontiguousarray(x), y.astype(np.int64)


GENERATORS = {"tabular": tabular, "tabular_reg": tabular_reg, "shapes16": shapes16, "motifs": motifs}
REGRESSION = frozenset({"tabular_reg"})
