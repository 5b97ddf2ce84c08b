"""Weight-statistics features: a fixed-length vector per state dict, for any mix of architectures.

The strongest simple baseline for predicting a network's properties from its weights (Unterthiner et al.
2020) describes every layer's kernel and bias separately by their mean, standard deviation and percentiles
{0, 25, 50, 75, 100}, and feeds those to gradient boosting. Their zoos have one architecture, so every
layer has a column. A zoo of mixed architectures (MLPs of 1-4 hidden layers, CNNs, with or without
BatchNorm/LayerNorm, different widths) has no common layer list, so here tensors are aligned by *role*:
the first and the last layer, an aggregate of the layers in between, and pools by tensor kind.

Tensor roles (in the state dict's order, which is the modules' registration order):

- **main layer**: a floating tensor of >= 2 dims whose name ends in ``weight`` (linear, conv, embedding,
  attention projections), with its bias: the tensor of the same name ending in ``bias`` instead of
  ``weight`` (``fc.weight`` -> ``fc.bias``, ``in_proj_weight`` -> ``in_proj_bias``) when it is a 1-D
  floating tensor. A main layer whose weight has >= 3 dims is a *convolution*.
- **norm tensors**: the remaining 1-D floating tensors whose name ends in ``weight`` (norm scales) or
  ``bias`` (norm shifts): BatchNorm/LayerNorm/GroupNorm affine parameters.
- **running statistics**: tensors named ``...running_mean`` / ``...running_var`` (BatchNorm buffers).
- integer and boolean tensors (``num_batches_tracked``) are ignored; other floating tensors (a ``cls_token``,
  a positional table not named ``weight``) enter only the global pool.

Non-finite values (diverged training) are left out of every statistic and counted in
``nonfinite_fraction``; a block whose tensors are missing or empty is all zeros and has an indicator
feature, so a feature is never NaN.

``s(x)`` = [mean, std, q0, q25, q50, q75, q100] of the values of x: population std (ddof 0), linearly
interpolated percentiles (``numpy.quantile``), zeros when x is empty.

Per-layer block (19 values, prefix ``first.``, ``last.``, ``middle.``):
  ``w.{s}`` s(weight) (7), ``w.scaled_std`` = std * sqrt(fan_in) (the init-invariant scale: 1 for
  LeCun-normal init whatever the width), ``w.log_fan_in``, ``w.log_fan_out`` (natural log;
  fan_in = prod(shape[1:]), fan_out = shape[0]), ``b.{s}`` s(bias) (7, zeros without bias),
  ``bias_frac`` (1 if the layer has a bias; for ``middle``, the fraction of middle layers with one),
  ``present``.
  ``first`` is the first main layer; ``last`` the last one when there are >= 2; ``middle`` the mean of
  the per-layer values of all main layers strictly between them (bias statistics averaged over the
  middle layers that have a bias), present when there are >= 3 main layers.

Blocks, in order (131 features):

==================  =====  ========================================================================
block               count  content
==================  =====  ========================================================================
first.*             19     first main layer
last.*              19     last main layer
middle.*            19     mean over middle main layers
main.*              15     ``main.w.{s}`` all main-layer weights pooled, ``main.b.{s}`` all main-layer
                           biases pooled, ``main.bias_frac``
norm.*              16     ``norm.w.{s}``, ``norm.b.{s}`` norm scales / shifts pooled, ``norm.w.present``,
                           ``norm.b.present``
bn.*                15     ``bn.running_mean.{s}``, ``bn.running_var.{s}`` pooled, ``bn.present``
layers.*            12     across main layers, [mean, std, min, max] of the per-layer weight std
                           (``layers.w_std.*``), scaled std (``layers.w_scaled_std.*``) and weight
                           mean (``layers.w_mean.*``): the depth profile in a fixed size
global              16     ``all.{s}`` all floating values pooled (running statistics excluded: they
                           are activation statistics with their own block), ``all.log_numel``
                           (ln(1 + count)), ``main.log_numel``, ``n_main_layers``, ``n_conv_layers``,
                           ``n_norm_layers`` (modules owning norm tensors), ``conv_param_fraction``
                           (share of main-layer parameters in convolutions), ``has_norm`` (norm
                           tensors or running statistics present), ``has_running_stats``,
                           ``nonfinite_fraction`` (of all floating values)
==================  =====  ========================================================================

This is the one home of weight statistics in zooprobe: the baselines (``stats+gbm``), the heads'
statistics input (`HeadConfig.statistics`), the encoder benchmark's probe and the encoder's summary tokens
(`value_stats`) all read them from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass

import numpy as np
import torch

from zooprobe.core.progress import Progress
from zooprobe.core.state_dicts import RUNNING_STATS, bias_name

STAT_NAMES: tuple[str, ...] = ("mean", "std", "q0", "q25", "q50", "q75", "q100")
_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
_N_STATS = len(STAT_NAMES)
_PROFILE_STATS = ("mean", "std", "min", "max")


# ---------------------------------------------------------------------------------------------- names
def _stat_names(prefix: str) -> list[str]:
    return [f"{prefix}.{s}" for s in STAT_NAMES]


def _layer_block_names(prefix: str) -> list[str]:
    return [
        *_stat_names(f"{prefix}.w"),
        f"{prefix}.w.scaled_std",
        f"{prefix}.w.log_fan_in",
        f"{prefix}.w.log_fan_out",
        *_stat_names(f"{prefix}.b"),
        f"{prefix}.bias_frac",
        f"{prefix}.present",
    ]


def _build_names() -> tuple[str, ...]:
    names: list[str] = []
    for prefix in ("first", "last", "middle"):
        names += _layer_block_names(prefix)
    names += [*_stat_names("main.w"), *_stat_names("main.b"), "main.bias_frac"]
    names += [*_stat_names("norm.w"), *_stat_names("norm.b"), "norm.w.present", "norm.b.present"]
    names += [*_stat_names("bn.running_mean"), *_stat_names("bn.running_var"), "bn.present"]
    for quantity in ("w_std", "w_scaled_std", "w_mean"):
        names += [f"layers.{quantity}.{s}" for s in _PROFILE_STATS]
    names += [
        *_stat_names("all"),
        "all.log_numel",
        "main.log_numel",
        "n_main_layers",
        "n_conv_layers",
        "n_norm_layers",
        "conv_param_fraction",
        "has_norm",
        "has_running_stats",
        "nonfinite_fraction",
    ]
    return tuple(names)


_NAMES = _build_names()
N_FEATURES = len(_NAMES)
_LAYER_BLOCK = len(_layer_block_names("x"))


def feature_names() -> list[str]:
    """Names of the `weight_statistics_features` values, in order (see the module docs)."""
    return list(_NAMES)


# ---------------------------------------------------------------------------------------------- stats
def value_stats(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """s(x) = ``mean, std, q0, q25, q50, q75, q100`` of all values (float64; population std; quantiles
    interpolated linearly, as numpy's default); zeros for no values. The one statistic of a set of weights
    that the features here and the encoder's per-layer summary tokens (`zooprobe.tokens.summary`) share;
    `value_stats_rows` computes it for many sets at once."""
    return value_stats_rows(_as_float64(values).reshape(1, -1))[0]


def value_stats_rows(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """`value_stats` of every row of ``values`` ``[M, n]`` at once: ``[M, 7]`` float64 (zeros when n = 0).

    One vectorized pass instead of one call per set: tokenizing a chunk of same-architecture models computes
    each layer's summaries for all of them together (`zooprobe.tokens.summary.raw_layer_summaries_many`).
    """
    x = _as_float64(values)
    if x.ndim != 2:
        raise ValueError(f"value_stats_rows: expected a 2-D array [M, n], got shape {x.shape}")
    n = x.shape[1]
    if n == 0:
        return np.zeros((x.shape[0], _N_STATS))
    # np.quantile's "linear" method without its per-call overhead (it dominated tokenizing small layers):
    # the order statistics around q * (n - 1), interpolated with numpy's own two-sided lerp.
    pos = np.asarray(_QUANTILES) * (n - 1)
    low = np.floor(pos).astype(np.intp)
    high = np.minimum(low + 1, n - 1)
    gamma = pos - low
    part = np.partition(x, np.unique(np.concatenate([low, high])), axis=1)
    a, b = part[:, low], part[:, high]
    diff = b - a
    quantiles = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    return np.concatenate([x.mean(axis=1)[:, None], x.std(axis=1)[:, None], quantiles], axis=1)


def _as_float64(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def _finite_values(t: torch.Tensor) -> tuple[np.ndarray, int]:
    """Flattened float64 values of a tensor without its non-finite entries, and how many were dropped."""
    x = t.detach().reshape(-1).to(device="cpu", dtype=torch.float64).numpy()
    finite = np.isfinite(x)
    if finite.all():
        return x, 0
    return x[finite], int(x.size - finite.sum())


def _pooled_stats(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(_N_STATS)
    return value_stats(parts[0] if len(parts) == 1 else np.concatenate(parts))


def _profile(values: list[float]) -> np.ndarray:
    if not values:
        return np.zeros(len(_PROFILE_STATS))
    v = np.asarray(values, dtype=np.float64)
    return np.array([v.mean(), v.std(), v.min(), v.max()])


@dataclass
class _Layer:
    weight: np.ndarray
    bias: np.ndarray | None
    fan_in: int
    fan_out: int
    numel: int
    is_conv: bool

    def block(self) -> np.ndarray:
        """The per-layer values without ``present`` (18): s(w), scaled std, fans, s(b), has bias."""
        w = value_stats(self.weight)
        scaled = w[1] * math.sqrt(max(self.fan_in, 1))
        b = value_stats(self.bias) if self.bias is not None else np.zeros(_N_STATS)
        return np.concatenate(
            [
                w,
                [scaled, math.log(max(self.fan_in, 1)), math.log(max(self.fan_out, 1))],
                b,
                [1.0 if self.bias is not None else 0.0],
            ]
        )


def _layer_block(layer: _Layer | None) -> np.ndarray:
    if layer is None:
        return np.zeros(_LAYER_BLOCK)
    return np.concatenate([layer.block(), [1.0]])


def _middle_block(layers: list[_Layer]) -> np.ndarray:
    if not layers:
        return np.zeros(_LAYER_BLOCK)
    blocks = np.stack([layer.block() for layer in layers])
    out = blocks.mean(axis=0)
    bias_slice = slice(_N_STATS + 3, 2 * _N_STATS + 3)
    with_bias = blocks[:, -1] > 0
    out[bias_slice] = blocks[with_bias, bias_slice].mean(axis=0) if with_bias.any() else 0.0
    return np.concatenate([out, [1.0]])


# ---------------------------------------------------------------------------------------------- features
def weight_statistics_features(state_dict: Mapping[str, torch.Tensor]) -> np.ndarray:
    """The fixed-length weight-statistics vector (float64, `N_FEATURES` values) of one state dict.

    Layout and tensor roles are in the module docs; `feature_names` names every value.
    """
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    values: dict[str, np.ndarray] = {}
    n_total = 0
    n_nonfinite = 0
    for name, t in tensors.items():
        values[name], dropped = _finite_values(t)
        n_total += t.numel()
        n_nonfinite += dropped

    layers: list[_Layer] = []
    used: set[str] = set()
    for name, t in tensors.items():
        bias_key = bias_name(name)
        if t.ndim < 2 or bias_key is None:
            continue
        bias_t = tensors.get(bias_key)
        has_bias = bias_t is not None and bias_t.ndim == 1
        used.add(name)
        if has_bias:
            used.add(bias_key)
        fan_in = math.prod(t.shape[1:])
        layers.append(
            _Layer(
                weight=values[name],
                bias=values[bias_key] if has_bias else None,
                fan_in=fan_in,
                fan_out=int(t.shape[0]),
                numel=t.numel() + (bias_t.numel() if has_bias and bias_t is not None else 0),
                is_conv=t.ndim >= 3,
            )
        )

    norm_w: list[np.ndarray] = []
    norm_b: list[np.ndarray] = []
    norm_modules: set[str] = set()
    running_mean: list[np.ndarray] = []
    running_var: list[np.ndarray] = []
    pooled: list[np.ndarray] = []
    for name, t in tensors.items():
        if name.endswith(RUNNING_STATS[0]):
            running_mean.append(values[name])
            continue
        if name.endswith(RUNNING_STATS[1]):
            running_var.append(values[name])
            continue
        pooled.append(values[name])
        if name in used or t.ndim != 1:
            continue
        if name.endswith("weight"):
            norm_w.append(values[name])
            norm_modules.add(name[: -len("weight")])
        elif name.endswith("bias"):
            norm_b.append(values[name])
            norm_modules.add(name[: -len("bias")])

    first = _layer_block(layers[0] if layers else None)
    last = _layer_block(layers[-1] if len(layers) >= 2 else None)
    middle = _middle_block(layers[1:-1])

    biases = [layer.bias for layer in layers if layer.bias is not None]
    bias_frac = len(biases) / len(layers) if layers else 0.0
    main = np.concatenate(
        [_pooled_stats([layer.weight for layer in layers]), _pooled_stats(biases), [bias_frac]]
    )
    norms = np.concatenate(
        [_pooled_stats(norm_w), _pooled_stats(norm_b), [float(bool(norm_w)), float(bool(norm_b))]]
    )
    has_running = bool(running_mean or running_var)
    running = np.concatenate([_pooled_stats(running_mean), _pooled_stats(running_var), [float(has_running)]])

    w_stds = [float(layer.weight.std()) if layer.weight.size else 0.0 for layer in layers]
    w_means = [float(layer.weight.mean()) if layer.weight.size else 0.0 for layer in layers]
    scaled = [s * math.sqrt(max(layer.fan_in, 1)) for s, layer in zip(w_stds, layers, strict=True)]
    profile = np.concatenate([_profile(w_stds), _profile(scaled), _profile(w_means)])

    n_main = sum(layer.numel for layer in layers)
    n_conv_params = sum(layer.numel for layer in layers if layer.is_conv)
    n_pooled = sum(t.numel() for n, t in tensors.items() if not n.endswith(("running_mean", "running_var")))
    global_ = np.concatenate(
        [
            _pooled_stats(pooled),
            [
                math.log1p(n_pooled),
                math.log1p(n_main),
                len(layers),
                sum(layer.is_conv for layer in layers),
                len(norm_modules),
                n_conv_params / n_main if n_main else 0.0,
                float(bool(norm_w or norm_b) or has_running),
                float(has_running),
                n_nonfinite / n_total if n_total else 0.0,
            ],
        ]
    )
    out = np.concatenate([first, last, middle, main, norms, running, profile, global_]).astype(np.float64)
    assert out.shape == (N_FEATURES,), out.shape
    # Finite inputs give finite statistics; guard against overflow of huge (but finite) weights.
    return np.nan_to_num(out, nan=0.0, posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max)


def featurize(state_dicts: Iterable[Mapping[str, torch.Tensor]], progress: bool = False) -> np.ndarray:
    """`weight_statistics_features` of every state dict, stacked: float64 ``[N, N_FEATURES]``.

    ``progress`` draws a progress bar on stderr (the total is shown when ``state_dicts`` has a length).
    An empty input gives a ``[0, N_FEATURES]`` array.
    """
    total = len(state_dicts) if isinstance(state_dicts, Sized) else 0
    rows: list[np.ndarray] = []
    with Progress("weight statistics", total, unit="models", enabled=progress and total > 0) as bar:
        for sd in state_dicts:
            rows.append(weight_statistics_features(sd))
            bar.advance()
    if not rows:
        return np.zeros((0, N_FEATURES), dtype=np.float64)
    return np.stack(rows).astype(np.float64, copy=False)


__all__ = [
    "N_FEATURES",
    "STAT_NAMES",
    "feature_names",
    "featurize",
    "value_stats",
    "value_stats_rows",
    "weight_statistics_features",
]
