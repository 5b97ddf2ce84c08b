"""The encoder registries, in the manner of timm's ``register_model`` and transformers' ``AutoConfig``.

Two registries:

- **kinds** (`register_encoder`): architecture tag -> `WeightSpaceEncoder` subclass. A kind registers
  itself where it is defined (``@register_encoder("tokens")`` on `encoder_loader.LoadedEncoder`,
  ``("neurons")`` on `neuron_loader.LoadedNeuronEncoder`); `zooprobe.encoder.auto` imports the built-in
  kinds and reads or writes a folder of any registered kind.
- **named pretrained encoders** (`register_pretrained`): a name (``default``, ``v2``, ``v3``,
  ``foundation``...) -> a resolver that returns the encoder's folder (pretrained into the cache, shipped
  inside the package, downloaded...). `zooprobe.api.load_encoder(name)` and `zooprobe.api.list_encoders`
  read it. `packaged_folder` makes the resolver of a folder shipped inside an installed package.

This module imports no encoder kind, so a kind (or a test's toy kind) can import it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from zooprobe.encoder.base import CONFIG_FILE, EncoderFormatError, WeightSpaceEncoder
from zooprobe.errors import ConfigError, InvalidInputError

K = TypeVar("K", bound=type[WeightSpaceEncoder])

_KINDS: dict[str, type[WeightSpaceEncoder]] = {}


def register_encoder(architecture: str) -> Callable[[K], K]:
    """Class decorator: register a `WeightSpaceEncoder` subclass as the kind `architecture`.

    The class's ``architecture`` attribute is set to the tag; registering a second class under a taken
    tag is an error (a kind is replaced only by unregistering it first, `unregister_encoder`).
    """
    if not isinstance(architecture, str) or not architecture:
        raise ConfigError(
            f"register_encoder: the architecture must be a non-empty string, got {architecture!r}"
        )

    def decorate(cls: K) -> K:
        if not (isinstance(cls, type) and issubclass(cls, WeightSpaceEncoder)):
            raise ConfigError(
                f"register_encoder({architecture!r}): {cls!r} is not a WeightSpaceEncoder subclass"
            )
        taken = _KINDS.get(architecture)
        if taken is not None and taken is not cls:
            raise ConfigError(
                f"register_encoder: the architecture {architecture!r} is already registered "
                f"({taken.__module__}.{taken.__qualname__})"
            )
        cls.architecture = architecture
        _KINDS[architecture] = cls
        return cls

    return decorate


def unregister_encoder(architecture: str) -> None:
    """Remove the kind `architecture` (tests that register a toy kind clean up with this)."""
    _KINDS.pop(architecture, None)


def encoder_kind(architecture: str) -> type[WeightSpaceEncoder]:
    """The registered class of `architecture`, or a one-line error listing the registered ones."""
    try:
        return _KINDS[architecture]
    except KeyError:
        raise EncoderFormatError(
            f"no encoder kind {architecture!r} is registered; this zooprobe has {sorted(_KINDS)}"
        ) from None


def registered_kinds() -> dict[str, type[WeightSpaceEncoder]]:
    """Architecture tag -> class of every kind registered so far (a copy)."""
    return dict(_KINDS)


def kind_for_config(data: object, where: str | Path = CONFIG_FILE) -> type[WeightSpaceEncoder]:
    """The kind that reads the config.json content `data` (`where`: its path, for messages).

    Dispatch is on the ``architecture`` field when it names a registered kind of the same format version;
    otherwise on ``format_version`` alone when exactly one kind has it and the ``architecture`` field
    names no other registered kind (v2 token folders have no ``architecture`` field; the kind's own reader
    then checks every field). Anything else is refused with
    the versions this zooprobe reads.
    """
    version = data.get("format_version") if isinstance(data, dict) else None
    architecture = data.get("architecture") if isinstance(data, dict) else None
    kind = _KINDS.get(architecture) if isinstance(architecture, str) else None
    if kind is not None and kind.format_version == version:
        return kind
    same_version = [k for k in _KINDS.values() if k.format_version == version]
    if len(same_version) == 1 and (kind is None or kind is same_version[0]):  # a named kind must agree
        return same_version[0]
    reads = " and ".join(
        f"{k.format_version} ({k.architecture!r} encoders)" for k in sorted(_KINDS.values(), key=_order)
    )
    raise EncoderFormatError(
        f"{where}: format_version {version!r} is not supported; this zooprobe reads {reads}. Pretrain the "
        "encoder again with this version (`zooprobe encoder pretrain`), or load it with the zooprobe version "
        "that wrote it"
    )


def _order(kind: type[WeightSpaceEncoder]) -> tuple[int, str]:
    return kind.format_version, kind.architecture


# ------------------------------------------------------------------------------------------ pretrained
Resolver = Callable[[bool], Path]
"""``resolver(progress) -> folder`` of a named pretrained encoder."""


@dataclass(frozen=True)
class PretrainedEntry:
    """A named pretrained encoder: how to obtain its folder, and one line saying what it is."""

    name: str
    resolve: Resolver
    description: str = ""


_PRETRAINED: dict[str, PretrainedEntry] = {}


def register_pretrained(name: str, resolver: Resolver, description: str = "", replace: bool = False) -> None:
    """Register the named pretrained encoder `name`: ``resolver(progress)`` returns its folder (any
    registered kind). A taken name is an error unless ``replace``."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(
            f"register_pretrained: the name must be a non-empty string without '/', got {name!r}"
        )
    if name in _PRETRAINED and not replace:
        raise ConfigError(f"register_pretrained: the name {name!r} is already registered")
    _PRETRAINED[name] = PretrainedEntry(name, resolver, description)


