"""``zooprobe encoder bench``: how fast the encoder reads weights, and how much its embeddings know.

Measured in one run, on one machine (numbers are only comparable within a run):

1. **Encoding throughput** on every final checkpoint of the zoo: models/s and real tokens/s of
   `LoadedEncoder.encode` (tokenization included), and the achieved GFLOP/s of the encoder forward
   (`WeightEncoder.flops_per_forward` of the padded batches actually run, over the forward time) next to the
   GFLOP/s of a plain fp32 ``n x n`` matmul (n = 1024) timed in the same process: the ceiling.
2. **Held-out R² for test accuracy** of a ridge probe (``StandardScaler`` + ``RidgeCV``, alphas
   10^-3..10^3) fit on the zoo's train split and scored on its test split, on
   (a) the frozen pooled encoder embedding and (b) the weight statistics (the same features as
   ``stats+gbm``).
3. **A ResNet-18-shaped state dict** (~11.7M parameters, random tensors with torchvision's names and
   shapes, built locally): wall time of tokenize + encode and the peak extra resident memory during it
   (Linux: the process's peak RSS is reset through ``/proc/self/clear_refs`` and read back from
   ``VmHWM``; elsewhere the lifetime ``ru_maxrss`` is reported and marked as such).
4. With ``--compare v2,v3``: the encoding speed of this encoder and of the others side by side on the same
   models, best and median of ``--repeats`` timed runs each (`zooprobe.bench.encoder_speed`).

The weight statistics are the 131 features of `zooprobe.tokens.statistics` (the ``stats+gbm`` input).
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import r2_score

from zooprobe.api import load_encoder, load_zoo
from zooprobe.baselines.models import fit_baseline, ridge_pipeline
from zooprobe.bench.encoder_speed import compare_speed, speed_lines
from zooprobe.core.memory import process_status_kib, reset_peak_rss
from zooprobe.errors import InvalidInputError
from zooprobe.tokens.statistics import featurize


def ridge_r2(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Held-out R² of StandardScaler + RidgeCV (alphas 1e-3..1e3) fit on train, scored on test."""
    if len(y_test) < 2 or len(y_train) < 2:
        return float("nan")
    probe = ridge_pipeline().fit(x_train, y_train)
    return float(r2_score(y_test, probe.predict(x_test)))


def gbm_r2(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, validation: np.ndarray, test: np.ndarray
) -> float:
    """Test R² of LightGBM on `x`, early-stopped on the validation rows: ``stats+gbm``'s model and tuning
    (`zooprobe.baselines.models.fit_baseline`), the strongest simple baseline."""
    if test.sum() < 2 or train.sum() < 2 or validation.sum() < 1:
        return float("nan")
    model = fit_baseline("gbm", "continuous", x[train], y[train], x[validation], y[validation])
    return float(r2_score(y[test], model.predict(x[test])))


