"""The applicability domain of a head: does a network look like the ones its head was trained on?

A head has seen one zoo. Its predictions for a network unlike any of it (a ResNet-18 when the zoo holds small
MLPs and CNNs, a transformer layer, an LSTM, weights of 1e20) are extrapolations, however confident they
look. `fit_domain` describes the train split; `ApplicabilityDomain.check` tells, for each new network,
whether it lies inside and, if not, why. Three checks, all of which must pass:

- **architecture** (`zooprobe.heads.architecture`: `Architecture`, read off the state dict's names and
  shapes): every layer kind (``linear``, ``conv1d``/``conv2d``/``conv3d``, ``batchnorm``, ``norm``,
  ``attention``, ``recurrent``, ``other`` tensors) occurs in the training zoo; the depth (main layers), the
  hidden widths, the input size (fan-in of the first layer) and the output size lie within the training
  zoo's ranges, and the number of parameters within a factor ``PARAMS_TOLERANCE`` of its range; for the
  accuracy, whose value depends on the data, the first layer's kind and input features/channels with the
  output size must match a training model's (`Architecture.task`: a network of a task the head never saw
  is flagged);
- **statistics**: the model's weight statistics (`zooprobe.tokens.statistics`, standardized with the train
  split's mean and std and clipped to ``±CLIP``) are at most `KnnSpace.threshold` away from their k-th
  nearest training model (root mean square over the features);
- **representation**: the same for the encoder's pooled representation, the input of the head;
- **folded BatchNorm** (`FoldDetector`, when the training zoo has BatchNorm networks): a network without
  BatchNorm whose raw weight statistics (``raw_statistics``: before `zooprobe.symmetry.normalize_units`)
  look like those of a zoo network with its BatchNorm folded into its layers
  (`zooprobe.symmetry.fold_batchnorm`: the same function, but not a network the head was trained on).

Distances are also given as a percentile of held-out in-distribution distances (100: farther than all of
them). Those are what a new network drawn like the zoo's would have: each training model's distance
measured by cross-fitting (`held_out_distances`: standardized with, and measured against, the other folds
only) and the validation models' distances to the train split. The threshold of each space is its
`space_quantile` of them (the domain's `quantile`, default 0.99, split between the two spaces: 0.995 each),
or, when higher, that quantile of a log-normal fit, since a few dozen reference distances cannot resolve a
99.5% tail. So about 99% of networks drawn like the zoo's pass the distance checks together
(`DomainSummary` records the share of validation and test models that pass all of them; a test measures
the rate on held-out models of a small zoo). A flagged network's reason says how far out it is: the
percentile of its distance and its ratio to the threshold.

The domain is saved with the head (`to_record` for JSON, `arrays` for safetensors; see
`zooprobe.heads.trust`). A train split of more than `MAX_STORED_MODELS` networks is described by a seeded
sample of that many (the distance spaces, their held-out distances and thresholds alike); the architecture
range reads every training network.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from zooprobe.errors import InvalidInputError
from zooprobe.heads.architecture import Architecture, ArchitectureRange, architecture

CLIP = 1e3
"""Standardized features are clipped to ``[-CLIP, CLIP]`` before distances (extreme weights stay finite and
far)."""
DEFAULT_QUANTILE = 0.99
DEFAULT_K = 5
MAX_STORED_MODELS = 4000
"""Training models a distance space keeps (a seeded sample of the train split beyond that): the saved
domain stays a few MB for a head trained on any zoo, and a k-th-neighbour distance costs the same."""
CROSS_FOLDS = 5
"""Folds of `held_out_distances`."""
SPACES = ("statistics", "representation")


def _ordinal(pct: float) -> str:
    """``99.7th``, ``100th`` (above every reference distance)."""
    return "100th" if pct >= 100.0 else f"{pct:.1f}th"


# ------------------------------------------------------------------------------------------ distances
def _kth_distances(
    x: np.ndarray,
    reference: np.ndarray,
    k: int,
    exclude_self: bool = False,
    ref_sq: np.ndarray | None = None,
) -> np.ndarray:
    """For each row of `x`, the root-mean-square distance to its `k`-th nearest row of `reference`
    (`ref_sq`: its rows' squared norms, when the caller keeps them)."""
    dim = max(1, x.shape[1])
    ref_sq = (reference**2).sum(1) if ref_sq is None else ref_sq
    out = np.empty(len(x))
    for s in range(0, len(x), 256):
        chunk = x[s : s + 256]
        d2 = (chunk**2).sum(1)[:, None] + ref_sq[None, :] - 2.0 * chunk @ reference.T
        d2 = np.maximum(d2, 0.0) / dim
        if exclude_self:
            rows = np.arange(len(chunk))
            d2[rows, rows + s] = np.inf
        out[s : s + len(chunk)] = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])
    return out


