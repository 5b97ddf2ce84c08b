"""What a zoo contains: the configuration schema, the presets and the sampling of subject models.

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
from typing import Any, Literal

from zooprobe.core.config import config, requirement
from zooprobe.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "plain_sgd", "nesterov", "adagrad")
ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid", "leaky_relu", "silu", "elu")
INITS = (
    "default",
    "kaiming_normal",
    "xavier_uniform",
    "xavier_normal",
    "orthogonal",
    "normal",
    "kaiming_uniform",
)
FAMILIES = ("mlp", "cnn", "resmlp", "rescnn")
"""``resmlp`` / ``rescnn``: an MLP / CNN whose every run has residual connections (plain ``mlp`` / ``cnn``
runs have them with probability ``p_residual``). A CNN is 2-D on images and 1-D on signals and sequences."""
POOLINGS = ("avg", "max", "none", "stride")
"""How a CNN halves its resolution: 2x average or max pooling after a block, a stride-2 convolution in the
block, or not at all (only the final pooling to a fixed size)."""
NORMS = ("none", "batch", "layer", "group")
SCHEDULERS = ("constant", "cosine", "step", "onecycle")
SPLITS = ("train", "validation", "test")
FLAT_TASKS = ("tabular", "tabular_reg")
"""Tasks without spatial structure: MLPs only."""

# Log10 learning-rate ranges per optimizer: wide enough to reach both "barely moves" and "diverges",
# centred so that every optimizer produces its share of good models.
LR_LOG10 = {
    "sgd": (-3.5, -0.3),
    "adam": (-4.5, -1.3),
    "adamw": (-4.5, -1.3),
    "rmsprop": (-5.0, -1.8),
    "plain_sgd": (-2.5, 0.0),
    "nesterov": (-3.5, -0.3),
    "adagrad": (-3.5, -0.5),
}
MOMENTUM = {"sgd": 0.9, "nesterov": 0.9}
CNN_HIDDEN = 32
"""Units of a CNN's hidden dense layer (after the final pooling)."""
POOLED = 4
"""Positions after a CNN's final average pooling: 2x2 for images, 4 for 1-D signals."""