# ------------------------------------------------------------------------------------------ resnet
def resnet18_state_dict(seed: int = 0, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """A state dict with torchvision ResNet-18's names and shapes (~11.7M parameters), random values."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, c_out: int, c_in: int, k: int) -> None:
        sd[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * math.sqrt(2.0 / (c_in * k * k))

    def bn(name: str, c: int) -> None:
        sd[f"{name}.weight"] = 1.0 + 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.running_var"] = 1.0 + 0.1 * torch.rand(c, generator=g)
        sd[f"{name}.num_batches_tracked"] = torch.tensor(1000, dtype=torch.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    c_in = 64
    for stage, c in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            conv(f"{prefix}.conv1", c, c_in if block == 0 else c, 3)
            bn(f"{prefix}.bn1", c)
            conv(f"{prefix}.conv2", c, c, 3)
            bn(f"{prefix}.bn2", c)
            if block == 0 and stage > 1:
                conv(f"{prefix}.downsample.0", c, c_in, 1)
                bn(f"{prefix}.downsample.1", c)
        c_in = c
    sd["fc.weight"] = torch.randn(num_classes, 512, generator=g) * math.sqrt(1.0 / 512)
    sd["fc.bias"] = torch.zeros(num_classes)
    return sd


# ------------------------------------------------------------------------------------------ bench
REFERENCE: dict[str, Any] = {
    "commit": "03038b6",
    "date": "2026-11-30",
    "zoo_models": 2046,
    "zoo": "zooprobe zoo build --preset bench (2046 final checkpoints)",
    "encoder": "v2",  # the default encoder then (the default is now the shipped foundation encoder)
    "models_per_s": 154.9,
    "tokenize_share": 0.74,
    "machine": "2-core x86-64 CPU (AVX-512), 2 torch threads",
}
"""Encoding throughput of the previous release's path (commit 03038b6: one model tokenized at a time) on the
bench zoo with the v2 token encoder (the default one at the time): the mean of four runs of ``zooprobe
encoder bench`` on the machine named
(161.6, 177.0, 140.7 and 140.3 models/s; each was run back to back with this path, which measured 2.7-3.4x
as fast in the same four pairs). `format_report` prints the ratio to it when the zoo and encoder are the
same; other machines differ (and this one varies by about 20% between runs), so rerun that commit there
for an exact comparison."""


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    """GFLOP/s of a plain fp32 n x n matmul on this process's threads (best of `repeats`)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    for _ in range(2):
        a @ b
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _best_seconds(fn: Any, repeats: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def kernel_gflops(config: Any, batch: int, length: int, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of the token encoder's two kinds of kernels alone, at its own shapes: attention (SDPA,
    ``batch`` sequences of ``length`` over ``n_heads`` heads of ``d_model / n_heads``; with a key mask, as
    most batches need one) and the QKV projection (``batch * length`` rows, ``d_model -> 3 d_model``). What
    the forward pass can reach is bounded by these, not by a square 1024 matmul."""
    g = torch.Generator().manual_seed(0)
    heads, dim = config.n_heads, config.d_model // config.n_heads
    q, k, v = (torch.randn(batch, heads, length, dim, generator=g) for _ in range(3))
    mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    mask[: batch // 2, ..., length - length // 8 :] = False
    with torch.no_grad():
        attention = _best_seconds(
            lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask), repeats
        )
        x = torch.randn(batch * length, config.d_model, generator=g)
        w = torch.randn(3 * config.d_model, config.d_model, generator=g)
        linear = _best_seconds(lambda: x @ w.T, repeats)
    return {
        "attention_gflops": 4 * batch * heads * length * length * dim / attention / 1e9,
        "qkv_gflops": 2 * batch * length * config.d_model * 3 * config.d_model / linear / 1e9,
    }


def bench_encoder(
    zoo_source: str | Path = "builtin:bench",
    encoder_source: str | Path = "default",
    batch_size: int = 64,
    resnet: bool = True,
    progress: bool = True,
    compare: Sequence[str] = (),
    repeats: int = 3,
) -> dict[str, Any]:
    """Run the benchmark (see the module docs) and return its numbers; `format_report` prints them.

    `compare`: other encoders (names, folders, Hub ids) whose speed is timed next to this one's on the same
    models, ``repeats`` times each (`zooprobe.bench.encoder_speed`; ``result["speed"]``)."""

    zoo = load_zoo(zoo_source)
    encoder = load_encoder(encoder_source, progress=progress)
    final = zoo.final()
    meta = final.metadata().reset_index(drop=True)
    state_dicts = [final.state_dict(i) for i in range(len(final))]
    result: dict[str, Any] = {
        "zoo": str(zoo_source),
        "encoder": str(encoder_source),
        "encoder_source_folder": str(encoder.source) if encoder.source else None,
        "encoder_parameters": encoder.encoder.num_parameters(),
        "encoder_config": encoder.config.to_dict(),
        "architecture": getattr(encoder, "architecture", "tokens"),
        "window": encoder.preprocessing.window if encoder.preprocessing is not None else None,
        "torch_threads": torch.get_num_threads(),
        "n_models": len(state_dicts),
    }
    embeddings = _throughput(result, encoder, state_dicts, batch_size, encoder_source)
    _probes(result, encoder, zoo, meta, state_dicts, embeddings)
    if resnet:
        _resnet18(result, encoder, batch_size)
    if compare:
        sources = [str(encoder_source), *(str(c) for c in compare)]
        loaded = {str(encoder_source): encoder}
        result["speed"] = compare_speed(sources, state_dicts, batch_size, repeats, loaded, progress)
    return result


def _throughput(
    result: dict[str, Any], encoder: Any, state_dicts: list[Any], batch_size: int, encoder_source: Any
) -> np.ndarray:
    """1. Encoding speed on the zoo (and, for the token encoder, its kernels at its shapes)."""
    stats: dict[str, float] = {}
    start = time.perf_counter()
    embeddings = encoder.encode(state_dicts, batch_size=batch_size, stats=stats).numpy()
    seconds = time.perf_counter() - start
    result.update(
        {
            "encode_seconds": seconds,
            "models_per_s": len(state_dicts) / seconds,
            "tokens_per_s": stats["n_tokens"] / seconds,
            "n_tokens": int(stats["n_tokens"]),
            "n_windows": int(stats["n_windows"]),
            "padding_fraction": 1 - stats["n_tokens"] / max(stats["n_padded_tokens"], 1),
            "tokenize_seconds": stats["tokenize_s"],
            "forward_seconds": stats["forward_s"],
            "encoder_gflops": stats["flops"] / max(stats["forward_s"], 1e-9) / 1e9,
            "matmul_gflops": matmul_gflops(1024),
        }
    )
    if result["architecture"] == "tokens":
        cfg = encoder.config
        length = encoder.preprocessing.window + 1 + (8 if cfg.summary_tokens else 0)
        result.update(kernel_gflops(cfg, batch_size, length))
    comparable = (
        str(encoder_source) == REFERENCE["encoder"]
        and len(state_dicts) == REFERENCE["zoo_models"]
        and result["architecture"] == "tokens"
    )
    result["reference"] = dict(REFERENCE, comparable=comparable)
    return embeddings


def _probes(
    result: dict[str, Any], encoder: Any, zoo: Any, meta: Any, state_dicts: list[Any], embeddings: np.ndarray
) -> None:
    """2. How well the `embeddings` predict test accuracy (ridge and LightGBM), against weight statistics."""
    y = meta["test_accuracy"].to_numpy(dtype=float)
    train = (meta["split"] == "train").to_numpy()
    validation = (meta["split"] == "validation").to_numpy()
    test = (meta["split"] == "test").to_numpy()
    features = featurize(state_dicts)
    both = np.hstack([embeddings, features])
    overlap = 0
    if encoder.provenance.get("zoo_fingerprint") == zoo.fingerprint():
        overlap = len(set(meta.loc[test, "model_id"]) & set(encoder.model_ids))
    result.update(
        {
            "n_train": int(train.sum()),
            "n_test": int(test.sum()),
            "r2_encoder": ridge_r2(embeddings[train], y[train], embeddings[test], y[test]),
            "r2_weight_stats": ridge_r2(features[train], y[train], features[test], y[test]),
            "r2_encoder_plus_stats": ridge_r2(both[train], y[train], both[test], y[test]),
            "gbm_r2_encoder": gbm_r2(embeddings, y, train, validation, test),
            "gbm_r2_weight_stats": gbm_r2(features, y, train, validation, test),
            "gbm_r2_encoder_plus_stats": gbm_r2(
                np.hstack([embeddings, features]), y, train, validation, test
            ),
            "test_models_seen_in_pretraining": overlap,
        }
    )


def _resnet18(result: dict[str, Any], encoder: Any, batch_size: int) -> None:
    """3. Encoding a ResNet-18: time, tokens and peak extra memory (or why it cannot be encoded)."""
    sd = resnet18_state_dict()
    result["resnet18_parameters"] = sum(v.numel() for v in sd.values() if v.is_floating_point())
    exact = reset_peak_rss()
    base = process_status_kib("VmRSS") if exact else None
    rn_stats: dict[str, float] = {}
    start = time.perf_counter()
    try:
        encoder.encode([sd], batch_size=batch_size, stats=rn_stats)
    except InvalidInputError as e:  # e.g. an encoder with fewer layer positions than ResNet-18 has
        result["resnet18_error"] = str(e)
        return
    result["resnet18_seconds"] = time.perf_counter() - start
    result["resnet18_tokenize_seconds"] = rn_stats["tokenize_s"]
    result["resnet18_forward_seconds"] = rn_stats["forward_s"]
    result["resnet18_tokens"] = int(rn_stats["n_tokens"])
    result["resnet18_windows"] = int(rn_stats["n_windows"])
    peak = process_status_kib("VmHWM") if exact else None
    if exact and peak is not None and base is not None:
        result["resnet18_peak_extra_mib"] = (peak - base) / 1024
        result["resnet18_memory_method"] = "peak RSS above the level before encoding (VmHWM after reset)"
    else:
        result["resnet18_peak_extra_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["resnet18_memory_method"] = "lifetime peak RSS of the process (ru_maxrss)"


def verdict(r: Mapping[str, Any]) -> list[str]:
    """Whether the encoder beats the strongest statistics baseline (the better of ridge and LightGBM on the
    weight statistics), and what it adds to them (LightGBM on both minus LightGBM on the statistics)."""
    strongest = max(r["r2_weight_stats"], r["gbm_r2_weight_stats"])
    encoder = max(r["r2_encoder"], r["gbm_r2_encoder"])
    gain = r["gbm_r2_encoder_plus_stats"] - r["gbm_r2_weight_stats"]
    met = "target met" if encoder >= strongest else f"target missed by {strongest - encoder:.3f}"
    return [
        f"encoder vs the strongest statistics baseline (R² {strongest:.3f}): {encoder:.3f}, {met}",
        f"information beyond the statistics: LightGBM gains {gain:+.3f} R² from the embedding "
        f"({'met' if gain >= 0.03 else 'missed'}: target +0.030)",
    ]


def format_report(result: Mapping[str, Any]) -> list[str]:
    """Printable lines of a `bench_encoder` result."""
    r = result
    lines = [
        f"zoo {r['zoo']}: {r['n_models']} final checkpoints ({r['n_train']} train / {r['n_test']} test); "
        f"encoder {r['encoder']} ({r['encoder_parameters']:,} parameters, "
        + (f"window {r['window']}, " if r.get("window") else "")
        + f"{r['torch_threads']} torch threads)",
        *_encoding_lines(r),
        *_reference_lines(r),
        f"ridge R² (test accuracy, held-out test split): encoder embedding {r['r2_encoder']:.3f}  |  "
        f"weight statistics {r['r2_weight_stats']:.3f}  |  both {r['r2_encoder_plus_stats']:.3f}",
        f"LightGBM R² (test accuracy, early-stopped on validation): encoder embedding "
        f"{r['gbm_r2_encoder']:.3f}  |  weight statistics {r['gbm_r2_weight_stats']:.3f}  |  both "
        f"{r['gbm_r2_encoder_plus_stats']:.3f}",
        *verdict(r),
    ]
    if r.get("test_models_seen_in_pretraining"):
        lines.append(
            f"WARNING: {r['test_models_seen_in_pretraining']} test models were in the encoder's "
            "pretraining set"
        )
    if "resnet18_error" in r:
        lines.append(f"ResNet-18   : not encodable with this encoder: {r['resnet18_error']}")
    if "resnet18_seconds" in r:
        neurons = r.get("architecture") == "neurons"
        units, parts, step = ("neurons", "batches", "parse") if neurons else ("tokens", "windows", "tokenize")
        lines.append(
            f"ResNet-18   : {r['resnet18_parameters']:,} parameters -> {r['resnet18_tokens']:,} {units}, "
            f"{r['resnet18_windows']} {parts}; {step} + encode {r['resnet18_seconds']:.2f} s ({step} "
            f"{r['resnet18_tokenize_seconds']:.2f} s); "
            f"peak extra memory {r['resnet18_peak_extra_mib']:.0f} MiB "
            f"({r['resnet18_memory_method']})"
        )
    return lines + speed_lines(r.get("speed") or [])


def _encoding_lines(r: Mapping[str, Any]) -> list[str]:
    """The encoding speed lines of `format_report` (neuron kinds: neurons and batches; tokens: tokens,
    windows and GFLOP/s)."""
    return (
        [
            f"encoding    : {r['models_per_s']:9.1f} models/s  {r['tokens_per_s']:12,.0f} neurons/s  "
            f"({r['encode_seconds']:.2f} s: parse {r['tokenize_seconds']:.2f} s, features + forward "
            f"{r['forward_seconds']:.2f} s in {r['n_windows']} same-architecture batches)",
            "GFLOP/s     : not counted for the neuron encoder (most of its time is per-neuron features)",
        ]
        if r.get("architecture") == "neurons"
        else _layer_lines(r)
        if r.get("architecture") == "layers"
        else [
            f"encoding    : {r['models_per_s']:9.1f} models/s  {r['tokens_per_s']:12,.0f} tokens/s  "
            f"({r['encode_seconds']:.2f} s: tokenize {r['tokenize_seconds']:.2f} s = "
            f"{100 * r['tokenize_seconds'] / r['encode_seconds']:.0f}%, forward "
            f"{r['forward_seconds']:.2f} s; {r['n_windows']} windows, "
            f"padding {100 * r['padding_fraction']:.1f}%)",
            f"GFLOP/s     : encoder forward {r['encoder_gflops']:.1f}  vs  fp32 matmul n=1024 "
            f"{r['matmul_gflops']:.1f}  ({100 * r['encoder_gflops'] / r['matmul_gflops']:.0f}% of the "
            "ceiling)",
            *(
                [
                    "              its kernels alone at its shapes: attention "
                    f"{r['attention_gflops']:.1f}, QKV projection {r['qkv_gflops']:.1f}"
                ]
                if "attention_gflops" in r
                else []
            ),
        ]
    )


def _layer_lines(r: Mapping[str, Any]) -> list[str]:
    """The encoding speed lines of the foundation (layer-token) kind: one token per layer."""
    share = 100 * r["tokenize_seconds"] / r["encode_seconds"]
    padding = 100 * r["padding_fraction"]
    return [
        f"encoding    : {r['models_per_s']:9.1f} models/s  {r['tokens_per_s']:12,.0f} layer tokens/s  "
        f"({r['encode_seconds']:.2f} s: layer tokens {r['tokenize_seconds']:.2f} s = {share:.0f}%, forward "
        f"{r['forward_seconds']:.2f} s; {r['n_windows']} batches, padding {padding:.1f}%)",
        "GFLOP/s     : not counted for the layer encoder (its forward is the small part of encoding)",
    ]


def _reference_lines(r: Mapping[str, Any]) -> list[str]:
    ref = r.get("reference")
    if not ref:
        return []
    if not ref["comparable"]:
        return [
            f"reference   : {ref['models_per_s']:.1f} models/s at commit {ref['commit']} is for the bench "
            "zoo with the v2 encoder; not comparable here"
        ]
    return [
        f"reference   : {ref['models_per_s']:.1f} models/s at commit {ref['commit']} ({ref['date']}, "
        f"{ref['machine']}; tokenizing {100 * ref['tokenize_share']:.0f}% of it): "
        f"{r['models_per_s'] / ref['models_per_s']:.2f}x"
    ]


__all__ = [
    "REFERENCE",
    "bench_encoder",
    "format_report",
    "gbm_r2",
    "kernel_gflops",
    "matmul_gflops",
    "resnet18_state_dict",
    "ridge_r2",
    "verdict",
]
