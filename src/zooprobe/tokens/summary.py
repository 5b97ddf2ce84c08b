"""Per-layer summary statistics of raw weights: one "summary token" per tokenized layer.

Why: the field notes measure that statistics of weights (per-tensor mean, std, quantiles, size) carry most
of the signal about a network's accuracy and training hyperparameters, and that an encoder reading only
zoo-standardized weight tokens recovers it poorly (on the bench zoo a frozen encoder's ridge-probe R² for
test accuracy was 0.24 against 0.38 for weight statistics). So the encoder is *given* those statistics as
input: `LayerSummarizer` turns every layer of a `TokenizedModel`'s layout into one fixed-size vector that
the encoder reads as an extra token next to that layer's weight tokens.

Features of one layer (`SUMMARY_DIM` = 32 values), computed from the **raw** (un-normalized) tensors:

- for each of up to `MEMBER_SLOTS` (4) members in layout order (weight, bias; BatchNorm weight, bias,
  running_mean, running_var; ...): ``mean, std, q0, q25, q50, q75, q100`` of its values (`STAT_NAMES`;
  zeros for an absent member; members past the fourth are pooled into the last slot);
- ``log1p(values in the layer), log1p(rows), log1p(columns), number of members``.

Then every feature is standardized with **zoo-level** statistics (never per model: that erases the scale
information the statistics are there for), per layer kind (``linear``, ``conv``, ``bn``, ...) with a fallback
to all layers when a kind has too few layers or no spread, and clipped to ``±clip`` so a few diverged
models with huge weights cannot saturate the encoder. The fitted statistics are saved with the encoder
(`to_dict` / `from_dict`, strict), so encoding reuses exactly the pretraining preprocessing.

Permuting the neurons of a network (a pretraining augmentation) permutes values inside each tensor, so it
leaves every summary unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from zooprobe.core.config import check_record
from zooprobe.tokens.statistics import STAT_NAMES, value_stats_rows
from zooprobe.tokens.tokenizer import TokenizerError

MEMBER_SLOTS = 4
STRUCTURE_NAMES = ("log_numel", "log_rows", "log_cols", "n_members")
SUMMARY_DIM = MEMBER_SLOTS * len(STAT_NAMES) + len(STRUCTURE_NAMES)
SUMMARY_FORMAT_VERSION = 1
ALL_KINDS = "*"
_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
_EPS = 1e-6


def summary_feature_names() -> list[str]:
    """Names of the `SUMMARY_DIM` features, in order (e.g. ``member0.q25``, ``log_numel``)."""
    return [f"member{j}.{s}" for j in range(MEMBER_SLOTS) for s in STAT_NAMES] + list(STRUCTURE_NAMES)


def raw_layer_summaries(state_dict: Mapping[str, torch.Tensor], layout: Mapping[str, Any]) -> torch.Tensor:
    """Un-normalized summary features ``[num_layers, SUMMARY_DIM]`` (float64) of the layers in `layout`.

    `layout` is a `TokenizedModel.layout` of `state_dict`; member values are read from the state dict (raw,
    whatever normalization the tokens got).
    """
    return raw_layer_summaries_many([state_dict], layout)[0]


def raw_layer_summaries_many(
    state_dicts: Sequence[Mapping[str, torch.Tensor]], layout: Mapping[str, Any]
) -> torch.Tensor:
    """`raw_layer_summaries` ``[M, num_layers, SUMMARY_DIM]`` of M state dicts that share `layout` (same
    tensor names and shapes: one architecture), each layer's statistics computed for all M at once."""
    layers = layout["layers"]
    out = torch.zeros(len(state_dicts), len(layers), SUMMARY_DIM, dtype=torch.float64)
    width = len(STAT_NAMES)
    base = MEMBER_SLOTS * width
    for i, layer in enumerate(layers):
        members = layer["members"]
        groups: list[list[torch.Tensor]] = [[] for _ in range(MEMBER_SLOTS)]
        numel = 0
        for j, member in enumerate(members):
            name = member["name"]
            with torch.no_grad():
                values = torch.stack([sd[name] for sd in state_dicts]).reshape(len(state_dicts), -1)
            groups[min(j, MEMBER_SLOTS - 1)].append(values)
            numel += values.shape[1]
        for j, group in enumerate(groups):
            if group:
                values = group[0] if len(group) == 1 else torch.cat(group, dim=1)
                out[:, i, j * width : (j + 1) * width] = torch.from_numpy(value_stats_rows(values))
        out[:, i, base : base + 4] = torch.tensor(
            [math.log1p(numel), math.log1p(layer["rows"]), math.log1p(layer["cols"]), float(len(members))],
            dtype=torch.float64,
        )
    return out


