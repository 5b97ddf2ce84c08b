"""What a zoo contains: the sampling of subject models from a `ZooConfig` (`zooprobe.zoo.config`).

A zoo is sampled in *cohorts*. A cohort is one architecture (everything that determines parameter
shapes: task, family, depth, width, batch norm, layer norm) and the batch size; its models differ in every
training hyperparameter and in the flags that leave shapes unchanged (dropout, residual connections).
Models of a cohort train together as one population (see `population.py`), which is what makes
generation fast. Because dropout and residual flags vary inside a cohort, they cannot be read off shapes.

Every random choice is drawn from a generator seeded by ``(seed, cohort index)``, so cohort ``k`` is the
same whichever shard or machine builds it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from zooprobe.zoo.config import (  # re-exported: the configuration's old home
    ACTIVATIONS,
    CNN_HIDDEN,
    FAMILIES,
    FLAT_TASKS,
    INITS,
    LR_LOG10,
    MOMENTUM,
    NORMS,
    OPTIMIZERS,
    POOLED,
    POOLINGS,
    PRESETS,
    SCHEDULERS,
    SPLITS,
    ZooConfig,
)


@dataclass(frozen=True)
class ArchSpec:
    """Everything that fixes a subject model's parameter shapes (shared by a cohort)."""

    task: str
    family: str
    depth: int
    width: int
    has_batch_norm: bool
    has_layer_norm: bool
    input_shape: tuple[int, ...]
    n_classes: int
    kernel_size: int = 3
    pooling: str = "avg"
    pool_every: int = 0
    has_group_norm: bool = False

    @property
    def base_family(self) -> str:
        """``mlp`` or ``cnn``: the layer structure (``resmlp`` is an ``mlp`` with residual connections)."""
        return self.family.removeprefix("res")

    @property
    def has_conv_layers(self) -> bool:
        return self.base_family == "cnn"

    @property
    def downsample_blocks(self) -> tuple[int, ...]:
        """The CNN blocks after which (``pooling`` avg/max) or in which (stride) the resolution halves:
        block 0, then every ``pool_every`` blocks, while the smallest spatial size is at least 8."""
        if self.pooling == "none" or not self.has_conv_layers:
            return ()
        size, out = min(self.input_shape[1:]), []
        for i in range(self.depth):
            if (i == 0 or (self.pool_every and i % self.pool_every == 0)) and size >= 8:
                out.append(i)
                size = (size + 1) // 2 if self.pooling == "stride" else size // 2
        return tuple(out)

    @property
    def normalization(self) -> str:
        """``none``, ``batch``, ``layer``, ``group`` or a ``+``-joined combination."""
        names = [
            n
            for n, on in (
                ("batch", self.has_batch_norm),
                ("layer", self.has_layer_norm),
                ("group", self.has_group_norm),
            )
            if on
        ]
        return "+".join(names) or "none"


@dataclass(frozen=True)
class ModelSpec:
    """One subject model: its architecture plus the per-model training choices."""

    model_id: str
    index: int
    cohort: int
    arch: ArchSpec
    activation: str
    init: str
    optimizer: str
    learning_rate: float
    weight_decay: float
    momentum: float
    dropout: float
    has_residual: bool
    batch_size: int
    epochs: int
    seed: int
    split: str
    checkpoint_epochs: tuple[int, ...] = field(default=())
    scheduler: str = "constant"
    label_smoothing: float = 0.0
    grad_clip: float = 0.0
    """Gradient-norm clipping threshold (0: none)."""
    input_noise: float = 0.0
    """Standard deviation of the Gaussian noise added to each training input (0: none)."""
    train_samples: int = 0
    """The cohort's drawn training-set size (``train_samples_range``; 0: ``max_train_samples`` applies)."""

    @property
    def has_dropout(self) -> bool:
        return self.dropout > 0.0

    def metadata(self) -> dict[str, Any]:
        """The sampled values as plain columns (see `schema.FIELDS`)."""
        a = self.arch
        return {
            "model_id": self.model_id,
            "cohort": self.cohort,
            "dataset": a.task,
            "family": a.family,
            "depth": a.depth,
            "width": a.width,
            "kernel_size": a.kernel_size if a.has_conv_layers else 0,
            "pooling": a.pooling if a.has_conv_layers else "none",
            "has_conv_layers": a.has_conv_layers,
            "has_batch_norm": a.has_batch_norm,
            "has_layer_norm": a.has_layer_norm,
            "has_group_norm": a.has_group_norm,
            "normalization": a.normalization,
            "has_dropout": self.has_dropout,
            "has_residual": self.has_residual,
            "dropout": self.dropout,
            "activation": self.activation,
            "init": self.init,
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "scheduler": self.scheduler,
            "label_smoothing": self.label_smoothing,
            "grad_clip": self.grad_clip,
            "input_noise": self.input_noise,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "seed": self.seed,
        }


