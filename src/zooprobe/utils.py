"""Small shared helpers: atomic writes, cache locations, environment facts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """Root of zooprobe's cache (default zoo, default encoder, generated data).

    `ZOOPROBE_CACHE` overrides it; otherwise `$XDG_CACHE_HOME/zooprobe` or `~/.cache/zooprobe`.
    """
    env = os.environ.get("ZOOPROBE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zooprobe"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`, on error removed.

    Readers never see a half-written file: the rename is atomic on POSIX file systems.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; written files get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def config_parser(description: str) -> Any:
    """A jsonargparse parser that also takes ``--config FILE.yaml`` (every zooprobe subcommand has one)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    p = ArgumentParser(description=description)
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below.")
    return p


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """The data of a YAML file, read with ``yaml.safe_load`` (no Python objects are ever built).

    Invalid YAML, an unsafe tag (``!!python/object``) or an unreadable file is an `InvalidInputError` that
    names the file and says what to do; never a traceback.
    """
    import yaml

    from zooprobe.errors import InvalidInputError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise InvalidInputError(f"{path}: {what} not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{path}: cannot read the {what} ({e})") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidInputError(
            f"{path}: the {what} is not valid YAML, or uses a tag that is not plain data ({first}); fix or "
            "delete the file"
        ) from e


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def progress_bar(label: str, extra: str) -> Any:
    """A rich progress bar on stderr: label, bar, done/total, ``extra`` (a text column), elapsed, ETA.

    No refresh thread (``auto_refresh=False``): callers redraw with ``refresh()`` on their own updates,
    so a background thread never competes with a training loop of many short torch calls.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(extra),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        auto_refresh=False,
    )


def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine a generated artifact, recorded in manifests."""
    out = {"python": platform.python_version()}
    for name in ("zooprobe", "torch", "numpy", "scikit-learn", "mnist1d", "safetensors", "pyarrow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def pack_optimizer(opt: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An optimizer's state as (tensors for a safetensors file, JSON-able metadata), for checkpoints that
    never pickle: tensors are named ``optimizer.<param id>.<key>``; scalars and param groups go to JSON."""
    import torch

    sd = opt.state_dict()
    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unpack_optimizer(opt: Any, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Inverse of `pack_optimizer`: load the state back into `opt` (same parameter groups)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = [dict(g) for g in meta["param_groups"]]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
