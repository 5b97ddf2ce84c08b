"""The zoo folder's format: file names, row-group sizes, the output kind, and a row's weights payload
(a state dict as safetensors bytes) with its content hash.
"""

from __future__ import annotations

import hashlib
import json

import torch

from zooprobe.core.files import parse_json
from zooprobe.core.outputs import OutputKind
from zooprobe.core.state_dicts import is_running_stat
from zooprobe.core.tensorfile import load_safetensors_bytes, safetensors_bytes
from zooprobe.errors import InvalidInputError

MANIFEST = "zooprobe_manifest.json"
WRITING = ".zooprobe-writing"
STAGING = ".data-staging"
ROW_GROUP = 64
"""Most rows per Parquet row group `SplitWriter` writes (fewer for large models: `ROW_GROUP_BYTES`)."""
ROW_GROUP_BYTES = 64 * 2**20
"""`SplitWriter` closes a row group before its weights would exceed this (a larger row is a group alone)."""
ROWS_PER_FILE = 4096
GROUP_CACHE_GROUPS = 8
"""Row groups of weights a `Zoo` keeps read (shared by its views), least recently used dropped first..."""
GROUP_CACHE_BYTES = 256 * 2**20
"""...and at most this many bytes of them (the group being read is always kept, however large)."""

ZOO_OUTPUT = OutputKind(
    "zoo",
    owned=(
        MANIFEST,
        "README.md",
        "data/*.parquet",
        WRITING,
        f"{STAGING}/*",
        "zoo_config.yaml",  # zoo build: the generator configuration
        ".parts/cohort-*.parquet",  # zoo build: finished cohorts of an unfinished build
        ".parts/import-*.parquet",  # zoo import-flat/import-cnnzoo: finished chunks of an unfinished import
        "import_config.json",  # zoo import-flat/import-cnnzoo: inputs and options of an unfinished import
    ),
    signature=(MANIFEST, "zoo_config.yaml"),
)
"""The files zooprobe writes into a zoo folder (see `zooprobe.core.outputs`)."""


# ---------------------------------------------------------------------------------------------- weights
def encode_weights(state_dict: dict[str, torch.Tensor], where: str = "state dict") -> bytes:
    """Serialise a state dict losslessly (safetensors), refusing non-finite values.

    Safetensors orders tensors by itself; the original key order is kept in the file's metadata.
    """
    if not state_dict:
        raise InvalidInputError(f"{where}: empty state dict (no tensors)")
    clean: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise InvalidInputError(f"{where}: entry {k!r} is a {type(v).__name__}, not a tensor")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise InvalidInputError(f"{where}: tensor {k!r} has non-finite values (NaN or inf)")
        clean[k] = v.detach().cpu().contiguous().clone()  # clone: tied/shared tensors must not alias
    if all(v.numel() == 0 for v in clean.values()):
        raise InvalidInputError(
            f"{where}: no weights (every tensor has zero elements: {', '.join(list(clean)[:5])}); a model "
            "needs at least one value"
        )
    return safetensors_bytes(clean, metadata={"order": json.dumps(list(clean))})


def decode_weights(data: bytes, where: str = "weights") -> dict[str, torch.Tensor]:
    """Inverse of `encode_weights`: the state dict with its original key order."""
    tensors, header = load_safetensors_bytes(data, where)  # the header validated before any tensor is read
    file_order = list(header.tensors)
    try:
        order = parse_json(header.metadata.get("order", "null"))
    except json.JSONDecodeError:
        order = None
    if not isinstance(order, list) or sorted(order) != sorted(file_order):
        order = file_order  # not written by zooprobe: keep the file's own order
    return {k: tensors[k] for k in order}


def count_params(state_dict: dict[str, torch.Tensor]) -> int:
    """Trainable-parameter count: floating tensors that are not BatchNorm running statistics."""
    return sum(v.numel() for k, v in state_dict.items() if v.is_floating_point() and not is_running_stat(k))


def payload_hash(data: bytes) -> str:
    """The content hash of a stored weights payload, as `Zoo.content_hash` gives it for a row."""
    return hashlib.sha256(data).hexdigest()[:16]
