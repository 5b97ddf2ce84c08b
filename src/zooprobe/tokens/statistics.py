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
from collections.abc import Callable, Iterable, Mapping, Sized
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
    native = _as_float32_or_64(values)
    x = native.astype(np.float64, copy=False)
    if x.ndim != 2:
        raise ValueError(f"value_stats_rows: expected a 2-D array [M, n], got shape {x.shape}")
    n = x.shape[1]
    if n == 0:
        return np.zeros((x.shape[0], _N_STATS))
    # np.quantile's "linear" method without its per-call overhead (it dominated tokenizing small layers):
    # the order statistics around q * (n - 1), interpolated with numpy's own two-sided lerp. The order
    # statistics come from a full sort in the values' own precision (exact: sorting only moves values),
    # which numpy's SIMD sort does several times faster than np.partition on float64.
    pos = np.asarray(_QUANTILES) * (n - 1)
    low = np.floor(pos).astype(np.intp)
    high = np.minimum(low + 1, n - 1)
    gamma = pos - low
    ordered = np.sort(native, axis=1)
    a, b = ordered[:, low].astype(np.float64), ordered[:, high].astype(np.float64)
    diff = b - a
    quantiles = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    return np.concatenate([x.mean(axis=1)[:, None], x.std(axis=1)[:, None], quantiles], axis=1)


