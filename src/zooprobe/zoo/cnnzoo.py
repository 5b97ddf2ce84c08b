"""The Small CNN Zoo (Unterthiner et al. 2020): its network as a PyTorch module, its files and its names.

The zoo (google-research/google-research, ``dnn_predict_accuracy``; CC-BY 4.0) holds 30,000 training runs
per dataset (MNIST, Fashion-MNIST, grayscale CIFAR-10, grayscale SVHN) of one fixed Keras CNN, with
checkpoints at epochs 0, 1, 2, 3, 20, 40, 60, 80 and 86. One dataset's folder holds:

* ``weights.npy``: one flat float32 vector per checkpoint (rows), 4,970 values for 1-channel input;
* ``layout.csv``: ``varname,start_idx,end_idx,shape`` per tensor, e.g.
  ``sequential/conv2d/kernel:0,16,160,"(3, 3, 1, 16)"``; kernels are Keras layouts (conv HWIO, dense
  (in, out));
* ``metrics.csv.gz``: one row per weights row: ``modeldir`` (the run), ``step`` (the epoch of the
  checkpoint; 86 = the end of training), ``test_accuracy``, ``train_accuracy``, ``test_loss``,
  ``train_loss`` and the run's hyperparameters as ``config.*`` columns.

The network, as ``dnn_predict_accuracy/train_network.py`` (``build_cnn``) defines it: three
``Conv2D(16, kernel_size=3, strides=2, activation=...)`` layers with Keras's default ``'valid'`` padding
(no padding; 28x28 input -> 13 -> 6 -> 2, 32x32 -> 15 -> 7 -> 3), each followed by dropout when the run
used it, then global average pooling and ``Dense(10)`` producing logits. `SmallCNN` is that network in
PyTorch (``padding=0``; dropout is a no-op in eval mode); parameter names are ``conv1``, ``conv2``,
``conv3`` and ``fc`` (``.weight``, ``.bias``), in OIHW and (out, in) layouts.

This module holds only the definitions; the importer is `zooprobe.zoo.flat.import_cnnzoo` (a preset of the
generic flat-vector importer), and `zooprobe.zoo.store.Zoo.model` rebuilds `SmallCNN` for imported rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zooprobe.errors import InvalidInputError, ZooFormatError

ARCHITECTURE = "small_cnn_zoo"
"""The manifest's ``architecture`` value of an imported Small CNN Zoo (`Zoo.model` rebuilds `SmallCNN`)."""

KERNEL_SIZE = 3
STRIDE = 2
FINAL_STEP = 86
CHECKPOINT_STEPS = (0, 1, 2, 3, 20, 40, 60, 80, 86)
N_PARAMS = 4970
"""Parameters of the network for 1-channel input (all four released datasets are grayscale)."""

KERAS_LAYOUT: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("sequential/conv2d/bias:0", (16,)),
    ("sequential/conv2d/kernel:0", (3, 3, 1, 16)),
    ("sequential/conv2d_1/bias:0", (16,)),
    ("sequential/conv2d_1/kernel:0", (3, 3, 16, 16)),
    ("sequential/conv2d_2/bias:0", (16,)),
    ("sequential/conv2d_2/kernel:0", (3, 3, 16, 16)),
    ("sequential/dense/bias:0", (10,)),
    ("sequential/dense/kernel:0", (16, 10)),
)
"""The variables of ``layout.csv`` in their order in each vector (sorted by name, bias before kernel, as
third-party loaders of the released files read them); the importer relies only on layout.csv's indices."""

WEIGHTS_FILE = "weights.npy"
LAYOUT_FILE = "layout.csv"
METRICS_FILES = ("metrics.csv.gz", "metrics.csv")
ID_COLUMN = "modeldir"
STEP_COLUMN = "step"
REQUIRED_COLUMNS = (STEP_COLUMN, "test_accuracy")
"""Columns an import cannot do without (besides the run id column)."""

