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

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid", "leaky_relu")
INITS = ("default", "kaiming_normal", "xavier_uniform", "xavier_normal", "orthogonal", "normal")
FAMILIES = ("mlp", "cnn")
SPLITS = ("train", "validation", "test")

# Log10 learning-rate ranges per optimizer: wide enough to reach both "barely moves" and "diverges",
# centred so that every optimizer produces its share of good models.
LR_LOG10 = {"sgd": (-3.5, -0.3), "adam": (-4.5, -1.3), "adamw": (-4.5, -1.3), "rmsprop": (-5.0, -1.8)}


@config()
@dataclass
class ZooConfig:
    """Configuration of a generated zoo. Fields left as ``None`` take the preset's value.

    Presets: ``tiny`` (tests, seconds), ``small`` (the built-in default zoo, under a minute on two
    cores), ``bench`` (>= 2000 diverse models, under ten minutes on two cores).
    """

    preset: Literal["tiny", "small", "bench"] = "small"
    """Base values for every field left unset: tiny (tests), small (the default zoo), bench (>= 2000 runs)."""
    n_models: int | None = None
    """Number of training runs (models); the last cohort may be smaller."""
    cohort_size: int | None = None
    """Models sharing one architecture, trained together as a population."""
    tasks: list[str] | None = None
    """Datasets to train on: digits (8x8 images, Conv2d) and/or mnist1d (length-40 signals, Conv1d)."""
    families: list[str] | None = None
    """Architecture families: mlp and/or cnn."""
    mlp_depths: list[int] | None = None
    """Hidden layers of an MLP (residual connections join layers 2..depth)."""
    mlp_widths: list[int] | None = None
    """Units of each hidden layer of an MLP (one width per model, sampled from this list)."""
    cnn_depths: list[int] | None = None
    """Convolution blocks of a CNN."""
    cnn_widths: list[int] | None = None
    """Channels of each convolution block."""
    batch_sizes: list[int] | None = None
    """Training batch sizes (one per cohort, sampled from this list)."""
    min_epochs: int | None = None
    """Fewest training epochs of a run (each run's epochs are uniform in min_epochs..max_epochs)."""
    max_epochs: int | None = None
    """Most training epochs of a run."""
    optimizers: list[str] | None = None
    """Optimizers to sample from: sgd (momentum 0.9), adam, adamw, rmsprop."""
    activations: list[str] | None = None
    """Activations to sample from: relu, tanh, gelu, sigmoid, leaky_relu."""
    inits: list[str] | None = None
    """Weight initializations to sample from: default (PyTorch's), kaiming_normal, xavier_uniform,
    xavier_normal, orthogonal, normal (std 0.05)."""
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
    checkpoint_epochs: list[int] | None = None
    """Extra checkpoints kept per run (epochs, if the run reaches them) besides the final one."""
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
        ):
            values = getattr(self, name)
            need(len(values) > 0, f"{name} must not be empty")
            bad = [v for v in values if v not in allowed]
            need(not bad, f"{name}: unknown value(s) {bad}; allowed: {', '.join(allowed)}")
        for name in ("mlp_depths", "cnn_depths", "mlp_widths", "cnn_widths", "batch_sizes"):
            values = getattr(self, name)
            need(len(values) > 0 and all(int(v) >= 1 for v in values), f"{name} must be positive integers")
        need(1 <= self.min_epochs <= self.max_epochs, "need 1 <= min_epochs <= max_epochs")  # type: ignore[operator]
        for name in ("p_batch_norm", "p_layer_norm", "p_dropout", "p_residual", "p_zero_weight_decay"):
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
        return math.ceil(self.n_models / self.cohort_size)  # type: ignore[operator]