def _as_float32_or_64(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """The values as a numpy array of float32 when that holds them exactly (float32, float16, bfloat16),
    else float64."""
    if isinstance(values, torch.Tensor):
        t = values.detach().to(device="cpu")
        exact32 = t.dtype in (torch.float32, torch.float16, torch.bfloat16)
        return t.to(torch.float32 if exact32 else torch.float64).numpy()
    x = np.asarray(values)
    return (
        x
        if x.dtype in (np.float32, np.float64)
        else x.astype(np.float32 if x.dtype == np.float16 else np.float64)
    )


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


# ---------------------------------------------------------------------------------------------- features
@dataclass(frozen=True)
class _LayerPlan:
    weight: str
    bias: str | None
    fan_in: int
    fan_out: int
    numel: int
    is_conv: bool


@dataclass(frozen=True)
class _Plan:
    """The role of every floating tensor of a state dict (see the module docs): the same for every state
    dict with the same tensor names and shapes, so a chunk of one architecture is planned once."""

    layers: tuple[_LayerPlan, ...]
    norm_w: tuple[str, ...]
    norm_b: tuple[str, ...]
    n_norm_modules: int
    running_mean: tuple[str, ...]
    running_var: tuple[str, ...]
    pooled: tuple[str, ...]
    n_pooled: int
    n_total: int


def _plan(shapes: Mapping[str, tuple[int, ...]]) -> _Plan:
    """Roles of the floating tensors ``name -> shape`` (in the state dict's order)."""
    layers: list[_LayerPlan] = []
    used: set[str] = set()
    for name, shape in shapes.items():
        bias_key = bias_name(name)
        if len(shape) < 2 or bias_key is None:
            continue
        bias_shape = shapes.get(bias_key)
        has_bias = bias_shape is not None and len(bias_shape) == 1
        used.add(name)
        if has_bias:
            used.add(bias_key)
        layers.append(
            _LayerPlan(
                weight=name,
                bias=bias_key if has_bias else None,
                fan_in=math.prod(shape[1:]),
                fan_out=int(shape[0]),
                numel=math.prod(shape)
                + (math.prod(bias_shape) if has_bias and bias_shape is not None else 0),
                is_conv=len(shape) >= 3,
            )
        )
    norm_w: list[str] = []
    norm_b: list[str] = []
    norm_modules: set[str] = set()
    running_mean: list[str] = []
    running_var: list[str] = []
    pooled: list[str] = []
    for name, shape in shapes.items():
        if name.endswith(RUNNING_STATS[0]):
            running_mean.append(name)
            continue
        if name.endswith(RUNNING_STATS[1]):
            running_var.append(name)
            continue
        pooled.append(name)
        if name in used or len(shape) != 1:
            continue
        if name.endswith("weight"):
            norm_w.append(name)
            norm_modules.add(name[: -len("weight")])
        elif name.endswith("bias"):
            norm_b.append(name)
            norm_modules.add(name[: -len("bias")])
    return _Plan(
        layers=tuple(layers),
        norm_w=tuple(norm_w),
        norm_b=tuple(norm_b),
        n_norm_modules=len(norm_modules),
        running_mean=tuple(running_mean),
        running_var=tuple(running_var),
        pooled=tuple(pooled),
        n_pooled=sum(math.prod(shapes[n]) for n in pooled),
        n_total=sum(math.prod(shape) for shape in shapes.values()),
    )


def _profile_rows(values: list[np.ndarray], m: int) -> np.ndarray:
    """[mean, std, min, max] across layers of a per-layer value ``[m]`` each: ``[m, 4]``."""
    if not values:
        return np.zeros((m, len(_PROFILE_STATS)))
    v = np.stack(values, axis=1)
    return np.stack([v.mean(axis=1), v.std(axis=1), v.min(axis=1), v.max(axis=1)], axis=1)


def _features_rows(
    plan: _Plan, stats: Callable[[tuple[str, ...]], np.ndarray], m: int, nonfinite: np.ndarray
) -> np.ndarray:
    """The features ``[m, N_FEATURES]`` of ``m`` state dicts of one plan. ``stats(names)`` is s(x) ``[m, 7]``
    of the named tensors' values pooled; ``nonfinite`` the count of non-finite values of each state dict."""

    def s(names: tuple[str, ...]) -> np.ndarray:
        return stats(names) if names else np.zeros((m, _N_STATS))

    def full(value: float) -> np.ndarray:
        return np.full((m, 1), value)

    layer_w = [s((layer.weight,)) for layer in plan.layers]
    blocks = []  # per layer [m, 18]: s(w), scaled std, log fans, s(b), has bias
    for layer, w in zip(plan.layers, layer_w, strict=True):
        scaled = w[:, 1:2] * math.sqrt(max(layer.fan_in, 1))
        b = s((layer.bias,)) if layer.bias is not None else np.zeros((m, _N_STATS))
        log_fans = [full(math.log(max(layer.fan_in, 1))), full(math.log(max(layer.fan_out, 1)))]
        blocks.append(np.concatenate([w, scaled, *log_fans, b, full(float(layer.bias is not None))], axis=1))

    def layer_block(i: int | None) -> np.ndarray:
        return np.zeros((m, _LAYER_BLOCK)) if i is None else np.concatenate([blocks[i], full(1.0)], axis=1)

    n = len(plan.layers)
    first = layer_block(0 if n else None)
    last = layer_block(n - 1 if n >= 2 else None)
    middle = _middle_block(plan, blocks, m)

    biases = tuple(layer.bias for layer in plan.layers if layer.bias is not None)
    bias_frac = len(biases) / n if n else 0.0
    main = np.concatenate(
        [s(tuple(layer.weight for layer in plan.layers)), s(biases), full(bias_frac)], axis=1
    )
    has_w, has_b = float(bool(plan.norm_w)), float(bool(plan.norm_b))
    norms = np.concatenate([s(plan.norm_w), s(plan.norm_b), full(has_w), full(has_b)], axis=1)
    has_running = bool(plan.running_mean or plan.running_var)
    running = np.concatenate([s(plan.running_mean), s(plan.running_var), full(float(has_running))], axis=1)

    w_stds = [w[:, 1] for w in layer_w]
    scaled = [sd * math.sqrt(max(layer.fan_in, 1)) for sd, layer in zip(w_stds, plan.layers, strict=True)]
    profile = np.concatenate(
        [_profile_rows(w_stds, m), _profile_rows(scaled, m), _profile_rows([w[:, 0] for w in layer_w], m)],
        axis=1,
    )

    frac = nonfinite.reshape(m, 1) / plan.n_total if plan.n_total else np.zeros((m, 1))
    counts = np.tile(_plan_counts(plan, has_running), (m, 1))
    global_ = np.concatenate([s(plan.pooled), counts, frac], axis=1)
    out = np.concatenate([first, last, middle, main, norms, running, profile, global_], axis=1).astype(
        np.float64
    )
    assert out.shape == (m, N_FEATURES), out.shape
    # Finite inputs give finite statistics; guard against overflow of huge (but finite) weights.
    return np.nan_to_num(out, nan=0.0, posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max)


def _middle_block(plan: _Plan, blocks: list[np.ndarray], m: int) -> np.ndarray:
    """The middle layers' block ``[m, _LAYER_BLOCK]``: the mean of their per-layer blocks (bias statistics
    over the layers with a bias), zeros with fewer than three layers."""
    if len(plan.layers) < 3:
        return np.zeros((m, _LAYER_BLOCK))
    mid = np.stack(blocks[1:-1])  # [layers, m, 18]
    middle_values = mid.mean(axis=0)
    bias_slice = slice(_N_STATS + 3, 2 * _N_STATS + 3)
    with_bias = np.array([layer.bias is not None for layer in plan.layers[1:-1]])
    middle_values[:, bias_slice] = mid[with_bias][:, :, bias_slice].mean(axis=0) if with_bias.any() else 0.0
    return np.concatenate([middle_values, np.full((m, 1), 1.0)], axis=1)


def _plan_counts(plan: _Plan, has_running: bool) -> np.ndarray:
    """The architecture counts of a plan: pooled and main parameters (log), layers, convolutions, norm
    modules, the convolutions' share, whether it has norms and running statistics."""
    n_main = sum(layer.numel for layer in plan.layers)
    n_conv_params = sum(layer.numel for layer in plan.layers if layer.is_conv)
    counts = [
        math.log1p(plan.n_pooled),
        math.log1p(n_main),
        len(plan.layers),
        sum(layer.is_conv for layer in plan.layers),
        plan.n_norm_modules,
        n_conv_params / n_main if n_main else 0.0,
        float(bool(plan.norm_w or plan.norm_b) or has_running),
        float(has_running),
    ]
    return np.asarray(counts, dtype=np.float64)


def _floating(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


def weight_statistics_features(state_dict: Mapping[str, torch.Tensor]) -> np.ndarray:
    """The fixed-length weight-statistics vector (float64, `N_FEATURES` values) of one state dict.

    Layout and tensor roles are in the module docs; `feature_names` names every value.
    """
    tensors = _floating(state_dict)
    values: dict[str, np.ndarray] = {}
    n_nonfinite = 0
    for name, t in tensors.items():
        values[name], dropped = _finite_values(t)
        n_nonfinite += dropped

    def stats(names: tuple[str, ...]) -> np.ndarray:
        parts = [values[n] for n in names]
        return value_stats_rows((parts[0] if len(parts) == 1 else np.concatenate(parts)).reshape(1, -1))

    plan = _plan({k: tuple(t.shape) for k, t in tensors.items()})
    return _features_rows(plan, stats, 1, np.array([n_nonfinite]))[0]


def _features_of_one_plan(state_dicts: list[Mapping[str, torch.Tensor]], plan: _Plan) -> np.ndarray | None:
    """Features of state dicts that share `plan`, each statistic computed for all of them at once; None if
    any value is not finite (then each is featurized alone, which leaves those values out)."""
    m = len(state_dicts)
    values: dict[str, np.ndarray] = {}
    for name in {n for n in _floating(state_dicts[0])}:
        with torch.no_grad():
            stacked = torch.stack([sd[name].detach().reshape(-1) for sd in state_dicts])
        x = _as_float64(stacked)
        if not np.isfinite(x).all():
            return None
        values[name] = x

    def stats(names: tuple[str, ...]) -> np.ndarray:
        parts = [values[n] for n in names]
        return value_stats_rows(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1))

    return _features_rows(plan, stats, m, np.zeros(m))


FEATURIZE_CHUNK_BYTES = 32 * 2**20
"""State dicts featurized together at most (their floating values, as stored). Featurizing a chunk takes
about `FEATURIZE_WORKING_COPIES` times that in working memory (float64 copies, pools, partitions)."""
FEATURIZE_WORKING_COPIES = 5


def featurize(
    state_dicts: Iterable[Mapping[str, torch.Tensor]],
    progress: bool = False,
    chunk_bytes: int = FEATURIZE_CHUNK_BYTES,
) -> np.ndarray:
    """`weight_statistics_features` of every state dict, stacked: float64 ``[N, N_FEATURES]``.

    State dicts are read in chunks of at most ``chunk_bytes`` of values; within a chunk, those of one
    architecture (same floating tensor names and shapes) are featurized together, each statistic computed
    for all of them in one vectorized pass (the same numbers as one at a time). ``progress`` draws a
    progress bar on stderr (the total is shown when ``state_dicts`` has a length). An empty input gives a
    ``[0, N_FEATURES]`` array.
    """
    total = len(state_dicts) if isinstance(state_dicts, Sized) else 0
    rows: list[np.ndarray] = []
    chunk: list[Mapping[str, torch.Tensor]] = []
    held = 0
    with Progress("weight statistics", total, unit="models", enabled=progress and total > 0) as bar:

        def flush() -> None:
            rows.extend(_featurize_chunk(chunk))
            bar.advance(len(chunk))
            chunk.clear()

        for sd in state_dicts:
            chunk.append(sd)
            held += sum(t.nbytes for t in _floating(sd).values())
            if held >= chunk_bytes:
                flush()
                held = 0
        if chunk:
            flush()
    if not rows:
        return np.zeros((0, N_FEATURES), dtype=np.float64)
    return np.stack(rows).astype(np.float64, copy=False)


def _featurize_chunk(state_dicts: list[Mapping[str, torch.Tensor]]) -> list[np.ndarray]:
    """Rows of `featurize` for a chunk, in order: same-architecture state dicts together."""
    groups: dict[tuple, list[int]] = {}
    for i, sd in enumerate(state_dicts):
        key = tuple((k, tuple(t.shape), t.dtype) for k, t in _floating(sd).items())
        groups.setdefault(key, []).append(i)
    out: list[np.ndarray | None] = [None] * len(state_dicts)
    for key, idx in groups.items():
        batch = None
        if len(idx) > 1:
            plan = _plan({name: shape for name, shape, _ in key})
            batch = _features_of_one_plan([state_dicts[i] for i in idx], plan)
        for j, i in enumerate(idx):
            out[i] = batch[j] if batch is not None else weight_statistics_features(state_dicts[i])
    return out  # type: ignore[return-value]


__all__ = [
    "N_FEATURES",
    "STAT_NAMES",
    "feature_names",
    "featurize",
    "value_stats",
    "value_stats_rows",
    "weight_statistics_features",
]