@config()
@dataclass
class ZooConfig:
    """Configuration of a generated zoo. Fields left as ``None`` take the preset's value.

    Presets: ``tiny`` (tests, seconds), ``small`` (the built-in default zoo, under a minute on two
    cores), ``bench`` (>= 2000 diverse models, under ten minutes on two cores).
    """

    preset: Literal["tiny", "small", "bench", "foundation"] = "small"
    """Base values for every field left unset: tiny (tests), small (the default zoo), bench (>= 2000 runs),
    foundation (the diverse pretraining corpus: 6 tasks, 4 families, 7 optimizers, 4 schedules)."""
    n_models: int | None = None
    """Number of training runs (models); the last cohort may be smaller."""
    cohort_size: int | None = None
    """Models sharing one architecture, trained together as a population."""
    min_cohorts: int | None = None
    """Draw at least this many architectures (0: no minimum): a small ``n_models`` then gets smaller cohorts
    (`runs_per_cohort`), so that a sample of the preset spans its architecture space."""
    tasks: list[str] | None = None
    """Datasets to train on: digits (8x8 images, Conv2d), mnist1d (length-40 signals, Conv1d), tabular
    (16 features, MLPs only), tabular_reg (regression, MLPs only), shapes16 (16x16 RGB images), motifs
    (one-hot sequences of length 32, Conv1d)."""
    families: list[str] | None = None
    """Architecture families: mlp, cnn, resmlp, rescnn (CNN families are drawn for image/sequence tasks)."""
    mlp_depths: list[int] | None = None
    """Hidden layers of an MLP (residual connections join layers 2..depth)."""
    mlp_widths: list[int] | None = None
    """Units of each hidden layer of an MLP (one width per model, sampled from this list)."""
    cnn_depths: list[int] | None = None
    """Convolution blocks of a CNN."""
    cnn_widths: list[int] | None = None
    """Channels of each convolution block."""
    kernel_sizes: list[int] | None = None
    """Convolution kernel sizes (odd; one per cohort)."""
    poolings: list[str] | None = None
    """How CNNs downsample (one per cohort): avg, max, none, stride (a stride-2 convolution)."""
    pool_every: int | None = None
    """A CNN downsamples after block 0 and then every ``pool_every`` blocks (0: after block 0 only), while
    the resolution is at least 8."""
    norms: list[str] | None = None
    """Normalization of a cohort, one of these: none, batch, layer (dense layers), group. Empty: batch and
    layer norm are drawn independently with ``p_batch_norm`` / ``p_layer_norm``."""
    batch_sizes: list[int] | None = None
    """Training batch sizes (one per cohort, sampled from this list)."""
    min_epochs: int | None = None
    """Fewest training epochs of a run (each run's epochs are uniform in min_epochs..max_epochs)."""
    max_epochs: int | None = None
    """Most training epochs of a run."""
    log_epochs: bool | None = None
    """Draw each cohort's longest run log-uniformly in min_epochs..max_epochs (many short cohorts, some long)
    and each run's epochs uniformly between half of it and it, instead of every run's epochs uniformly in
    min_epochs..max_epochs. A cohort trains for its longest run, so this keeps the cost of long runs low."""
    max_macs: int | None = None
    """Largest multiply-accumulates per sample of a forward pass (`arch_macs`; 0: no limit). A cohort whose
    architecture exceeds it draws its depth, width, kernel and pooling again (the compute budget of the
    corpus: most cost is in a few wide, deep CNNs)."""
    optimizers: list[str] | None = None
    """Optimizers to sample from: sgd (momentum 0.9), adam, adamw, rmsprop, plain_sgd (no momentum), nesterov
    (momentum 0.9), adagrad."""
    schedulers: list[str] | None = None
    """Learning-rate schedules to sample from (per run, over its own epochs): constant, cosine (to 0), step
    (x0.1 at 50% and 75%), onecycle (linear warm-up from lr/25 over 30%, cosine down to lr/1000)."""
    activations: list[str] | None = None
    """Activations to sample from: relu, tanh, gelu, sigmoid, leaky_relu, silu, elu."""
    inits: list[str] | None = None
    """Weight initializations to sample from: default (PyTorch's), kaiming_normal, xavier_uniform,
    xavier_normal, orthogonal, normal (std 0.05), kaiming_uniform."""
    weight_decay_log10: tuple[float, float] | None = None
    """Weight decay is 10**U(lo, hi); with probability ``p_zero_weight_decay`` it is exactly 0."""
    p_zero_weight_decay: float | None = None
    """Probability that a run's weight decay is exactly 0."""
    p_batch_norm: float | None = None
    """Probability that a cohort's architecture has batch norm."""
    p_layer_norm: float | None = None
    """Probability that a cohort's architecture has layer norm."""
    p_dropout: float | None = None
    """Probability that a run uses dropout (rate uniform in 0.1-0.5)."""
    p_residual: float | None = None
    """Probability that a run has residual connections."""
    p_label_smoothing: float | None = None
    """Probability that a run uses label smoothing (0.05-0.2; classification tasks)."""
    p_grad_clip: float | None = None
    """Probability that a run clips its gradient norm (at 10**U(-0.5, 1))."""
    p_input_noise: float | None = None
    """Probability that a run adds Gaussian noise (std 0.05-0.3) to its inputs (augmentation)."""
    checkpoint_epochs: list[int] | None = None
    """Extra checkpoints kept per run (epochs, if the run reaches them) besides the final one."""
    checkpoint_fractions: list[float] | None = None
    """Extra checkpoints at these fractions of each run's own epochs (rounded; before the final one)."""
    flush_denormals: bool | None = None
    """Train with subnormal floats flushed to zero: on CPU, arithmetic on them is 10-100x slower, and some
    optimizer/schedule mixes (Adagrad, RMSprop, decayed learning rates) produce many. It changes rounding,
    so the presets that existed before it keep it off."""
    max_train_samples: int | None = None
    """Subsample each task's training split (0 = all). Used by the tiny preset to stay fast."""
    split_fractions: tuple[float, float, float] | None = None
    """Fractions of models in the zoo's train/validation/test splits (split by model, never by checkpoint)."""
    seed: int = 0
    """Seed of the sampling and of every run's training: the same config builds the same zoo."""

    def resolved(self) -> ZooConfig:
        """A copy with every ``None`` replaced by the preset's value, validated."""
        cfg = ZooConfig(**self.preset_values(PRESETS, "zoo"))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        from zooprobe.zoo.data import TASKS  # heavy: imports torch (the command line parses without it)

        need = requirement("", ConfigError)

        for f in dataclasses.fields(self):
            need(getattr(self, f.name) is not None, f"zoo config field {f.name!r} is not set")
        need(self.n_models >= 1, f"n_models must be >= 1, got {self.n_models}")  # type: ignore[operator]
        need(self.cohort_size >= 1, f"cohort_size must be >= 1, got {self.cohort_size}")  # type: ignore[operator]
        for name, allowed in (
            ("tasks", TASKS),
            ("families", FAMILIES),
            ("optimizers", OPTIMIZERS),
            ("activations", ACTIVATIONS),
            ("inits", INITS),
            ("poolings", POOLINGS),
            ("schedulers", SCHEDULERS),
        ):
            values = getattr(self, name)
            need(len(values) > 0, f"{name} must not be empty")
            bad = [v for v in values if v not in allowed]
            need(not bad, f"{name}: unknown value(s) {bad}; allowed: {', '.join(allowed)}")
        bad_norms = [v for v in self.norms if v not in NORMS]  # type: ignore[union-attr]
        need(not bad_norms, f"norms: unknown value(s) {bad_norms}; allowed: {', '.join(NORMS)}")
        for name in ("mlp_depths", "cnn_depths", "mlp_widths", "cnn_widths", "batch_sizes", "kernel_sizes"):
            values = getattr(self, name)
            need(len(values) > 0 and all(int(v) >= 1 for v in values), f"{name} must be positive integers")
        need(all(int(k) % 2 == 1 for k in self.kernel_sizes), "kernel_sizes must be odd")  # type: ignore[union-attr]
        need(self.pool_every >= 0, "pool_every must be >= 0")  # type: ignore[operator]
        need(self.max_macs >= 0, "max_macs must be >= 0")  # type: ignore[operator]
        need(self.min_cohorts >= 0, "min_cohorts must be >= 0")  # type: ignore[operator]
        need(all(0 < f < 1 for f in self.checkpoint_fractions), "checkpoint_fractions must be in (0, 1)")  # type: ignore[union-attr]
        flat = [t for t in self.tasks if t in FLAT_TASKS]  # type: ignore[union-attr]
        need(
            not flat or any(f in ("mlp", "resmlp") for f in self.families),  # type: ignore[union-attr]
            f"tasks {flat} take MLPs only: add mlp or resmlp to families",
        )
        need(
            len(flat) < len(self.tasks) or any(f in ("mlp", "resmlp") for f in self.families),  # type: ignore[arg-type,union-attr]
            "every task needs a family it can use",
        )
        need(1 <= self.min_epochs <= self.max_epochs, "need 1 <= min_epochs <= max_epochs")  # type: ignore[operator]
        for name in (
            "p_batch_norm",
            "p_layer_norm",
            "p_dropout",
            "p_residual",
            "p_zero_weight_decay",
            "p_label_smoothing",
            "p_grad_clip",
            "p_input_noise",
        ):
            p = getattr(self, name)
            need(0.0 <= p <= 1.0, f"{name} must be in [0, 1], got {p}")
        lo, hi = self.weight_decay_log10  # type: ignore[misc]
        need(lo <= hi, "weight_decay_log10 must be (low, high) with low <= high")
        fr = self.split_fractions
        need(
            len(fr) == 3 and all(x >= 0 for x in fr) and math.isclose(sum(fr), 1.0, abs_tol=1e-6),  # type: ignore[arg-type]
            f"split_fractions must be three non-negative numbers summing to 1, got {fr}",
        )
        need(self.max_train_samples >= 0, "max_train_samples must be >= 0")  # type: ignore[operator]

    @property
    def n_cohorts(self) -> int:
        return math.ceil(self.n_models / self.runs_per_cohort)  # type: ignore[operator]

    @property
    def runs_per_cohort(self) -> int:
        """``cohort_size``, smaller where ``min_cohorts`` asks for more cohorts than that gives."""
        size = int(self.cohort_size)  # type: ignore[arg-type]
        if self.min_cohorts:
            size = max(1, min(size, math.ceil(self.n_models / self.min_cohorts)))  # type: ignore[operator]
        return size


