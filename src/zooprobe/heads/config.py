"""`HeadConfig`, the architecture of a prediction head: a plain dataclass without torch, so that the
command line builds its parser (and answers ``--help``) before any heavy import. The heads themselves are
`zooprobe.heads.prediction_heads`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from zooprobe.core.config import config
from zooprobe.errors import ConfigError

TASKS: tuple[str, ...] = ("patterns", "accuracy", "hyperparameters")
"""The three tasks a head predicts."""

MAX_LAYER_SIZE = 1 << 16
"""The largest width of a head layer (``hidden_sizes``, ``branch_hidden``, ``attention_queries``): a
saved config asking for more is refused before anything is allocated."""
MAX_HIDDEN_LAYERS = 64
"""The most hidden layers of a head's trunk."""

HeadKind = Literal["mlp", "gbm"]
GBMFeatures = Literal["stats", "stats+rep"]
Activation = Literal["gelu", "relu", "silu", "tanh"]
Norm = Literal["none", "layernorm", "batchnorm"]
HeadPooling = Literal["mean", "attention"]


def _size(name: str, value: Any, low: int) -> int:
    """`value` as a layer size in [`low`, `MAX_LAYER_SIZE`] (an integer; 64.0 is 64), else a `ConfigError`."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and isinstance(value, float):
        ok = value.is_integer()
    if not ok or not low <= value <= MAX_LAYER_SIZE:
        raise ConfigError(
            f"HeadConfig.{name}: {str(value)[:40]!r} is not a layer size; sizes are integers in "
            f"[{low}, {MAX_LAYER_SIZE}]"
        )
    return int(value)


@config(ConfigError, require_all=True)
@dataclass
class HeadConfig:
    """Architecture of a prediction head (saved with it)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [128, 128])
    """Hidden layer sizes of the shared trunk MLP (empty: a linear head)."""
    dropout: float = 0.1
    """Dropout after each hidden layer."""
    activation: Activation = "gelu"
    """Nonlinearity of the trunk and branches."""
    norm: Norm = "layernorm"
    """Normalization after each hidden linear layer."""
    pooling: HeadPooling = "mean"
    """``mean``: the encoder's pooled representation; ``attention``: learned-query attention over tokens."""
    attention_queries: int = 4
    """Learned queries of attention pooling (their outputs are concatenated)."""
    branch_hidden: int = 64
    """Hyperparameter head: hidden size of each target's branch (0: a linear branch)."""
    input_norm: bool = True
    """LayerNorm on the head's input (representations of different encoders differ in scale)."""
    statistics: bool = False
    """Also give the head each model's weight-statistics features (`zooprobe.tokens.statistics`,
    standardized with the train split's mean and std, which are saved with the head): the field's
    strongest simple signal, given directly next to the encoder's representation."""
    kind: HeadKind = "mlp"
    """``mlp``: the neural head described by the fields above; ``gbm``: gradient boosting (LightGBM, one
    model per target, early-stopped on the validation split) on `features`, saved as LightGBM text
    (`zooprobe.heads.gbm_head`). The MLP fields are then unused."""
    features: GBMFeatures = "stats"
    """``gbm`` heads: their input, the weight statistics (``stats``) or the statistics and the frozen
    encoder's pooled representation (``stats+rep``)."""

    @property
    def uses_statistics(self) -> bool:
        """Whether the head reads weight statistics (``statistics``, or any ``gbm`` head)."""
        return self.statistics or self.kind == "gbm"

    def __post_init__(self) -> None:
        if isinstance(self.hidden_sizes, str | bytes) or not isinstance(self.hidden_sizes, list | tuple):
            raise ConfigError(
                f"HeadConfig.hidden_sizes must be a list of layer sizes, got {str(self.hidden_sizes)[:60]!r}"
            )
        if len(self.hidden_sizes) > MAX_HIDDEN_LAYERS:
            raise ConfigError(
                f"HeadConfig.hidden_sizes has {len(self.hidden_sizes)} layers, at most {MAX_HIDDEN_LAYERS}"
            )
        self.hidden_sizes = [_size("hidden_sizes", h, 1) for h in self.hidden_sizes]
        self.attention_queries = _size("attention_queries", self.attention_queries, 1)
        self.branch_hidden = _size("branch_hidden", self.branch_hidden, 0)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"HeadConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.activation not in get_args(Activation):
            raise ConfigError(
                f"HeadConfig.activation must be one of {list(get_args(Activation))}, got {self.activation!r}"
            )
        if self.norm not in ("none", "layernorm", "batchnorm"):
            raise ConfigError(f"HeadConfig.norm must be none, layernorm or batchnorm, got {self.norm!r}")
        if self.pooling not in ("mean", "attention"):
            raise ConfigError(f"HeadConfig.pooling must be mean or attention, got {self.pooling!r}")
        if self.attention_queries < 1 or self.branch_hidden < 0:
            raise ConfigError("HeadConfig.attention_queries must be >= 1 and branch_hidden >= 0")
        if self.kind not in ("mlp", "gbm"):
            raise ConfigError(f"HeadConfig.kind must be mlp or gbm, got {self.kind!r}")
        if self.features not in ("stats", "stats+rep"):
            raise ConfigError(f"HeadConfig.features must be stats or stats+rep, got {self.features!r}")
        if self.kind == "gbm" and self.pooling != "mean":
            raise ConfigError("HeadConfig: a gbm head reads the pooled representation; use pooling=mean")

    @classmethod
    def from_saved(cls, data: Mapping[str, Any]) -> HeadConfig:
        """`from_dict` of a head's saved config.json entry; fields added since it was saved (``kind``,
        ``features``) take their defaults, which is what such a head was."""
        defaults = {"kind": "mlp", "features": "stats"}
        return cls.from_dict({**defaults, **dict(data)})  # type: ignore[attr-defined,no-any-return]


__all__ = [
    "MAX_HIDDEN_LAYERS",
    "MAX_LAYER_SIZE",
    "TASKS",
    "Activation",
    "GBMFeatures",
    "HeadConfig",
    "HeadKind",
    "HeadPooling",
    "Norm",
]
