"""The one configuration schema of head training, shared by the Python API and ``zooprobe train``.

`TrainConfig` nests `HeadConfig` (architecture), `OptimConfig` (optimizer and schedule) and `StopConfig`
(early stopping). The resolved config is written as ``config.yaml`` into every run folder; ``zooprobe
train --config RUN/config.yaml`` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from zooprobe.core.config import config, dataclass_from_dict, requirement
from zooprobe.core.device import check_device_name
from zooprobe.errors import ConfigError
from zooprobe.heads.config import TASKS, HeadConfig

Task = Literal["patterns", "accuracy", "hyperparameters"]


@config()
@dataclass
class OptimConfig:
    """Optimizer (AdamW) and learning-rate schedule."""

    lr: float = 1e-3
    """Learning rate of the head (the encoder's is lr * encoder_lr_ratio when fine-tuning)."""
    weight_decay: float = 1e-4
    """AdamW weight decay (not applied to biases and norm parameters)."""
    batch_size: int = 64
    """Models per optimization step (across all processes under torchrun)."""
    epochs: int = 100
    """Maximum epochs (early stopping usually ends training sooner)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""
    scheduler: Literal["plateau", "cosine", "none"] = "plateau"
    """``plateau``: reduce on plateau of the monitored metric; ``cosine``: linear warmup then cosine decay."""
    warmup_fraction: float = 0.05
    """Cosine schedule: fraction of all steps spent warming up linearly."""
    plateau_factor: float = 0.5
    """Plateau schedule: factor applied to every learning rate after a plateau."""
    plateau_patience: int = 4
    """Plateau schedule: evaluations without improvement before the learning rate drops."""
    min_lr_ratio: float = 0.01
    """Lowest learning rate, as a fraction of the initial one (both schedules)."""


@config()
@dataclass
class StopConfig:
    """Early stopping on a validation metric."""

    monitor: str = "loss"
    """Validation metric to watch: ``loss`` or any metric name the task reports (``r2``, ``macro_f1``,
    ``learning_rate/r2``, ``score``...). The direction (lower/higher is better) follows from the name."""
    patience: int = 10
    """Evaluations without improvement before training stops (counted in evaluations, not epochs)."""
    min_delta: float = 0.0
    """Minimum change that counts as an improvement."""
    eval_every: int = 1
    """Evaluate on the validation split every this many epochs (and after the last one)."""


@config()
@dataclass
class TrainConfig:
    """Everything that determines a head-training run."""

    task: Task = "accuracy"
    """What to predict: ``patterns`` (multi-label flags), ``accuracy`` or ``hyperparameters``."""
    zoo: str = "default"
    """Zoo: a folder, a Hub dataset repo id, or ``default`` (the built-in small zoo)."""
    zoo_revision: str | None = None
    """Hub revision of the zoo (branch, tag or commit)."""
    encoder: str = "default"
    """Encoder: a folder, a Hub model repo id, or a name of `zooprobe.list_encoders`: ``default`` (the
    foundation encoder shipped in the package), ``v2``/``v3`` (pretrained once into the cache)."""
    encoder_revision: str | None = None
    """Hub revision of the encoder."""
    mode: Literal["frozen", "finetune"] = "frozen"
    """``frozen``: train the head on cached representations; ``finetune``: train encoder and head."""
    targets: list[str] | None = None
    """Target fields (default: every has_* flag / test_accuracy / lr, wd, optimizer, activation, init,
    family)."""
    loss_weights: dict[str, float] = field(default_factory=dict)
    """Per-target loss weights (default 1)."""
    log_targets: dict[str, float] | None = None
    """Continuous targets modelled in log10 space, with the floor that replaces values below it (0 weight
    decay). Default: learning_rate (floor 1e-8) and weight_decay (floor 1e-7)."""
    bounded_accuracy: bool = True
    """Accuracy head: predict through a sigmoid, bounded to [0, 1] (accuracy is a fraction; False: an
    unbounded regression on the standardized value)."""
    checkpoints: Literal["final", "all"] = "final"
    """Use only each run's final checkpoint (``final``) or every stored checkpoint (``all``)."""
    head: HeadConfig = field(default_factory=HeadConfig)
    """The head's architecture (``--head.hidden_sizes 256,128``, ``--head.kind gbm``...)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule (``--optim.lr``, ``--optim.epochs``...)."""
    stop: StopConfig = field(default_factory=StopConfig)
    """Early stopping (``--stop.patience``, ``--stop.monitor``...)."""
    encoder_lr_ratio: float = 0.1
    """Fine-tuning: the encoder's learning rate as a fraction of the head's."""
    unfreeze_top_layers: int | None = None
    """Fine-tuning: train only the top k encoder blocks (None: all of them)."""
    init_from: str | None = None
    """Initialize the head from a finished run folder's best head (same task, targets and head
    architecture): e.g. fine-tune starting from a frozen run's head (linear probing, then fine-tuning)."""
    augment: bool = False
    """Fine-tuning: function-preserving neuron permutations and multiplicative noise on training models."""
    noise_sigma: float = 0.05
    """Fine-tuning with augment: sigma of the multiplicative weight noise."""
    cache: bool = True
    """Frozen: read/write representations in the on-disk cache (False: compute them in memory for this run
    only)."""
    allow_overlap: bool = False
    """Allow validation/test models that the encoder was pretrained on (the run is then marked)."""
    allow_split_leaks: bool = False
    """Allow models with identical weights in more than one split of the zoo (a copy of a training model in
    validation or test inflates its metrics; the run is then marked)."""
    seed: int = 0
    """Seed of the head's initialization, batch order, dropout and augmentations."""
    device: str = "cpu"
    """``cpu`` or ``cuda`` (``cuda:N``); under torchrun each process uses its local rank's GPU."""
    amp: bool = True
    """Mixed precision (bfloat16 autocast) on GPU; ignored on CPU."""
    encode_batch_size: int = 64
    """Windows per encoder forward pass."""
    weights_memory_mb: float = 512.0
    """How many MiB of the zoo's weights (their stored size; decoded and tokenized models take about 1-3x
    that) head training holds in memory at once. Encoding works in chunks of at most this size. Fine-tuning
    tokenizes the selected models once and keeps them when their weights fit (fastest); a larger zoo is read
    from its files batch by batch instead (every epoch decodes and tokenizes again; batches are drawn from a
    few shuffled row groups at a time, in a seeded order). Lower it to stream a zoo that does not fit in
    memory."""

    def validate(self) -> None:
        need = requirement("TrainConfig", ConfigError)

        need(self.task in TASKS, f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        need(self.mode in ("frozen", "finetune"), f"mode must be frozen or finetune, got {self.mode!r}")
        o = self.optim
        need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
        need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
        need(o.batch_size >= 1, f"optim.batch_size must be >= 1, got {o.batch_size}")
        need(o.epochs >= 1, f"optim.epochs must be >= 1, got {o.epochs}")
        need(o.grad_clip >= 0, f"optim.grad_clip must be >= 0, got {o.grad_clip}")
        need(o.scheduler in ("plateau", "cosine", "none"), f"optim.scheduler unknown: {o.scheduler!r}")
        need(0 <= o.warmup_fraction < 1, f"optim.warmup_fraction must be in [0, 1), got {o.warmup_fraction}")
        need(0 < o.plateau_factor < 1, f"optim.plateau_factor must be in (0, 1), got {o.plateau_factor}")
        need(0 < o.min_lr_ratio <= 1, f"optim.min_lr_ratio must be in (0, 1], got {o.min_lr_ratio}")
        need(self.stop.patience >= 1, f"stop.patience must be >= 1, got {self.stop.patience}")
        need(self.stop.eval_every >= 1, f"stop.eval_every must be >= 1, got {self.stop.eval_every}")
        need(self.stop.min_delta >= 0, f"stop.min_delta must be >= 0, got {self.stop.min_delta}")
        need(self.encoder_lr_ratio > 0, f"encoder_lr_ratio must be > 0, got {self.encoder_lr_ratio}")
        need(self.noise_sigma >= 0, f"noise_sigma must be >= 0, got {self.noise_sigma}")
        need(self.encode_batch_size >= 1, "encode_batch_size must be >= 1")
        need(
            math.isfinite(self.weights_memory_mb) and self.weights_memory_mb > 0,
            f"weights_memory_mb must be a finite number > 0, got {self.weights_memory_mb}",
        )
        weights = self.loss_weights
        need(isinstance(weights, dict), f"loss_weights must be a mapping, got {weights!r}")
        for name, w in weights.items():
            number = isinstance(w, int | float) and not isinstance(w, bool)
            need(
                number and math.isfinite(w) and w >= 0,
                f"loss_weights[{name!r}] is {w!r}: a loss weight must be a finite number >= 0 (0 ignores the "
                "target)",
            )
        if self.loss_weights and self.targets:
            unknown = sorted(set(self.loss_weights) - set(self.targets))
            need(not unknown, f"loss_weights name(s) {unknown} that are not in targets {self.targets}")
        need(bool(self.stop.monitor), "stop.monitor must name a validation metric (default: loss)")
        need(
            self.checkpoints in ("final", "all"),
            f"checkpoints must be final or all, got {self.checkpoints!r}",
        )
        if self.augment:
            need(
                self.mode == "finetune",
                "augment needs mode=finetune (frozen training reads cached representations)",
            )
        if self.head.kind == "gbm":
            need(
                self.mode == "frozen",
                "head.kind=gbm fits LightGBM on the frozen encoder's outputs and the weight statistics; use "
                "mode=frozen",
            )
            need(self.init_from is None, "head.kind=gbm: init_from applies to neural heads only")
        check_device_name(self.device, "TrainConfig: device")

    @classmethod
    def from_dict(cls, data: object) -> TrainConfig:
        """Strict (`zooprobe.core.config`): unknown keys are errors, omitted ones take their defaults."""
        cfg = dataclass_from_dict(cls, data, ConfigError, require_all=False)
        cfg.validate()
        return cfg


HEAD_PRESETS: dict[str, dict[str, Any]] = {
    "frozen": {
        "mode": "frozen",
        "optim": {"epochs": 200, "batch_size": 32, "lr": 1e-3},
        "stop": {"patience": 20},
    },
    "finetune": {
        "mode": "finetune",
        "optim": {"epochs": 12, "batch_size": 32, "lr": 5e-4},
        "stop": {"patience": 5},
    },
}
"""Head-training settings by mode, as the demo uses them (every other field keeps its default)."""


def preset_config(preset: str, **fields: Any) -> TrainConfig:
    """A `TrainConfig` from a `HEAD_PRESETS` entry, with `fields` (``task=``, ``zoo=``, ...) set on top."""
    if preset not in HEAD_PRESETS:
        raise ConfigError(f"unknown head-training preset {preset!r}; choose one of {', '.join(HEAD_PRESETS)}")
    values = HEAD_PRESETS[preset]
    cfg = TrainConfig(
        mode=values["mode"],
        optim=OptimConfig(**values["optim"]),
        stop=StopConfig(**values["stop"]),
    )
    return dataclasses.replace(cfg, **fields)


__all__ = ["HEAD_PRESETS", "OptimConfig", "StopConfig", "Task", "TrainConfig", "preset_config"]