class LayerSummarizer:
    """Computes standardized per-layer summaries; owns their zoo-level statistics (see the module docs).

    Attributes:
        moments: layer kind (or `ALL_KINDS`) -> ``[count, sum, sum of squares]`` per feature (float64).
        min_count: a kind needs at least this many layers to use its own statistics.
        clip: standardized values are clipped to ``[-clip, clip]``.
    """

    def __init__(
        self,
        moments: Mapping[str, torch.Tensor] | None = None,
        min_count: int = 8,
        clip: float = 8.0,
    ) -> None:
        if min_count < 1 or not (clip > 0 and math.isfinite(clip)):
            raise TokenizerError(f"LayerSummarizer: need min_count >= 1, clip > 0; got {min_count}, {clip}")
        self.moments: dict[str, torch.Tensor] = {k: v.to(torch.float64) for k, v in (moments or {}).items()}
        self.min_count = int(min_count)
        self.clip = float(clip)

    def __repr__(self) -> str:
        return f"LayerSummarizer({sorted(self.moments)}, min_count={self.min_count}, clip={self.clip})"

    @property
    def fitted(self) -> bool:
        return ALL_KINDS in self.moments

    # -- fitting ----------------------------------------------------------------------------------------
    def partial_fit(self, raw: torch.Tensor, kinds: list[str]) -> None:
        """Add the raw summaries of one model's layers (`raw_layer_summaries`, with their layer kinds)."""
        if raw.shape != (len(kinds), SUMMARY_DIM):
            raise TokenizerError(f"partial_fit: raw summaries {tuple(raw.shape)} for {len(kinds)} layers")
        raw = raw.to(torch.float64)
        for i, kind in enumerate(kinds):
            for key in (kind, ALL_KINDS):
                acc = self.moments.setdefault(key, torch.zeros(3, SUMMARY_DIM, dtype=torch.float64))
                acc[0] += 1
                acc[1] += raw[i]
                acc[2] += raw[i] ** 2

    def fit(self, items: Iterable[tuple[torch.Tensor, list[str]]]) -> LayerSummarizer:
        """Fit (replacing any previous fit) on ``(raw summaries, layer kinds)`` of a zoo's models."""
        self.moments = {}
        for raw, kinds in items:
            self.partial_fit(raw, kinds)
        if not self.fitted:
            raise TokenizerError("LayerSummarizer.fit: no layers given")
        return self

    def _mean_std(self, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        mean_all, std_all = _moments_to_mean_std(self.moments[ALL_KINDS])
        std_all = torch.where(_flat(mean_all, std_all), torch.ones_like(std_all), std_all)  # constant
        acc = self.moments.get(kind)
        if acc is None or float(acc[0, 0]) < self.min_count:
            return mean_all, std_all
        mean, std = _moments_to_mean_std(acc)
        flat = _flat(mean, std)  # no spread within this kind: use the zoo-wide statistics for that feature
        return torch.where(flat, mean_all, mean), torch.where(flat, std_all, std)

    # -- use --------------------------------------------------------------------------------------------
    def normalize(self, raw: torch.Tensor, kinds: list[str]) -> torch.Tensor:
        """Standardized, clipped summaries ``[num_layers, SUMMARY_DIM]`` (float32) of raw summaries."""
        return self.normalize_many(raw[None], kinds)[0]

    def normalize_many(self, raw: torch.Tensor, kinds: list[str]) -> torch.Tensor:
        """`normalize` of ``[M, num_layers, SUMMARY_DIM]`` raw summaries of M models with the same layers."""
        if not self.fitted:
            raise TokenizerError("LayerSummarizer: not fitted (call fit on the pretraining zoo first)")
        if raw.ndim != 3 or raw.shape[1] != len(kinds):
            raise TokenizerError(f"normalize: raw summaries {tuple(raw.shape)} for {len(kinds)} layers")
        by_kind = {kind: self._mean_std(kind) for kind in set(kinds)}
        mean = torch.stack([by_kind[kind][0] for kind in kinds]) if kinds else torch.zeros(0, SUMMARY_DIM)
        std = torch.stack([by_kind[kind][1] for kind in kinds]) if kinds else torch.ones(0, SUMMARY_DIM)
        out = (raw.to(torch.float64) - mean.to(torch.float64)) / std.to(torch.float64)
        return out.clamp(-self.clip, self.clip).to(torch.float32)

    def summarize(self, state_dict: Mapping[str, torch.Tensor], layout: Mapping[str, Any]) -> torch.Tensor:
        """Standardized summaries of the layers of `layout` (a `TokenizedModel.layout` of `state_dict`)."""
        return self.summarize_many([state_dict], layout)[0]

    def summarize_many(
        self, state_dicts: Sequence[Mapping[str, torch.Tensor]], layout: Mapping[str, Any]
    ) -> torch.Tensor:
        """`summarize` ``[M, num_layers, SUMMARY_DIM]`` of M state dicts that share `layout`."""
        kinds = [layer["kind"] for layer in layout["layers"]]
        return self.normalize_many(raw_layer_summaries_many(state_dicts, layout), kinds)

    # -- serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; `from_dict` restores an identical summarizer (floats round-trip exactly)."""
        return {
            "format_version": SUMMARY_FORMAT_VERSION,
            "features": summary_feature_names(),
            "min_count": self.min_count,
            "clip": self.clip,
            "moments": {k: v.tolist() for k, v in sorted(self.moments.items())},
        }

    @classmethod
    def from_dict(cls, data: object) -> LayerSummarizer:
        """Strict inverse of `to_dict`: a missing/unknown field or malformed entry raises `TokenizerError`."""
        fields = ("format_version", "features", "min_count", "clip", "moments")
        data = check_record(
            data, "LayerSummarizer", TokenizerError, fields=fields, exact=True, version=SUMMARY_FORMAT_VERSION
        )
        if data["features"] != summary_feature_names():
            raise TokenizerError("LayerSummarizer.features: not the feature set this zooprobe computes")
        min_count, clip = data["min_count"], data["clip"]
        if isinstance(min_count, bool) or not isinstance(min_count, int):
            raise TokenizerError(f"LayerSummarizer.min_count: expected an int, got {min_count!r}")
        if isinstance(clip, bool) or not isinstance(clip, int | float):
            raise TokenizerError(f"LayerSummarizer.clip: expected a float, got {clip!r}")
        moments = data["moments"]
        if not isinstance(moments, Mapping) or ALL_KINDS not in moments:
            raise TokenizerError(f"LayerSummarizer.moments: expected a mapping with key {ALL_KINDS!r}")
        parsed: dict[str, torch.Tensor] = {}
        for key, value in moments.items():
            try:
                tensor = torch.tensor(value, dtype=torch.float64)
            except (TypeError, ValueError) as e:
                raise TokenizerError(f"LayerSummarizer.moments[{key!r}]: not a numeric table ({e})") from e
            if tensor.shape != (3, SUMMARY_DIM) or not bool(torch.isfinite(tensor).all()):
                raise TokenizerError(
                    f"LayerSummarizer.moments[{key!r}]: expected finite [3, {SUMMARY_DIM}], "
                    f"got {tuple(tensor.shape)}"
                )
            parsed[str(key)] = tensor
        return cls(parsed, min_count=min_count, clip=float(clip))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LayerSummarizer)
            and self.min_count == other.min_count
            and self.clip == other.clip
            and self.moments.keys() == other.moments.keys()
            and all(torch.equal(v, other.moments[k]) for k, v in self.moments.items())
        )