def unregister_pretrained(name: str) -> None:
    _PRETRAINED.pop(name, None)


def pretrained_entry(name: str) -> PretrainedEntry | None:
    """The entry of the named pretrained encoder `name`, or None when no such name is registered."""
    return _PRETRAINED.get(name)


def list_pretrained() -> dict[str, str]:
    """Name -> description of every named pretrained encoder (sorted by name)."""
    return {name: _PRETRAINED[name].description for name in sorted(_PRETRAINED)}


def packaged_folder(package: str, *parts: str) -> Resolver:
    """The resolver of an encoder folder shipped inside the installed package `package` (``parts``: its
    path inside it), found with `importlib.resources`; a folder that is not there is a one-line error."""

    def resolve(progress: bool = True) -> Path:
        del progress  # nothing to build or download
        try:
            root = importlib.resources.files(package)
        except ModuleNotFoundError:
            root = None
        folder = Path(str(root.joinpath(*parts))) if root is not None else None
        if folder is None or not (folder / CONFIG_FILE).is_file():
            where = "/".join((package.replace(".", "/"), *parts))
            raise InvalidInputError(
                f"the encoder folder {where} is not shipped with this installation of zooprobe; give the "
                "folder or Hub repo id of the encoder instead"
            )
        check_sums(folder)
        return folder

    return resolve


SUMS_FILE = "SHA256SUMS"


def check_sums(folder: Path) -> None:
    """When `folder` holds a ``SHA256SUMS`` file (``<sha256>  <name>`` lines, as ``sha256sum`` writes),
    every file it names must exist and match: a shipped folder changed after it was built is refused."""
    sums = folder / SUMS_FILE
    if not sums.is_file():
        return
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        path = folder / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise EncoderFormatError(f"{sums}: names {name!r}, which is not a file of {folder}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise EncoderFormatError(
                f"{path}: its sha256 does not match {sums}; the shipped encoder was changed after it was "
                "built: reinstall zooprobe"
            )


__all__ = [
    "SUMS_FILE",
    "PretrainedEntry",
    "Resolver",
    "check_sums",
    "encoder_kind",
    "kind_for_config",
    "list_pretrained",
    "packaged_folder",
    "pretrained_entry",
    "register_encoder",
    "register_pretrained",
    "registered_kinds",
    "unregister_encoder",
    "unregister_pretrained",
]