def _choice(rng, values):
    """``rng.choice(values)`` as a plain value; a single value is taken without a draw, so presets that do
    not vary a field keep the random streams (and weights) they had before the field existed."""
    values = list(values)
    if len(values) == 1:
        return values[0]
    return values[int(rng.integers(len(values)))] if isinstance(values[0], str) else rng.choice(values)


def _sample_arch(cfg: ZooConfig, rng) -> tuple[ArchSpec, bool]:
    """The cohort's architecture and whether every run has residual connections (the res* families)."""
    from zooprobe.zoo.data import load_task  # heavy: imports torch

    task = str(rng.choice(cfg.tasks))
    families = [f for f in cfg.families if task not in FLAT_TASKS or f in ("mlp", "resmlp")]  # type: ignore[union-attr]
    family = str(rng.choice(families))
    conv = family.removeprefix("res") == "cnn"
    depths, widths = (cfg.cnn_depths, cfg.cnn_widths) if conv else (cfg.mlp_depths, cfg.mlp_widths)
    data = load_task(task)
    depth, width = int(rng.choice(depths)), int(rng.choice(widths))  # type: ignore[arg-type]
    if cfg.norms:
        norm = str(_choice(rng, cfg.norms))
        bn, ln, gn = norm == "batch", norm == "layer", norm == "group"
    else:
        bn = bool(rng.random() < cfg.p_batch_norm)  # type: ignore[operator]
        ln = bool(rng.random() < cfg.p_layer_norm)  # type: ignore[operator]
        gn = False

    def draw_conv() -> tuple[int, str]:
        if not conv:
            return 3, "avg"
        return int(_choice(rng, cfg.kernel_sizes)), str(_choice(rng, cfg.poolings))  # type: ignore[arg-type]

    kernel, pooling = draw_conv()
    fixed = {"task": task, "family": family, "input_shape": data.input_shape, "n_classes": data.n_classes}
    norms = {"has_batch_norm": bn, "has_layer_norm": ln, "has_group_norm": gn}
    sizes = {"depth": depth, "width": width, "kernel_size": kernel, "pooling": pooling}
    arch = ArchSpec(**fixed, **norms, **sizes, pool_every=int(cfg.pool_every))  # type: ignore[arg-type]
    for _ in range(200 if cfg.max_macs else 0):  # the compute budget: draw the sizes again
        if arch_macs(arch) <= cfg.max_macs:  # type: ignore[operator]
            break
        depth, width = int(rng.choice(depths)), int(rng.choice(widths))  # type: ignore[arg-type]
        kernel, pooling = draw_conv()
        arch = dataclasses.replace(arch, depth=depth, width=width, kernel_size=kernel, pooling=pooling)
    return arch, family.startswith("res")