def _flat(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Features with no spread (up to the float64 rounding of sum-of-squares moments)."""
    return std <= _EPS * (1.0 + mean.abs())


def _moments_to_mean_std(acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    count = acc[0].clamp_min(1.0)
    mean = acc[1] / count
    var = (acc[2] / count - mean**2).clamp_min(0.0)
    return mean, var.sqrt()


__all__ = [
    "ALL_KINDS",
    "MEMBER_SLOTS",
    "STAT_NAMES",
    "SUMMARY_DIM",
    "LayerSummarizer",
    "collate_summaries",
    "raw_layer_summaries",
    "raw_layer_summaries_many",
    "summary_feature_names",
]


def collate_summaries(summaries: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pad per-model summaries (each ``[num_layers_i, D]``) into one batch.

    Returns ``summaries`` [B, S, D] float32 (zeros in padding), ``summary_layers`` [B, S] int64 (the layer
    index of each summary: its row number) and ``summary_attention`` [B, S] bool (real summaries).
    """
    if not summaries:
        raise TokenizerError("collate_summaries: empty batch")
    dim = int(summaries[0].shape[-1])
    longest = max(int(s.shape[0]) for s in summaries)
    device = summaries[0].device
    out = torch.zeros(len(summaries), longest, dim, dtype=torch.float32, device=device)
    attention = torch.zeros(len(summaries), longest, dtype=torch.bool, device=device)
    for i, s in enumerate(summaries):
        out[i, : s.shape[0]] = s
        attention[i, : s.shape[0]] = True
    layers = torch.arange(longest, device=device).expand(len(summaries), longest).clone()
    return {"summaries": out, "summary_layers": layers * attention, "summary_attention": attention}