_COMMON: dict[str, Any] = {
    "tasks": ["digits", "mnist1d"],
    "families": ["mlp", "cnn"],
    "mlp_depths": [2, 3, 4],
    "mlp_widths": [16, 32, 64],
    "cnn_depths": [2, 3],
    "cnn_widths": [4, 8, 16],
    "kernel_sizes": [3],
    "poolings": ["avg"],
    "pool_every": 0,
    "norms": [],
    "batch_sizes": [32, 64, 128],
    "log_epochs": False,
    "max_macs": 0,
    "min_cohorts": 0,
    "flush_denormals": False,
    "optimizers": ["sgd", "adam", "adamw", "rmsprop"],
    "schedulers": ["constant"],
    "activations": ["relu", "tanh", "gelu", "sigmoid", "leaky_relu"],
    "inits": ["default", "kaiming_normal", "xavier_uniform", "xavier_normal", "orthogonal", "normal"],
    "weight_decay_log10": (-6.0, -1.5),
    "p_zero_weight_decay": 0.1,
    "p_batch_norm": 0.5,
    "p_layer_norm": 0.5,
    "p_dropout": 0.5,
    "p_residual": 0.5,
    "p_label_smoothing": 0.0,
    "p_grad_clip": 0.0,
    "p_input_noise": 0.0,
    "checkpoint_epochs": [],
    "checkpoint_fractions": [],
    "split_fractions": (0.7, 0.15, 0.15),
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        **_COMMON,
        "n_models": 16,
        "cohort_size": 4,
        "mlp_depths": [2],
        "mlp_widths": [8, 16],
        "cnn_depths": [2],
        "cnn_widths": [4],
        "batch_sizes": [128],
        "min_epochs": 1,
        "max_epochs": 2,
        "max_train_samples": 256,
    },
    "small": {
        **_COMMON,
        "n_models": 256,
        "cohort_size": 32,
        "min_epochs": 1,
        "max_epochs": 6,
        "max_train_samples": 0,
    },
    "bench": {
        **_COMMON,
        "n_models": 2048,
        "cohort_size": 32,
        "min_epochs": 1,
        "max_epochs": 8,
        "max_train_samples": 0,
    },
    "foundation": {
        **_COMMON,
        "n_models": 20480,
        "cohort_size": 32,
        "tasks": ["digits", "mnist1d", "tabular", "tabular_reg", "shapes16", "motifs"],
        "families": list(FAMILIES),
        "mlp_depths": [1, 2, 3, 4, 5, 6, 7, 8],
        "mlp_widths": [4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256],
        "cnn_depths": [1, 2, 3, 4, 5, 6, 7, 8],
        "cnn_widths": [4, 8, 12, 16, 24, 32],
        "kernel_sizes": [3, 5, 7],
        "poolings": list(POOLINGS),
        "pool_every": 2,
        "norms": list(NORMS),
        "batch_sizes": [32, 64, 128, 256],
        "min_epochs": 2,  # epoch-1 checkpoints come from checkpoint_fractions
        "max_epochs": 50,
        "log_epochs": True,
        "max_macs": 200_000,
        "min_cohorts": 16,
        "flush_denormals": True,
        "optimizers": list(OPTIMIZERS),
        "schedulers": list(SCHEDULERS),
        "activations": list(ACTIVATIONS),
        "inits": list(INITS),
        "p_residual": 0.0,
        "p_label_smoothing": 0.3,
        "p_grad_clip": 0.3,
        "p_input_noise": 0.3,
        "checkpoint_fractions": [0.25, 0.5],
        "max_train_samples": 512,
    },
}


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
    arch = ArchSpec(
        task=task,
        family=family,
        depth=depth,
        width=width,
        has_batch_norm=bn,
        has_layer_norm=ln,
        input_shape=data.input_shape,
        n_classes=data.n_classes,
        kernel_size=kernel,
        pooling=pooling,
        pool_every=int(cfg.pool_every),  # type: ignore[arg-type]
        has_group_norm=gn,
    )
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