def arch_macs(arch: ArchSpec) -> int:
    """Multiply-accumulates of one sample's forward pass through the weight layers (norms and
    activations left out): the compute budget of `ZooConfig.max_macs`."""
    w, k_out = arch.width, arch.n_classes
    if not arch.has_conv_layers:
        return math.prod(arch.input_shape) * w + (arch.depth - 1) * w * w + w * k_out
    spatial = list(arch.input_shape[1:])
    down, total = arch.downsample_blocks, 0
    for i in range(arch.depth):
        c_in = arch.input_shape[0] if i == 0 else w
        if arch.pooling == "stride" and i in down:
            spatial = [(s + 1) // 2 for s in spatial]
        total += math.prod(spatial) * c_in * w * arch.kernel_size ** len(spatial)
        if arch.pooling in ("avg", "max") and i in down:
            spatial = [s // 2 for s in spatial]
    return total + w * POOLED * CNN_HIDDEN + CNN_HIDDEN * k_out


def _log_uniform_int(rng: Any, lo: int, hi: int) -> int:
    """An integer drawn log-uniformly in lo..hi (one draw of `rng`)."""
    return int(min(hi, max(lo, math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))))


def _cohort_epochs(cfg: ZooConfig, rng) -> int:
    """The longest run of a cohort (``log_epochs``): log-uniform in min_epochs..max_epochs."""
    return _log_uniform_int(rng, cfg.min_epochs, cfg.max_epochs)  # type: ignore[arg-type]


def _cohort_train_samples(cfg: ZooConfig, rng: Any) -> int:
    """The cohort's training-set size, log-uniform in ``train_samples_range`` (0 where the config has none:
    no draw, so the random streams of the presets are unchanged)."""
    if not cfg.train_samples_range:
        return 0
    lo, hi = (int(v) for v in cfg.train_samples_range)
    return _log_uniform_int(rng, lo, hi)


def _later_fields(cfg: ZooConfig, rng: Any, regression: bool) -> tuple[str, float, float, float]:
    """Scheduler, label smoothing, gradient clip and input noise of one run: fields added after the first
    presets, drawn only where a preset varies them (so the streams of older presets are unchanged)."""
    scheduler = str(_choice(rng, cfg.schedulers))  # type: ignore[arg-type]
    smoothing = (
        float(rng.uniform(0.05, 0.2))
        if cfg.p_label_smoothing and not regression and rng.random() < cfg.p_label_smoothing
        else 0.0
    )
    clip = float(10 ** rng.uniform(-0.5, 1.0)) if cfg.p_grad_clip and rng.random() < cfg.p_grad_clip else 0.0
    noise = float(rng.uniform(0.05, 0.3)) if cfg.p_input_noise and rng.random() < cfg.p_input_noise else 0.0
    return scheduler, smoothing, clip, noise


def _draw_run(cfg: ZooConfig, rng: Any, longest: int, regression: bool, all_residual: bool) -> dict[str, Any]:
    """One run's training choices, as `ModelSpec` fields (drawn in a fixed order: the streams of zoos
    already built depend on it); `all_residual`: the cohort's family has residual connections."""
    r: dict[str, Any] = {"optimizer": str(rng.choice(cfg.optimizers))}
    lo, hi = LR_LOG10[r["optimizer"]]
    wd_lo, wd_hi = cfg.weight_decay_log10  # type: ignore[misc]
    zero_wd = rng.random() < cfg.p_zero_weight_decay  # type: ignore[operator]
    r["weight_decay"] = 0.0 if zero_wd else float(10 ** rng.uniform(wd_lo, wd_hi))
    r["dropout"] = float(rng.uniform(0.1, 0.5)) if rng.random() < cfg.p_dropout else 0.0  # type: ignore[operator]
    if longest:
        r["epochs"] = int(rng.integers(max(cfg.min_epochs, (longest + 1) // 2), longest + 1))  # type: ignore[call-overload]
    else:
        r["epochs"] = int(rng.integers(cfg.min_epochs, cfg.max_epochs + 1))  # type: ignore[operator]
    r["activation"] = str(rng.choice(cfg.activations))
    r["init"] = str(rng.choice(cfg.inits))
    r["learning_rate"] = float(10 ** rng.uniform(lo, hi))
    r["has_residual"] = bool(rng.random() < cfg.p_residual) or all_residual  # type: ignore[operator]
    r["seed"] = int(rng.integers(0, 2**31 - 1))
    r["split"] = str(rng.choice(SPLITS, p=[float(x) for x in cfg.split_fractions]))  # type: ignore[union-attr]
    extra = set(cfg.checkpoint_epochs) | {round(f * r["epochs"]) for f in cfg.checkpoint_fractions}  # type: ignore[union-attr,arg-type]
    r["checkpoint_epochs"] = tuple(sorted({e for e in extra if 1 <= e < r["epochs"]}))
    r["momentum"] = MOMENTUM.get(r["optimizer"], 0.0)
    later = _later_fields(cfg, rng, regression)
    return r | dict(zip(("scheduler", "label_smoothing", "grad_clip", "input_noise"), later, strict=True))


def sample_cohort(cfg: ZooConfig, cohort: int) -> list[ModelSpec]:
    """Sample cohort ``cohort`` of a resolved config. Pure function of (config, cohort index)."""
    import numpy as np  # heavy: numpy (the command line parses without it)

    rng = np.random.default_rng([cfg.seed, cohort, 0x5EED])
    arch, all_residual = _sample_arch(cfg, rng)
    regression = arch.n_classes == 1
    batch_size = int(rng.choice(cfg.batch_sizes))  # type: ignore[arg-type]
    longest = _cohort_epochs(cfg, rng) if cfg.log_epochs else 0
    train_samples = _cohort_train_samples(cfg, rng)
    size = cfg.runs_per_cohort
    first = cohort * size
    n = min(size, cfg.n_models - first)  # type: ignore[operator]
    specs = []
    for j in range(n):
        index = first + j
        run = _draw_run(cfg, rng, longest, regression, all_residual)
        ident = {"model_id": f"m{index:06d}", "index": index, "cohort": cohort, "arch": arch}
        specs.append(ModelSpec(**ident, **run, batch_size=batch_size, train_samples=train_samples))
    return specs


__all__ = [
    "ACTIVATIONS",
    "CNN_HIDDEN",
    "FAMILIES",
    "FLAT_TASKS",
    "INITS",
    "LR_LOG10",
    "MOMENTUM",
    "NORMS",
    "OPTIMIZERS",
    "POOLED",
    "POOLINGS",
    "PRESETS",
    "SCHEDULERS",
    "SPLITS",
    "ArchSpec",
    "ModelSpec",
    "ZooConfig",
    "arch_macs",
    "sample_cohort",
]
