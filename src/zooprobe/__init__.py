"""zooprobe: read a neural network's weights and tell what it is.

The pipeline, one package each: ``zoo`` (populations of trained subject models) -> ``tokens`` (state dict
to token sequence) -> ``encoder`` (weight-space transformer) -> heads and metrics (next).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zooprobe")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

from zooprobe.encoder import PretrainConfig, load_encoder, pretrain_encoder
from zooprobe.errors import ConfigError, InvalidInputError, ZooFormatError, ZooprobeError
from zooprobe.zoo.build import build_zoo, builtin_zoo, merge_zoo
from zooprobe.zoo.space import ZooConfig
from zooprobe.zoo.store import Zoo, load_zoo

__all__ = [
    "ConfigError",
    "InvalidInputError",
    "PretrainConfig",
    "Zoo",
    "ZooConfig",
    "ZooFormatError",
    "ZooprobeError",
    "__version__",
    "build_zoo",
    "builtin_zoo",
    "load_encoder",
    "load_zoo",
    "merge_zoo",
    "pretrain_encoder",
]