def _cohort_epochs(cfg: ZooConfig, rng) -> int:
    """The longest run of a cohort (``log_epochs``): log-uniform in min_epochs..max_epochs."""
    lo, hi = cfg.min_epochs, cfg.max_epochs
    return int(min(hi, max(lo, math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))))  # type: ignore[arg-type,operator]


def sample_cohort(cfg: ZooConfig, cohort: int) -> list[ModelSpec]:
    """Sample cohort ``cohort`` of a resolved config. Pure function of (config, cohort index)."""
    import numpy as np  # heavy: numpy (the command line parses without it)

    rng = np.random.default_rng([cfg.seed, cohort, 0x5EED])
    arch, all_residual = _sample_arch(cfg, rng)
    regression = arch.n_classes == 1
    batch_size = int(rng.choice(cfg.batch_sizes))  # type: ignore[arg-type]
    longest = _cohort_epochs(cfg, rng) if cfg.log_epochs else 0
    size = cfg.runs_per_cohort
    first = cohort * size
    n = min(size, cfg.n_models - first)  # type: ignore[operator]
    fr = np.asarray(cfg.split_fractions, dtype=float)
    wd_lo, wd_hi = cfg.weight_decay_log10  # type: ignore[misc]
    specs = []
    for j in range(n):
        optimizer = str(rng.choice(cfg.optimizers))
        lo, hi = LR_LOG10[optimizer]
        wd = 0.0 if rng.random() < cfg.p_zero_weight_decay else float(10 ** rng.uniform(wd_lo, wd_hi))  # type: ignore[operator]
        dropout = float(rng.uniform(0.1, 0.5)) if rng.random() < cfg.p_dropout else 0.0  # type: ignore[operator]
        if longest:
            epochs = int(rng.integers(max(cfg.min_epochs, (longest + 1) // 2), longest + 1))  # type: ignore[call-overload]
        else:
            epochs = int(rng.integers(cfg.min_epochs, cfg.max_epochs + 1))  # type: ignore[operator]
        index = first + j
        activation = str(rng.choice(cfg.activations))
        init = str(rng.choice(cfg.inits))
        learning_rate = float(10 ** rng.uniform(lo, hi))
        residual = bool(rng.random() < cfg.p_residual) or all_residual  # type: ignore[operator]
        seed = int(rng.integers(0, 2**31 - 1))
        split = str(rng.choice(SPLITS, p=fr))
        extra = set(cfg.checkpoint_epochs) | {round(f * epochs) for f in cfg.checkpoint_fractions}  # type: ignore[union-attr,arg-type]
        # fields added after the first presets: drawn only where a preset varies them (streams unchanged)
        scheduler = str(_choice(rng, cfg.schedulers))  # type: ignore[arg-type]
        smoothing = (
            float(rng.uniform(0.05, 0.2))
            if cfg.p_label_smoothing and not regression and rng.random() < cfg.p_label_smoothing
            else 0.0
        )
        clip = (
            float(10 ** rng.uniform(-0.5, 1.0)) if cfg.p_grad_clip and rng.random() < cfg.p_grad_clip else 0.0
        )
        noise = (
            float(rng.uniform(0.05, 0.3)) if cfg.p_input_noise and rng.random() < cfg.p_input_noise else 0.0
        )
        specs.append(
            ModelSpec(
                model_id=f"m{index:06d}",
                index=index,
                cohort=cohort,
                arch=arch,
                activation=activation,
                init=init,
                optimizer=optimizer,
                learning_rate=learning_rate,
                weight_decay=wd,
                momentum=MOMENTUM.get(optimizer, 0.0),
                dropout=dropout,
                has_residual=residual,
                batch_size=batch_size,
                epochs=epochs,
                seed=seed,
                split=split,
                checkpoint_epochs=tuple(sorted({e for e in extra if 1 <= e < epochs})),
                scheduler=scheduler,
                label_smoothing=smoothing,
                grad_clip=clip,
                input_noise=noise,
            )
        )
    return specs