def _standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of features `x`; a (numerically) constant feature gets scale 1."""
    mean = x.mean(0)
    std = x.std(0)
    return mean, np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)


STORED_DTYPE = np.float32
"""The training models' standardized features are kept (and saved) at float32: half the size of a head's
``domain.safetensors`` (the shipped heads' largest file) for distances that differ in the 7th digit. They are
rounded when the space is fitted, so a head predicts the same before and after it is saved."""


def _stored(train: np.ndarray) -> np.ndarray:
    return np.asarray(train, dtype=STORED_DTYPE).astype(np.float64)


def _standardize(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = (np.asarray(x, dtype=np.float64) - mean) / scale
    return np.clip(np.nan_to_num(z, nan=CLIP, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP)


def held_out_distances(train: np.ndarray, k: int, folds: int = CROSS_FOLDS) -> np.ndarray:
    """Each training model's k-NN distance as a held-out model would have it (cross-fitting): in `folds`
    folds, the fold's models are standardized with the other folds' mean and scale and measured against
    those other models only, exactly as a new network is against the train split. (Leave-one-out distances
    within the standardized train split are smaller than a new network's: the model took part in its own
    standardization, which flagged several times too many in-distribution models.)"""
    train = np.asarray(train, dtype=np.float64)
    n = len(train)
    folds = max(2, min(folds, n))
    out = np.empty(n)
    index = np.arange(n)
    for f in range(folds):
        held = index[f::folds]
        rest = np.setdiff1d(index, held)
        mean, scale = _standardization(train[rest])
        kk = max(1, min(k, len(rest)))
        out[held] = _kth_distances(
            _standardize(train[held], mean, scale), _standardize(train[rest], mean, scale), kk
        )
    return out


def _threshold(held_out: np.ndarray, quantile: float) -> float:
    """The `quantile` of held-out distances: the empirical one, or, when higher, that of a log-normal fit
    (a reference set of a few dozen models cannot resolve its own 99.5% tail: its empirical quantile is
    about its maximum, which a new in-distribution model exceeds with probability 1/(n+1))."""
    empirical = float(np.quantile(held_out, quantile, method="higher"))
    logs = np.log(np.maximum(held_out, 1e-300))
    if len(logs) < 3 or not np.isfinite(logs).all():
        return empirical
    fitted = float(np.exp(logs.mean() + NormalDist().inv_cdf(quantile) * logs.std(ddof=1)))
    return max(empirical, fitted) if math.isfinite(fitted) else empirical


@dataclass
class KnnSpace:
    """A k-nearest-neighbour distance to the training models in one feature space (module docs)."""

    name: str
    mean: np.ndarray
    scale: np.ndarray
    train: np.ndarray
    """Standardized, clipped training features."""
    reference: np.ndarray
    """Sorted held-out in-distribution k-NN distances (`held_out_distances` of the train split, then the
    validation models'): the percentile scale (domains saved before cross-fitting: leave-one-out ones)."""
    k: int
    threshold: float

    def transform(self, x: np.ndarray) -> np.ndarray:
        return _standardize(x, self.mean, self.scale)

    def distances(self, x: np.ndarray) -> np.ndarray:
        reference, ref_sq = self._reference
        return _kth_distances(self.transform(x), reference, self.k, ref_sq=ref_sq)

    @functools.cached_property
    def _reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The training features at float64 and their squared norms, computed once per space (`predict`
        checks one network at a time: converting 4,000 stored rows per network was most of the check)."""
        # norms in the stored dtype, the float64 copy numpy's mixed matmul made: the same bits as before
        return np.asarray(self.train, dtype=np.float64), (self.train**2).sum(1)

    def percentile(self, distance: float) -> float:
        """Share (in %) of the held-out in-distribution distances (`reference`) at most `distance`."""
        return 100.0 * float(np.searchsorted(self.reference, distance, side="right")) / len(self.reference)

    @classmethod
    def fit(cls, name: str, train: np.ndarray, validation: np.ndarray, k: int, quantile: float) -> KnnSpace:
        """The space of `train`'s models, its threshold the `quantile` of held-out in-distribution distances
        (`held_out_distances` of the train split and the validation models' distances; `_threshold`)."""
        train = np.asarray(train, dtype=np.float64)
        if len(train) < 2:
            raise InvalidInputError(
                f"the applicability domain needs at least 2 training models, got {len(train)}"
            )
        if not np.isfinite(train).all():
            raise InvalidInputError(f"the training models' {name} are not all finite")
        mean, scale = _standardization(train)
        k = max(1, min(k, len(train) - 1))
        space = cls(name, mean, scale, np.empty(0), np.empty(0), k, math.inf)
        space.train = _stored(space.transform(train))
        held_out = held_out_distances(train, k)
        if len(validation):
            held_out = np.concatenate([held_out, space.distances(validation)])
        space.reference = np.sort(held_out)
        space.threshold = _threshold(space.reference, quantile)
        return space

    def arrays(self) -> dict[str, torch.Tensor]:
        out = {
            f"{self.name}.{key}": torch.from_numpy(np.ascontiguousarray(getattr(self, key), dtype=np.float64))
            for key in ("mean", "scale", "reference")
        }
        out[f"{self.name}.train"] = torch.from_numpy(np.ascontiguousarray(self.train, dtype=STORED_DTYPE))
        return out

    @classmethod
    def from_saved(cls, name: str, record: Mapping[str, Any], arrays: Mapping[str, torch.Tensor]) -> KnnSpace:
        def get(key: str) -> np.ndarray:
            return arrays[f"{name}.{key}"].numpy().astype(np.float64)

        return cls(name, get("mean"), get("scale"), get("train"), get("reference"), int(record["k"]),
                   float(record["threshold"]))  # fmt: skip


# ------------------------------------------------------------------------------------------ folded BatchNorm
FOLD = "folded_batchnorm"
FOLD_L2 = 1.0
"""L2 penalty of `FoldDetector`'s logistic regression (on the summed log-loss, as scikit-learn's C=1)."""
FOLD_MIN_MODELS = 5


@dataclass
class FoldDetector:
    """A logistic regression on standardized raw weight statistics: the training zoo's networks (0) against
    the same zoo's BatchNorm networks with their BatchNorm folded into their layers (1). A network without
    BatchNorm scoring above `threshold` (the domain's quantile of the validation networks' scores, at least
    0.5) is flagged."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float

    def scores(self, raw: np.ndarray) -> np.ndarray:
        z = np.clip(_standardize(raw, self.mean, self.scale), -10.0, 10.0)
        return 1.0 / (1.0 + np.exp(-(z @ self.coef + self.intercept)))

    @classmethod
    def fit(
        cls, genuine: np.ndarray, folded: np.ndarray, validation: np.ndarray, quantile: float
    ) -> FoldDetector | None:
        """None when there are fewer than `FOLD_MIN_MODELS` of either kind."""
        genuine, folded = np.asarray(genuine, dtype=np.float64), np.asarray(folded, dtype=np.float64)
        if len(genuine) < FOLD_MIN_MODELS or len(folded) < FOLD_MIN_MODELS:
            return None
        x = np.concatenate([genuine, folded])
        finite = np.isfinite(x).all(axis=1)
        y = np.concatenate([np.zeros(len(genuine)), np.ones(len(folded))])[finite]
        mean, scale = _standardization(x[finite])
        z = torch.from_numpy(np.clip(_standardize(x[finite], mean, scale), -10.0, 10.0))
        target = torch.from_numpy(y)
        w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            opt.zero_grad()
            value = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, target, reduction="sum")
            value = value + 0.5 * FOLD_L2 * (w * w).sum()
            value.backward()
            return value

        with torch.enable_grad():
            opt.step(loss)
        detector = cls(mean, scale, w.detach().numpy().copy(), float(b.detach()), 0.5)
        if len(validation):
            held = detector.scores(validation)
            detector.threshold = max(0.5, float(np.quantile(held, quantile, method="higher")))
        return detector

    def arrays(self) -> dict[str, torch.Tensor]:
        return {
            f"{FOLD}.{key}": torch.from_numpy(np.ascontiguousarray(getattr(self, key), dtype=np.float64))
            for key in ("mean", "scale", "coef")
        }

    @classmethod
    def from_saved(cls, record: Mapping[str, Any], arrays: Mapping[str, torch.Tensor]) -> FoldDetector:
        def get(key: str) -> np.ndarray:
            return arrays[f"{FOLD}.{key}"].numpy().astype(np.float64)

        return cls(
            get("mean"), get("scale"), get("coef"), float(record["intercept"]), float(record["threshold"])
        )


# ------------------------------------------------------------------------------------------ the domain
@dataclass
class DomainCheck:
    """Whether one network lies in a head's applicability domain, and why not (`reasons`)."""

    in_domain: bool
    reasons: list[str] = field(default_factory=list)
    architecture: dict[str, Any] = field(default_factory=dict)
    distances: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per space: ``distance``, ``threshold``, ``percentile``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_domain": self.in_domain,
            "reasons": list(self.reasons),
            "architecture": self.architecture,
            **self.distances,
        }


@dataclass
class ApplicabilityDomain:
    """The domain of a head (see the module docs): architecture ranges and k-NN distance spaces."""

    architecture: ArchitectureRange
    spaces: dict[str, KnnSpace]
    quantile: float = DEFAULT_QUANTILE
    summary: dict[str, Any] = field(default_factory=dict)
    """Shares of the validation and test models in the domain (filled by the trainer)."""
    fold: FoldDetector | None = None
    """Flags networks that look BatchNorm-folded (needs ``raw_statistics`` among the checked features)."""

    def check(self, archs: Sequence[Architecture], features: Mapping[str, np.ndarray]) -> list[DomainCheck]:
        """One `DomainCheck` per network; `features` maps each space name to its ``[N, F]`` features."""
        distances = {name: space.distances(features[name]) for name, space in self.spaces.items()}
        fold = None
        if self.fold is not None and features.get("raw_statistics") is not None:
            fold = self.fold.scores(features["raw_statistics"])
        out = []
        for i, arch in enumerate(archs):
            reasons = [f"architecture: {p}" for p in self.architecture.problems(arch)]
            per_space = {}
            for name, space in self.spaces.items():
                d = float(distances[name][i])
                pct = space.percentile(d)
                per_space[name] = {"distance": d, "threshold": space.threshold, "percentile": pct}
                if d > space.threshold:
                    what = "weight statistics" if name == "statistics" else "encoder representation"
                    reasons.append(
                        f"{what}: k-NN distance {d:.3g} at the {_ordinal(pct)} percentile of held-out "
                        f"in-distribution distances, {d / space.threshold:.3g}x the threshold "
                        f"{space.threshold:.3g}"
                    )
            if fold is not None and self.fold is not None and "batchnorm" not in arch.kinds:
                score = float(fold[i])
                per_space[FOLD] = {"score": score, "threshold": self.fold.threshold}
                if score > self.fold.threshold:
                    reasons.append(
                        f"folded BatchNorm: its weights look like a training network's with BatchNorm folded "
                        f"into its layers (score {score:.3g} > {self.fold.threshold:.3g}), which the head "
                        "was not trained on"
                    )
            out.append(DomainCheck(not reasons, reasons, arch.to_dict(), per_space))
        return out

    def to_record(self) -> dict[str, Any]:
        return {
            "quantile": self.quantile,
            "architecture": self.architecture.to_record(),
            "spaces": {
                name: {"k": s.k, "threshold": s.threshold, "n_train": len(s.train), "dim": s.train.shape[1]}
                for name, s in self.spaces.items()
            },
            "summary": self.summary,
            "fold": None
            if self.fold is None
            else {"intercept": self.fold.intercept, "threshold": self.fold.threshold},
        }

    def arrays(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for space in self.spaces.values():
            out.update(space.arrays())
        if self.fold is not None:
            out.update(self.fold.arrays())
        return out

    @classmethod
    def from_saved(cls, record: Mapping[str, Any], arrays: Mapping[str, torch.Tensor]) -> ApplicabilityDomain:
        spaces = {
            str(name): KnnSpace.from_saved(str(name), info, arrays) for name, info in record["spaces"].items()
        }
        fold = record.get("fold")
        return cls(
            ArchitectureRange.from_record(record["architecture"]),
            spaces,
            float(record["quantile"]),
            dict(record.get("summary") or {}),
            FoldDetector.from_saved(fold, arrays) if fold else None,
        )


def space_quantile(quantile: float, n_spaces: int) -> float:
    """Each distance space's threshold quantile for a domain whose checks together pass `quantile` of the
    in-distribution networks (Bonferroni: ``1 - (1 - quantile) / n_spaces``)."""
    return 1.0 - (1.0 - quantile) / max(1, n_spaces)


def fit_domain(
    train_archs: Sequence[Architecture],
    train: Mapping[str, np.ndarray],
    validation: Mapping[str, np.ndarray],
    *,
    quantile: float = DEFAULT_QUANTILE,
    k: int = DEFAULT_K,
    tasks: bool = False,
    folded: np.ndarray | None = None,
    max_models: int = MAX_STORED_MODELS,
) -> ApplicabilityDomain:
    """The applicability domain of a head trained on these models (module docs). `train` and `validation`
    map each space name (``statistics``, ``representation``) to its ``[N, F]`` features. With `tasks`
    (heads whose target depends on the data, such as the accuracy) a network's input and output sizes
    must also match a training model's (`ArchitectureRange.tasks`). With ``raw_statistics`` in both and
    `folded` (the raw statistics of the train split's BatchNorm networks, folded) the domain also gets a
    `FoldDetector`. The distance spaces keep at most `max_models` training networks (`MAX_STORED_MODELS`)."""
    if not 0.5 <= quantile < 1.0:
        raise InvalidInputError(f"the domain quantile must be in [0.5, 1), got {quantile}")
    names = [name for name in SPACES if name in train]
    per_space = space_quantile(quantile, len(names))
    n = len(train[names[0]]) if names else 0
    keep = np.sort(np.random.default_rng(0).permutation(n)[:max_models]) if n > max_models else slice(None)
    spaces = {
        name: KnnSpace.fit(name, train[name][keep], validation.get(name, np.empty((0, 0))), k, per_space)
        for name in names
    }
    fold = None
    if folded is not None and train.get("raw_statistics") is not None:
        held = validation.get("raw_statistics")
        held = np.empty((0, folded.shape[1])) if held is None else held
        fold = FoldDetector.fit(train["raw_statistics"], folded, held, per_space)
    return ApplicabilityDomain(ArchitectureRange.fit(train_archs, tasks=tasks), spaces, quantile, fold=fold)


__all__ = [
    "CLIP",
    "MAX_STORED_MODELS",
    "SPACES",
    "ApplicabilityDomain",
    "Architecture",
    "ArchitectureRange",
    "DomainCheck",
    "FoldDetector",
    "KnnSpace",
    "architecture",
    "fit_domain",
    "held_out_distances",
    "space_quantile",
]