METRICS_COLUMNS: dict[str, str] = {
    "test_accuracy": "test_accuracy",
    "train_accuracy": "train_accuracy",
    "test_loss": "test_loss",
    "train_loss": "train_loss",
    "config.activation": "activation",
    "config.w_init": "init",
    "config.optimizer": "optimizer",
    "config.learning_rate": "learning_rate",
    "config.l2reg": "weight_decay",
    "config.dropout": "dropout",
    "config.epochs": "epochs",
    "config.random_seed": "seed",
    "config.batchsize": "batch_size",
    "config.num_layers": "depth",
    "config.num_units": "width",
    "config.dnn_architecture": "family",
    "config.dataset": "dataset",
    # not zoo fields: kept as columns of these names
    "config.train_fraction": "train_fraction",
    "config.init_std": "init_std",
    "config.b_init": "b_init",
    "config.epochs_between_checkpoints": "epochs_between_checkpoints",
}
"""``metrics.csv.gz`` column -> zoo column. Other columns are kept under their own names."""

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "selu": F.selu,  # Keras and PyTorch use the same constants
    "elu": F.elu,
    "softplus": F.softplus,
    "softsign": F.softsign,
    "gelu": F.gelu,  # Keras's default is the exact (erf) form, as PyTorch's
    "swish": F.silu,
    "silu": F.silu,
    "linear": lambda x: x,
}
"""Keras activation names (``config.activation``) the module supports."""

_VARNAME = re.compile(r"(?:(?P<prefix>.*)/)?(?P<layer>[^/]+)/(?P<kind>kernel|bias)(?::\d+)?")
_LAYER_INDEX = re.compile(r"(?P<base>.*?)(?:_(?P<index>\d+))?")


