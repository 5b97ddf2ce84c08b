"""The columns of a zoo: one registry used for the Parquet schema, validation and the dataset card.

Every row of a zoo is one checkpoint of one training run. Metadata are plain typed columns so that any
Parquet or Arrow tool can query them; weights are one binary column holding a safetensors file (exact
names, shapes, dtypes and values).

Numeric fields declare their valid range (accuracies in [0, 1], losses >= 0, learning rate > 0, ...):
importers refuse values outside it (`Field.range_problem`), generated zoos never produce them, and the
dataset card documents it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

FORMAT_VERSION = 1
WEIGHTS = "weights"


@dataclass(frozen=True)
class Field:
    name: str
    type: pa.DataType
    description: str
    required: bool = False
    """Required in every zoo, imported or generated."""
    low: float | None = None
    """Smallest valid value (None: no lower bound)."""
    high: float | None = None
    """Largest valid value (None: no upper bound)."""
    low_open: bool = False
    """``low`` itself is invalid (a learning rate must be > 0)."""
    accuracy: bool = False
    """An accuracy, or a difference of two: a fraction (0.93 = 93 %). Importers read these as percentages
    (divided by 100) only when told to (``accuracy_percent=True``)."""

    def __post_init__(self) -> None:
        # The card documents each field by its description: the declared range is appended so the two can
        # never disagree.
        if self.has_range and "Valid range" not in self.description:
            object.__setattr__(self, "description", f"{self.description} Valid range: {self.range_text()}.")

    @property
    def has_range(self) -> bool:
        return self.low is not None or self.high is not None

    def range_text(self) -> str:
        """The valid range in interval notation: ``[0, 1]``, ``> 0``, ``>= 1``."""
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"<= {_num(self.high)}"
        return "any"

    def range_problem(self, value: object) -> str | None:
        """Why ``value`` is outside the declared range, or None when it is inside (or missing)."""
        if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
        value = int(value) if isinstance(value, numbers.Integral) else float(value)
        if math.isnan(value):
            return None
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and value > self.high
        if not (below or above):
            return None
        return f"{value!r} is outside the valid range {self.range_text()}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


_ACC = {"low": 0.0, "high": 1.0, "accuracy": True}
_NONNEG = {"low": 0.0}


FIELDS: tuple[Field, ...] = (
    Field(
        "model_id", pa.string(), "Unique id of the training run (all checkpoints of a run share it).", True
    ),
    Field("checkpoint_epoch", pa.int32(), "Epoch after which this checkpoint was taken.", **_NONNEG),
    Field("is_final", pa.bool_(), "True for the last checkpoint of the run (the trained model)."),
    Field(
        "cohort",
        pa.int32(),
        "Generated zoos: index of the architecture cohort the run was trained with.",
        **_NONNEG,
    ),
    Field(
        "dataset",
        pa.string(),
        "Task the model was trained on: `digits` (8x8 images), `mnist1d`, `tabular`, `tabular_reg` "
        "(regression), `shapes16` (16x16 RGB images) or `motifs` (one-hot sequences).",
    ),
    Field("family", pa.string(), "Architecture family: `mlp`, `cnn`, `resmlp` or `rescnn` (residual)."),
    Field("depth", pa.int32(), "Hidden dense layers (MLP) or convolution blocks (CNN).", **_NONNEG),
    Field("width", pa.int32(), "Units per hidden layer (MLP) or channels per convolution (CNN).", low=1),
    Field(
        "kernel_size", pa.int32(), "Convolution kernel size (0 for models without convolutions).", **_NONNEG
    ),
    Field(
        "pooling",
        pa.string(),
        "How a CNN halves its resolution: `avg` or `max` pooling, `stride` (stride-2 convolutions) or "
        "`none`; `none` for MLPs.",
    ),
    Field("has_conv_layers", pa.bool_(), "The model has convolution layers."),
    Field("has_batch_norm", pa.bool_(), "The model has BatchNorm layers."),
    Field("has_layer_norm", pa.bool_(), "The model has LayerNorm layers."),
    Field("has_group_norm", pa.bool_(), "The model has GroupNorm layers."),
    Field(
        "normalization",
        pa.string(),
        "Normalization layers: `none`, `batch`, `layer`, `group`, or a `+`-joined combination.",
    ),
    Field("has_dropout", pa.bool_(), "The model was trained with dropout (rate > 0)."),
    Field("has_residual", pa.bool_(), "The model has identity skip connections around its blocks."),
    Field("dropout", pa.float32(), "Dropout rate after hidden dense layers (0 = none).", low=0, high=1),
    Field("activation", pa.string(), "Nonlinearity: relu, tanh, gelu, sigmoid or leaky_relu."),
    Field("init", pa.string(), "Weight initialisation scheme (`default` = PyTorch's)."),
    Field(
        "optimizer",
        pa.string(),
        "Optimizer: sgd (momentum 0.9), adam, adamw, rmsprop, plain_sgd (no momentum), nesterov (momentum "
        "0.9), adagrad or nadam.",
    ),
    Field(
        "learning_rate",
        pa.float64(),
        "Peak learning rate (the constant one without a schedule).",
        low=0,
        low_open=True,
    ),
    Field(
        "weight_decay",
        pa.float64(),
        "Weight decay (L2 for sgd/adam/rmsprop, decoupled for adamw).",
        **_NONNEG,
    ),
    Field("momentum", pa.float32(), "SGD momentum (0 for the other optimizers).", low=0, high=1),
    Field(
        "scheduler",
        pa.string(),
        "Learning-rate schedule over the run's epochs: constant, cosine, step, onecycle or warmup_cosine.",
    ),
    Field("label_smoothing", pa.float32(), "Label smoothing of the cross-entropy (0 = none).", low=0, high=1),
    Field("grad_clip", pa.float32(), "Gradient-norm clipping threshold (0 = no clipping).", **_NONNEG),
    Field(
        "input_noise", pa.float32(), "Std of Gaussian noise added to training inputs (0 = none).", **_NONNEG
    ),
    Field("batch_size", pa.int32(), "Training batch size.", low=1),
    Field("epochs", pa.int32(), "Epochs the run was trained for (its final checkpoint's epoch).", **_NONNEG),
    Field("seed", pa.int64(), "Seed of the run's initialisation and data order."),
    Field(
        "train_samples",
        pa.int32(),
        "Training samples the run used, where its zoo drew the training-set size per cohort (else null).",
        low=1,
    ),
    Field("steps", pa.int64(), "Optimizer steps up to this checkpoint (null where not recorded).", **_NONNEG),
    Field(
        "train_accuracy", pa.float32(), "Accuracy on the training samples used, at this checkpoint.", **_ACC
    ),
    Field("train_loss", pa.float32(), "Mean cross-entropy on the training samples used.", **_NONNEG),
    Field("val_accuracy", pa.float32(), "Accuracy on the task's validation split.", **_ACC),
    Field("val_loss", pa.float32(), "Mean cross-entropy on the task's validation split.", **_NONNEG),
    Field("test_accuracy", pa.float32(), "Accuracy on the task's test split.", **_ACC),
    Field("test_loss", pa.float32(), "Mean cross-entropy on the task's test split.", **_NONNEG),
    Field(
        "generalization_gap", pa.float32(), "train_accuracy - test_accuracy.", low=-1, high=1, accuracy=True
    ),
    Field("num_params", pa.int64(), "Number of trainable parameters.", **_NONNEG),
    Field(
        "train_time_s",
        pa.float32(),
        "Training wall time in seconds (population-batched runs: the cohort's time divided by its size).",
        **_NONNEG,
    ),
    Field(
        WEIGHTS,
        pa.binary(),
        "The checkpoint's state dict as a safetensors file (exact names, shapes, dtypes).",
        True,
    ),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}
SPLITS = ("train", "validation", "test")


def range_violations(row: Mapping[str, Any]) -> list[str]:
    """``field: reason`` for every known field of ``row`` whose value is outside its declared range."""
    out = []
    for name, value in row.items():
        f = FIELD_BY_NAME.get(str(name))
        problem = f.range_problem(value) if f is not None else None
        if problem:
            out.append(f"{name}: {problem}")
    return out


def arrow_schema(extra: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """Schema of a generated zoo; imported zoos may add columns (``extra``) after the known ones."""
    fields = [pa.field(f.name, f.type) for f in FIELDS if f.name != WEIGHTS]
    fields += [pa.field(k, v) for k, v in (extra or {}).items() if k not in FIELD_BY_NAME]
    return pa.schema([*fields, pa.field(WEIGHTS, pa.binary())])


def hf_dtype(t: pa.DataType) -> str:
    """The `datasets` feature dtype name of an Arrow type (for the card's ``dataset_info``)."""
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    return {"double": "float64", "float": "float32", "halffloat": "float16"}.get(str(t), str(t))
