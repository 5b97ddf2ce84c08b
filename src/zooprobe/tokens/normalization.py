"""Zoo-level standardization statistics for weight tokens.

Why zoo-level: standardizing each model by its own mean/std erases the weight *scale*, which carries much
of the signal about training hyperparameters and accuracy (field notes: R² 0.51 -> 0.44 when done per
model). Statistics are therefore accumulated over a whole zoo and then applied identically to every model,
including models seen only at inference time.

Why three levels of keys: zoos mix architectures, so a tensor name (`body.0.weight`) seen during fitting
gives the most specific statistics, but an unseen name must still be normalized sensibly. Each tensor
updates

- a *name* key ``name:<kind>:<tensor name>`` (the kind is part of the key because in a mixed zoo the same
  name can be a conv kernel in one architecture and a linear matrix in another, with different scales),
- a *kind* key ``kind:<kind>`` (e.g. ``kind:conv.weight``, ``kind:bn.running_var``), and
- the ``global`` key.

Lookup falls back name -> kind -> global -> identity (mean 0, std 1) whenever a key has too few values or a
(near-)zero spread, e.g. BN running variances that were never updated and are all exactly one.

Why streaming: a zoo does not fit in memory. Each tensor is reduced to (count, mean, M2) in float64 and
merged with Chan et al.'s parallel update, which is exact up to float64 rounding and stable even when means
are large relative to the spread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

GLOBAL_KEY = "global"
MAX_ABS_MEAN = 1e8
"""Largest magnitude of a stored mean: weights of trained networks are nowhere near it; a bigger mean in a
config.json is corruption or tampering, and subtracting it would wipe out the weights in float32."""
STD_RANGE = (1e-30, 1e8)
"""Smallest and largest valid stored standard deviation (exactly 0, for a constant tensor, is valid too).
Dividing by a std outside it turns every token into noise or into (almost) zero."""


def name_key(kind: str, name: str) -> str:
    """Statistics key of one tensor name of one kind."""
    return f"name:{kind}:{name}"


def kind_key(kind: str) -> str:
    """Statistics key shared by all tensors of one kind (e.g. ``conv.weight``)."""
    return f"kind:{kind}"


@dataclass
class RunningMoments:
    """Count, mean and sum of squared deviations (M2) of a stream of values, in float64."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def merge(self, count: int, mean: float, m2: float) -> None:
        """Merge the moments of another batch of values (Chan et al. parallel update)."""
        if count <= 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total

    @property
    def std(self) -> float:
        """Population standard deviation (0 for fewer than one value)."""
        if self.count == 0:
            return 0.0
        return math.sqrt(max(self.m2, 0.0) / self.count)


def tensor_moments(tensor: torch.Tensor) -> tuple[int, float, float]:
    """(count, mean, M2) of all elements of `tensor`, computed in float64 with vectorised ops."""
    count = tensor.numel()
    if count == 0:
        return 0, 0.0, 0.0
    values = tensor.detach().to(torch.float64)
    var, mean = torch.var_mean(values, correction=0)
    return count, float(mean), float(var) * count


def _moments_problem(m: RunningMoments) -> str | None:
    """Why stored moments cannot normalize weights (see `MAX_ABS_MEAN`, `STD_RANGE`), or None."""
    if m.m2 < 0:
        return f"m2 (sum of squared deviations) is {m.m2!r}, it must be >= 0"
    if abs(m.mean) > MAX_ABS_MEAN:
        return f"mean {m.mean!r} is outside [-{MAX_ABS_MEAN:g}, {MAX_ABS_MEAN:g}]"
    std = m.std
    if not math.isfinite(std):
        return f"std (from m2 {m.m2!r} and count {m.count}) is not finite"
    if std != 0 and not STD_RANGE[0] <= std <= STD_RANGE[1]:
        return f"std {std:g} (from m2 and count) is outside [{STD_RANGE[0]:g}, {STD_RANGE[1]:g}] and not 0"
    return None


class NormalizationStats:
    """Mergeable per-key moments plus the fallback rule that turns them into (mean, std) per tensor."""

    def __init__(self, moments: Mapping[str, RunningMoments] | None = None) -> None:
        self.moments: dict[str, RunningMoments] = dict(moments or {})

    def update(self, name: str, kind: str, tensor: torch.Tensor) -> None:
        """Add all values of `tensor` (named `name`, of parameter kind `kind`) to its three keys."""
        count, mean, m2 = tensor_moments(tensor)
        if count == 0:
            return
        for key in (name_key(kind, name), kind_key(kind), GLOBAL_KEY):
            self.moments.setdefault(key, RunningMoments()).merge(count, mean, m2)

    def resolve(self, name: str, kind: str, *, min_count: int, eps: float) -> tuple[float, float, str]:
        """(mean, std, key used) for a tensor, falling back name -> kind -> global -> identity.

        A key is usable when it has at least `min_count` values and a std above `eps`; otherwise dividing
        by it would blow values up (or divide by zero), so the next, broader key is tried.
        """
        for key in (name_key(kind, name), kind_key(kind), GLOBAL_KEY):
            moments = self.moments.get(key)
            if moments is not None and moments.count >= min_count and moments.std > eps:
                return moments.mean, moments.std, key
        return 0.0, 1.0, "identity"

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form: key -> [count, mean, M2]; Python floats round-trip exactly through JSON."""
        return {key: [m.count, m.mean, m.m2] for key, m in sorted(self.moments.items())}

    @classmethod
    def from_dict(cls, data: object, error: type[ValueError] = ValueError) -> NormalizationStats:
        """Inverse of `to_dict`, validating every entry so a corrupt file fails with the key named."""
        if not isinstance(data, Mapping):
            raise error(f"normalization statistics: expected a mapping, got {type(data).__name__}")
        moments: dict[str, RunningMoments] = {}
        for key, entry in data.items():
            ok = (
                isinstance(key, str)
                and isinstance(entry, list | tuple)
                and len(entry) == 3
                and isinstance(entry[0], int)
                and not isinstance(entry[0], bool)
                and entry[0] >= 0
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in entry[1:])
                and all(math.isfinite(v) for v in entry[1:])
            )
            if not ok:
                raise error(
                    f"normalization statistics: entry {key!r} must be [count, mean, m2], got {entry!r}"
                )
            m = RunningMoments(int(entry[0]), float(entry[1]), float(entry[2]))
            problem = _moments_problem(m)
            if problem:
                raise error(
                    f"normalization statistics of tensor key {key!r}: {problem}; the statistics are corrupt "
                    "or were edited: restore the file or fit the statistics again (pretrain the encoder)"
                )
            moments[key] = m
        return cls(moments)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NormalizationStats) and self.moments == other.moments

    def __repr__(self) -> str:
        return f"NormalizationStats({len(self.moments)} keys)"
