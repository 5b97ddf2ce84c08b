"""Files: atomic writes, reading YAML safely, the cache location, content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from zooprobe.errors import InvalidInputError


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
    """Write `obj` as strict JSON (`json_safe`: NaN becomes null, infinities ``"inf"``; no ``NaN`` or
    ``Infinity`` literal, which strict parsers reject), atomically."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    atomic_write_text(path, text + "\n")


class YAMLAliasError(yaml.YAMLError):
    """A YAML text uses an alias (``*name``): refused, since a few hundred bytes of nested aliases expand to
    billions of values (the "billion laughs")."""


def check_yaml_aliases(text: str) -> None:
    """`YAMLAliasError` if `text` uses an alias (``*name``). Only the event stream is scanned (linear in the
    text, nothing is expanded); invalid YAML raises `yaml.YAMLError` as ``yaml.safe_load`` would."""

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            mark = event.start_mark
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise YAMLAliasError(
                f"YAML aliases (*{event.anchor}) are not allowed{where}: write the values out instead"
            )


def load_yaml_text(text: str) -> Any:
    """``yaml.safe_load`` of `text`, refusing aliases first (`check_yaml_aliases`): the one way zooprobe
    parses YAML it did not write (files, ``--config``, command-line lists)."""
    check_yaml_aliases(text)
    return yaml.safe_load(text)


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """The data of a YAML file, read with `load_yaml_text` (``yaml.safe_load``, no Python objects are ever
    built; aliases refused, so nothing can expand beyond the file).

    Invalid YAML, an unsafe tag (``!!python/object``), an alias or an unreadable file is an
    `InvalidInputError` that names the file and says what to do; never a traceback.
    """

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise InvalidInputError(f"{path}: {what} not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{path}: cannot read the {what} ({e})") from e
    try:
        return load_yaml_text(text)
    except YAMLAliasError as e:
        raise InvalidInputError(f"{path}: the {what} is refused: {e}") from e
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidInputError(
            f"{path}: the {what} is not valid YAML, or uses a tag that is not plain data ({first}); fix or "
            "delete the file"
        ) from e
    except RecursionError as e:
        raise InvalidInputError(f"{path}: the {what} is nested too deeply to read; fix the file") from e


def parse_json(text: str | bytes) -> Any:
    """``json.loads(text)``, where a document nested too deeply for Python's parser (a ``RecursionError``)
    is a `json.JSONDecodeError` like any other invalid JSON: the one way zooprobe parses JSON it did not
    write, so callers catching ``ValueError`` / ``JSONDecodeError`` see every failure."""
    try:
        return json.loads(text)
    except RecursionError:
        doc = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        raise json.JSONDecodeError("nested too deeply (thousands of levels)", doc, 0) from None


def read_json(
    path: str | Path, what: str = "JSON file", error: type[Exception] | None = None
) -> dict[str, Any]:
    """The JSON object in `path`. A missing, unreadable or invalid file (nested too deeply included), or one
    that does not hold an object, is an `error` (default `InvalidInputError`) naming the file, `what` it
    should be, and the line."""
    error = error or InvalidInputError
    path = Path(path)
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise error(f"{path}: {what} not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read the {what} ({e})") from e
    except json.JSONDecodeError as e:
        raise error(f"{path} line {e.lineno}: the {what} is not valid JSON ({e.msg})") from e
    if not isinstance(data, dict):
        raise error(f"{path}: the {what} must be a JSON object, got {type(data).__name__}")
    return data


def json_safe(obj: Any) -> Any:
    """`obj` with NaN as None and infinities as ``"inf"`` / ``"-inf"`` (strict JSON has neither), numpy
    scalars as Python numbers, tuples as lists."""
    import numpy as np  # heavy: only the writers of metrics need it

    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
