"""The guards: size limits, path checks and safe loaders, the one entry point for reading files zooprobe
did not write.

Every reader of a file from outside (``zooprobe predict``, ``zoo import-folder`` / ``import-modelzoos`` /
``import-flat`` / ``import-cnnzoo``, ``load_head``, ``load_encoder``, zoo folders, run folders, the caches)
reads through the functions here. The rules they enforce:

- **Nothing is unpickled.** Torch files: `read_checkpoint` (``torch.load(weights_only=True)`` only, structure
  read on the ``meta`` device and every storage checked against its record of the file before anything is
  materialized; stride-0 and overlapping views refused). NumPy files: `load_npy` / `load_npz` (object arrays
  refused with the safe alternative named, before numpy is asked to read them). Files of a pickle type
  (``.pkl``, ``.pickle``, ``.joblib``, ...) are refused by their name (`refuse_pickle`), never opened.
- **Sizes before allocation.** Safetensors headers (`read_safetensors_header`, `MAX_HEADER_BYTES`), torch
  storages (`read_checkpoint`, `DEFAULT_MAX_PARAMS`), ``.npy`` headers (`npy_header`): what a file declares
  must fit in the file before memory is allocated on its word.
- **Paths stay inside.** A path named by a metadata table is relative, has no ``..`` and, every symbolic
  link followed, stays inside its folder (`contained_path`, `resolves_inside`).
- **Plain data only from YAML and JSON.** `read_yaml` / `load_yaml_text` (aliases refused: no billion laughs;
  no Python tags), `read_json` / `parse_json` (too deep nesting is an ordinary error).

The implementations live next to their formats (`zooprobe.core.checkpoints`, `zooprobe.core.tensorfile`,
`zooprobe.core.files`) and are re-exported here; ``tests/adversarial/test_guards.py`` fails when any module
outside these four calls a raw loader (``torch.load``, ``safe_open``, ``np.load``, ``pickle.load``,
``yaml.safe_load``, ``json.load``, ...) itself.
"""

from __future__ import annotations

import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from zooprobe.core.checkpoints import (
    CHECKPOINT_SUFFIXES,
    CONTAINER_KEYS,
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    Checkpoint,
    check_checkpoint_file,
    check_max_params,
    is_out_of_memory,
    load_checkpoint,
    out_of_memory_as_error,
    read_checkpoint,
)
from zooprobe.core.files import check_yaml_aliases, load_yaml_text, parse_json, read_json, read_yaml
from zooprobe.core.state_dicts import DEFAULT_MAX_PARAMS
from zooprobe.core.tensorfile import (
    MAX_HEADER_BYTES,
    format_bytes,
    load_safetensors,
    load_safetensors_bytes,
    open_safetensors,
    parse_safetensors_header,
    read_safetensors_header,
)
from zooprobe.errors import InvalidInputError

GUARD_MODULES = (
    "zooprobe.core.guards",
    "zooprobe.core.checkpoints",
    "zooprobe.core.tensorfile",
    "zooprobe.core.files",
)
"""The modules allowed to call raw loaders; everything else reads through them."""

SAFE_NUMPY = (
    "save a plain numeric array instead: `np.save(path, np.asarray(weights, dtype=np.float32))` (or a "
    ".safetensors file: `safetensors.numpy.save_file({'weights': weights}, path)`)"
)


# ------------------------------------------------------------------------------------------------ paths
def resolves_inside(root: str | Path, path: str | Path) -> bool:
    """Whether `path`, every symbolic link followed, is `root` (its real path) or lies under it."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def contained_path(
    root: str | Path, name: Any, what: str = "file", *, where: str | None = None, fix: str | None = None
) -> Path:
    """The path a metadata cell `name` names inside folder `root`, or `InvalidInputError`: the one
    containment rule for paths an input names. Refused: an empty name, an absolute path (``/etc/passwd``,
    ``C:\\...``), a ``..`` part, and a path that leads out of `root` through a symbolic link. The messages
    name the folder as `where` (default: its path) and end a link's refusal with `fix`."""
    root = Path(root)
    where = str(root) if where is None else where
    text = "" if name is None else str(name).strip().replace("\\", "/")
    if not text:
        raise InvalidInputError(f"{root}: no {what} named")
    relative = PurePosixPath(text)
    if relative.is_absolute() or ".." in relative.parts or (len(text) > 1 and text[1] == ":"):
        raise InvalidInputError(f"{what} path {text!r} must be relative to {where} and stay inside it")
    path = root.joinpath(*relative.parts)
    if not resolves_inside(root, path):
        raise InvalidInputError(
            f"{what} path {text!r} leads outside {where} through a symbolic link (to {path.resolve()}); "
            + (f"copy the {what} into the folder instead" if fix is None else fix)
        )
    return path