class SmallCNN(nn.Module):
    """The Small CNN Zoo network: 3 x (3x3 conv, stride 2, no padding, activation[, dropout]), global average
    pooling, a dense layer to logits. Input: NCHW images (N, ``in_channels``, H, W), in [-1, 1] as the zoo
    was trained."""

    def __init__(
        self,
        activation: str = "relu",
        *,
        in_channels: int = 1,
        units: int = 16,
        n_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise InvalidInputError(
                f"activation {activation!r} is not one the Small CNN Zoo module supports "
                f"({', '.join(ACTIVATIONS)})"
            )
        self.activation = activation
        self.conv1 = nn.Conv2d(in_channels, units, KERNEL_SIZE, stride=STRIDE, padding=0)
        self.conv2 = nn.Conv2d(units, units, KERNEL_SIZE, stride=STRIDE, padding=0)
        self.conv3 = nn.Conv2d(units, units, KERNEL_SIZE, stride=STRIDE, padding=0)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(units, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation]
        for conv in (self.conv1, self.conv2, self.conv3):
            x = self.dropout(act(conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def state_dict_names(
    varnames: Sequence[str], shapes: Sequence[tuple[int, ...]], where: str
) -> dict[str, str]:
    """``layout.csv`` varnames -> `SmallCNN` parameter names, after checking the layout is this network.

    Keras names layers ``conv2d``, ``conv2d_1``, ``conv2d_2`` and ``dense`` (another session may number them
    on, e.g. ``conv2d_3``...); convolutions are taken in the order of their number. Raises
    `InvalidInputError` naming what does not fit.
    """
    layers = _keras_layers(varnames, shapes, where)
    convs, dense = [], []
    for layer, parts in layers.items():
        if set(parts) != {"kernel", "bias"}:
            raise InvalidInputError(
                f"{where}: layer {layer!r} needs a kernel and a bias, has {sorted(parts)}"
            )
        kernel = parts["kernel"][1]
        (convs if len(kernel) == 4 else dense).append(layer)
    if len(convs) != 3 or len(dense) != 1 or len(layers[dense[0]]["kernel"][1]) != 2:
        raise InvalidInputError(
            f"{where}: expected 3 convolution layers (4-D kernels) and 1 dense layer (2-D kernel), found "
            f"{len(convs)} and {len(dense)} ({', '.join(layers)}); this is not the Small CNN Zoo network: "
            "use `zooprobe zoo import-flat` for other networks"
        )

    def order(layer: str) -> tuple[str, int]:
        m = _LAYER_INDEX.fullmatch(layer)
        assert m is not None
        return m["base"], int(m["index"] or 0)

    convs.sort(key=order)
    out: dict[str, str] = {}
    channels = None
    for i, layer in enumerate(convs, start=1):
        h, w, c_in, c_out = layers[layer]["kernel"][1]
        if (h, w) != (KERNEL_SIZE, KERNEL_SIZE) or (channels is not None and c_in != channels):
            raise InvalidInputError(
                f"{where}: convolution {layer!r} has kernel shape {(h, w, c_in, c_out)} (HWIO); the Small "
                "CNN Zoo network has 3x3 kernels chained channel to channel"
            )
        if layers[layer]["bias"][1] != (c_out,):
            raise InvalidInputError(
                f"{where}: bias of {layer!r} has shape {layers[layer]['bias'][1]}, not {(c_out,)}"
            )
        channels = c_out
        out[layers[layer]["kernel"][0]] = f"conv{i}.weight"
        out[layers[layer]["bias"][0]] = f"conv{i}.bias"
    d_in, d_out = layers[dense[0]]["kernel"][1]
    if d_in != channels or layers[dense[0]]["bias"][1] != (d_out,):
        raise InvalidInputError(
            f"{where}: dense layer {dense[0]!r} has kernel {(d_in, d_out)} and bias "
            f"{layers[dense[0]]['bias'][1]}; after global average pooling it must read {channels} channels"
        )
    out[layers[dense[0]]["kernel"][0]] = "fc.weight"
    out[layers[dense[0]]["bias"][0]] = "fc.bias"
    return out


def _keras_layers(
    varnames: Sequence[str], shapes: Sequence[tuple[int, ...]], where: str
) -> dict[str, dict[str, tuple[str, tuple[int, ...]]]]:
    """``layer -> {"kernel" | "bias": (varname, shape)}`` of Keras varnames (``LAYER/kernel:0``)."""
    layers: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    for name, shape in zip(varnames, shapes, strict=True):
        match = _VARNAME.fullmatch(name)
        if match is None:
            raise InvalidInputError(
                f"{where}: varname {name!r} is not a Keras kernel or bias name (LAYER/kernel:0, "
                "LAYER/bias:0); this is not the Small CNN Zoo layout: use `zooprobe zoo import-flat` for "
                "other networks"
            )
        layers.setdefault(match["layer"], {})[match["kind"]] = (name, shape)
    return layers


def model_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, object], where: str = "row"
) -> SmallCNN:
    """A `SmallCNN` shaped like ``state_dict`` (channels, units, classes) with the activation and dropout of
    ``meta`` (a zoo row), weights loaded strictly, in eval mode."""
    activation = meta.get("activation")
    if not isinstance(activation, str) or not activation:
        raise ZooFormatError(f"{where} has no activation: the Small CNN Zoo module cannot be rebuilt")
    dropout = meta.get("dropout")
    try:
        units, in_channels = (int(n) for n in state_dict["conv1.weight"].shape[:2])
        n_classes = int(state_dict["fc.weight"].shape[0])
    except KeyError as e:
        raise ZooFormatError(f"{where}: no {e.args[0]!r} tensor: not a Small CNN Zoo state dict") from None
    try:
        rate = float(dropout) if dropout is not None else 0.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        rate = 0.0
    rate = rate if math.isfinite(rate) and 0 < rate < 1 else 0.0  # missing or unusable: no dropout (eval)
    model = SmallCNN(activation, in_channels=in_channels, units=units, n_classes=n_classes, dropout=rate)
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()


__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURE",
    "CHECKPOINT_STEPS",
    "FINAL_STEP",
    "KERAS_LAYOUT",
    "METRICS_COLUMNS",
    "N_PARAMS",
    "SmallCNN",
    "model_from_state_dict",
    "state_dict_names",
]
