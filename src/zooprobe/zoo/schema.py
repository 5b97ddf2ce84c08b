"""The columns of a zoo: one registry used for the Parquet schema, validation and the dataset card.

Every row of a zoo is one checkpoint of one training run. Metadata are plain typed columns so that any
Parquet or Arrow tool can query them; weights are one binary column holding a safetensors file (exact
names, shapes, dtypes and values).
"""

from __future__ import annotations

from dataclasses import dataclass

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


FIELDS: tuple[Field, ...] = (
    Field(
        "model_id", pa.string(), "Unique id of the training run (all checkpoints of a run share it).", True
    ),
    Field("checkpoint_epoch", pa.int32(), "Epoch after which this checkpoint was taken."),
    Field("is_final", pa.bool_(), "True for the last checkpoint of the run (the trained model)."),
    Field("cohort", pa.int32(), "Generated zoos: index of the architecture cohort the run was trained with."),
    Field("dataset", pa.string(), "Task the model was trained on: `digits` (8x8 images) or `mnist1d`."),
    Field("family", pa.string(), "Architecture family: `mlp` or `cnn`."),
    Field("depth", pa.int32(), "Hidden dense layers (MLP) or convolution blocks (CNN)."),
    Field("width", pa.int32(), "Units per hidden layer (MLP) or channels per convolution (CNN)."),
    Field("has_conv_layers", pa.bool_(), "The model has convolution layers."),
    Field("has_batch_norm", pa.bool_(), "The model has BatchNorm layers."),
    Field("has_layer_norm", pa.bool_(), "The model has LayerNorm layers."),
    Field("has_dropout", pa.bool_(), "The model was trained with dropout (rate > 0)."),
    Field("has_residual", pa.bool_(), "The model has identity skip connections around its blocks."),
    Field("dropout", pa.float32(), "Dropout rate after hidden dense layers (0 = none)."),
    Field("activation", pa.string(), "Nonlinearity: relu, tanh, gelu, sigmoid or leaky_relu."),
    Field("init", pa.string(), "Weight initialisation scheme (`default` = PyTorch's)."),
    Field("optimizer", pa.string(), "Optimizer: sgd (momentum 0.9), adam, adamw or rmsprop."),
    Field("learning_rate", pa.float64(), "Constant learning rate."),
    Field("weight_decay", pa.float64(), "Weight decay (L2 for sgd/adam/rmsprop, decoupled for adamw)."),
    Field("momentum", pa.float32(), "SGD momentum (0 for the other optimizers)."),
    Field("batch_size", pa.int32(), "Training batch size."),
    Field("epochs", pa.int32(), "Epochs the run was trained for (its final checkpoint's epoch)."),
    Field("seed", pa.int64(), "Seed of the run's initialisation and data order."),
    Field("train_accuracy", pa.float32(), "Accuracy on the training samples used, at this checkpoint."),
    Field("train_loss", pa.float32(), "Mean cross-entropy on the training samples used."),
    Field("val_accuracy", pa.float32(), "Accuracy on the task's validation split."),
    Field("val_loss", pa.float32(), "Mean cross-entropy on the task's validation split."),
    Field("test_accuracy", pa.float32(), "Accuracy on the task's test split."),
    Field("test_loss", pa.float32(), "Mean cross-entropy on the task's test split."),
    Field("generalization_gap", pa.float32(), "train_accuracy - test_accuracy."),
    Field("num_params", pa.int64(), "Number of trainable parameters."),
    Field(
        "train_time_s",
        pa.float32(),
        "Training wall time in seconds (population-batched runs: the cohort's time divided by its size).",
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