def check_inside(root: str | Path, path: str | Path, what: str = "file") -> Path:
    """`path` itself if it (every symbolic link followed) lies inside `root`; else `InvalidInputError`
    naming both: for files found by walking a folder (Model Zoos' ``checkpoints``), not named by a table."""
    if not resolves_inside(root, path):
        raise InvalidInputError(
            f"{path}: the {what} leads outside {root} through a symbolic link (to {Path(path).resolve()}); "
            f"copy the {what} into the folder instead"
        )
    return Path(path)


def refuse_pickle(path: str | Path, alternative: str) -> None:
    """`InvalidInputError` naming `path` and the safe `alternative` if its type can only be unpickled."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(PICKLE_SUFFIXES):
        raise InvalidInputError(
            f"{path}: refused for safety: a {path.suffix} file can only be read by unpickling it, which can "
            f"run arbitrary code, so zooprobe never opens one; {alternative}"
        )


# ------------------------------------------------------------------------------------------------ numpy
def npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype[Any], bool, int]:
    """``(shape, dtype, fortran_order, data offset)`` of a ``.npy`` file, read from its header only.

    `InvalidInputError` naming the file when the header is invalid, declares Python objects (a pickled
    object array: refused, with `SAFE_NUMPY`), or declares more bytes than the file holds."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except FileNotFoundError as e:
        raise InvalidInputError(f"{path}: file not found") from e
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise InvalidInputError(f"{path}: not a readable .npy array, corrupt or truncated? ({e})") from e
    if dtype.hasobject:
        raise InvalidInputError(
            f"{path}: refused for safety: a .npy array of Python objects ({dtype}) can only be read by "
            f"unpickling it, which can run arbitrary code, so zooprobe never does; {SAFE_NUMPY}"
        )
    if any(n < 0 for n in shape):
        raise InvalidInputError(f"{path}: the .npy header declares a negative size {shape}")
    declared = math.prod(shape) * dtype.itemsize
    available = os.path.getsize(path) - offset
    if declared > available:
        raise InvalidInputError(
            f"{path}: the .npy header declares {format_bytes(declared)} ({' x '.join(map(str, shape))} "
            f"{dtype}) but the file holds only {format_bytes(max(available, 0))}: truncated or hostile file, "
            "refused before reading it"
        )
    return tuple(shape), dtype, fortran, offset


def load_npy(path: str | Path, *, mmap: bool = True) -> np.ndarray:
    """A ``.npy`` array checked by `npy_header` first (no object arrays, sizes inside the file), then read
    with ``allow_pickle=False`` (memory-mapped read-only with ``mmap``)."""
    path = Path(path)
    npy_header(path)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InvalidInputError(f"{path}: not a readable .npy array ({e})") from e


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` archive, read with ``allow_pickle=False`` (an object array is refused,
    naming the file and `SAFE_NUMPY`)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise InvalidInputError(
                f"{path}: refused for safety: it holds an array of Python objects, which can only be read by "
                f"unpickling it; {SAFE_NUMPY}"
            ) from e
        raise InvalidInputError(f"{path}: not a readable .npz archive ({e})") from e
    except (OSError, EOFError, KeyError) as e:
        raise InvalidInputError(f"{path}: not a readable .npz archive ({e})") from e


__all__ = [
    "CHECKPOINT_SUFFIXES",
    "CONTAINER_KEYS",
    "DEFAULT_MAX_PARAMS",
    "GUARD_MODULES",
    "MAX_HEADER_BYTES",
    "PICKLE_SUFFIXES",
    "SAFETENSORS_SUFFIXES",
    "SAFE_NUMPY",
    "TORCH_SUFFIXES",
    "Checkpoint",
    "check_checkpoint_file",
    "check_inside",
    "check_max_params",
    "check_yaml_aliases",
    "contained_path",
    "format_bytes",
    "is_out_of_memory",
    "load_checkpoint",
    "load_npy",
    "load_npz",
    "load_safetensors",
    "load_safetensors_bytes",
    "load_yaml_text",
    "npy_header",
    "open_safetensors",
    "out_of_memory_as_error",
    "parse_json",
    "parse_safetensors_header",
    "read_checkpoint",
    "read_json",
    "read_safetensors_header",
    "read_yaml",
    "refuse_pickle",
    "resolves_inside",
]
