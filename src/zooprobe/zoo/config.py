"""The configuration of a generated zoo: `ZooConfig`, its presets and the value sets it chooses from
(optimizers, activations, initializations, families, ...). What is sampled from it is in `zooprobe.zoo.space`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from zooprobe.core.config import config, requirement
from zooprobe.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "plain_sgd", "nesterov", "adagrad", "nadam")
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
SCHEDULERS = ("constant", "cosine", "step", "onecycle", "warmup_cosine")
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
    "nadam": (-4.5, -1.3),
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
    cores), ``demo`` (the zoo of ``zooprobe demo``: 768 runs on 512 training samples, 108 test models),
    ``bench`` (>= 2000 diverse models, under ten minutes on two cores).
    """

    preset: Literal["tiny", "small", "demo", "bench", "foundation"] = "small"
    """Base values for every field left unset: tiny (tests), small (the default zoo), demo (the demo's zoo),
    bench (>= 2000 runs),
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
    (momentum 0.9), adagrad, nadam (torch.optim.NAdam's defaults)."""
    schedulers: list[str] | None = None
    """Learning-rate schedules to sample from (per run, over its own epochs): constant, cosine (to 0), step
    (x0.1 at 50% and 75%), onecycle (linear warm-up from lr/25 over 30%, cosine down to lr/1000),
    warmup_cosine (linear warm-up from 0 over the first 10% of the steps, then cosine to 0, per step)."""
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
    train_samples_range: list[int] | None = None
    """``[low, high]``: each cohort draws its training-set size log-uniform in low..high (capped at the task's
    training split; overrides ``max_train_samples``) and its rows record ``train_samples`` and ``steps``, so
    that heads can tell a learning rate from a training length. ``[]``: off (the presets)."""
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
        self._check_value_sets(need, TASKS)
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
        ts = list(self.train_samples_range)  # type: ignore[arg-type]
        need(
            not ts or (len(ts) == 2 and 1 <= int(ts[0]) <= int(ts[1])),
            f"train_samples_range must be [] or [low, high] with 1 <= low <= high, got {ts}",
        )

    def _check_value_sets(self, need: Any, tasks: Any) -> None:
        """Every list of choices is non-empty and names only known values (`tasks`: the known tasks)."""
        for name, allowed in (
            ("tasks", tasks),
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
    "train_samples_range": [],
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
    "demo": {
        **_COMMON,
        "n_models": 768,  # 108 test models
        "cohort_size": 32,
        "min_epochs": 1,
        "max_epochs": 6,
        "max_train_samples": 512,  # as the foundation corpus; builds as fast as `small`
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
        # the lists as they were when the corpus was built (benchmarks/foundation/manifest.json): newer
        # optimizers and schedules are drawn only by a config that names them
        "optimizers": ["sgd", "adam", "adamw", "rmsprop", "plain_sgd", "nesterov", "adagrad"],
        "schedulers": ["constant", "cosine", "step", "onecycle"],
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