_COMMON: dict[str, Any] = {
    "tasks": ["digits", "mnist1d"],
    "families": ["mlp", "cnn"],
    "mlp_depths": [2, 3, 4],
    "mlp_widths": [16, 32, 64],
    "cnn_depths": [2, 3],
    "cnn_widths": [4, 8, 16],
    "batch_sizes": [32, 64, 128],
    "optimizers": list(OPTIMIZERS),
    "activations": list(ACTIVATIONS),
    "inits": list(INITS),
    "weight_decay_log10": (-6.0, -1.5),
    "p_zero_weight_decay": 0.1,
    "p_batch_norm": 0.5,
    "p_layer_norm": 0.5,
    "p_dropout": 0.5,
    "p_residual": 0.5,
    "checkpoint_epochs": [],
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

    @property
    def has_conv_layers(self) -> bool:
        return self.family == "cnn"


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
            "has_conv_layers": a.has_conv_layers,
            "has_batch_norm": a.has_batch_norm,
            "has_layer_norm": a.has_layer_norm,
            "has_dropout": self.has_dropout,
            "has_residual": self.has_residual,
            "dropout": self.dropout,
            "activation": self.activation,
            "init": self.init,
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "seed": self.seed,
        }


def sample_cohort(cfg: ZooConfig, cohort: int) -> list[ModelSpec]:
    """Sample cohort ``cohort`` of a resolved config. Pure function of (config, cohort index)."""
    import numpy as np  # heavy: numpy (the command line parses without it)

    from zooprobe.zoo.data import load_task  # heavy: imports torch

    rng = np.random.default_rng([cfg.seed, cohort, 0x5EED])
    task = str(rng.choice(cfg.tasks))
    family = str(rng.choice(cfg.families))
    depths, widths = (cfg.mlp_depths, cfg.mlp_widths) if family == "mlp" else (cfg.cnn_depths, cfg.cnn_widths)
    data = load_task(task)
    arch = ArchSpec(
        task=task,
        family=family,
        depth=int(rng.choice(depths)),  # type: ignore[arg-type]
        width=int(rng.choice(widths)),  # type: ignore[arg-type]
        has_batch_norm=bool(rng.random() < cfg.p_batch_norm),  # type: ignore[operator]
        has_layer_norm=bool(rng.random() < cfg.p_layer_norm),  # type: ignore[operator]
        input_shape=data.input_shape,
        n_classes=data.n_classes,
    )
    batch_size = int(rng.choice(cfg.batch_sizes))  # type: ignore[arg-type]
    first = cohort * cfg.cohort_size  # type: ignore[operator]
    n = min(cfg.cohort_size, cfg.n_models - first)  # type: ignore[operator,type-var]
    fr = np.asarray(cfg.split_fractions, dtype=float)
    wd_lo, wd_hi = cfg.weight_decay_log10  # type: ignore[misc]
    specs = []
    for j in range(n):
        optimizer = str(rng.choice(cfg.optimizers))
        lo, hi = LR_LOG10[optimizer]
        wd = 0.0 if rng.random() < cfg.p_zero_weight_decay else float(10 ** rng.uniform(wd_lo, wd_hi))  # type: ignore[operator]
        dropout = float(rng.uniform(0.1, 0.5)) if rng.random() < cfg.p_dropout else 0.0  # type: ignore[operator]
        epochs = int(rng.integers(cfg.min_epochs, cfg.max_epochs + 1))  # type: ignore[operator]
        index = first + j
        specs.append(
            ModelSpec(
                model_id=f"m{index:06d}",
                index=index,
                cohort=cohort,
                arch=arch,
                activation=str(rng.choice(cfg.activations)),
                init=str(rng.choice(cfg.inits)),
                optimizer=optimizer,
                learning_rate=float(10 ** rng.uniform(lo, hi)),
                weight_decay=wd,
                momentum=0.9 if optimizer == "sgd" else 0.0,
                dropout=dropout,
                has_residual=bool(rng.random() < cfg.p_residual),  # type: ignore[operator]
                batch_size=batch_size,
                epochs=epochs,
                seed=int(rng.integers(0, 2**31 - 1)),
                split=str(rng.choice(SPLITS, p=fr)),
                checkpoint_epochs=tuple(sorted({e for e in cfg.checkpoint_epochs if 1 <= e < epochs})),  # type: ignore[union-attr]
            )
        )
    return specs
