"""Output folders: zooprobe writes only where it may, and removes only what it wrote.

The rule, for every command that writes a folder (``zoo build``/``merge``/``import-*``, ``train``,
``encoder pretrain``, ``bench``, ``report``):

- zooprobe writes into a folder that does not exist yet, an empty folder, or a folder that zooprobe itself
  wrote for the same kind of artifact. Such a folder carries a marker file, ``.zooprobe`` (JSON: kind,
  zooprobe version), written when the folder is first claimed.
- Anything else (a file, a folder holding the user's own files, a folder of another kind, a folder that
  cannot be written) is refused before anything is written, and the error names what is in the way.
- ``overwrite`` removes only the files zooprobe wrote: each kind declares the paths it writes
  (`OutputKind.owned`). If the folder also holds other files, ``overwrite`` is refused and those files are
  named: zooprobe never deletes what it did not write.
- Checking (`check_output`) is separate from claiming (`claim_output`), so a command can check its output
  folder first, then validate its whole input (which may take a while, and never writes), and only then
  claim the folder and write.

Leftovers of a killed process (temporary files of atomic writes, ``*.tmp``; empty TensorBoard event files
of a writer that never flushed) belong to the kind's folder and are removed when the folder is claimed
again (`claim_output`).
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from zooprobe._version import __version__
from zooprobe.core.files import atomic_write_json
from zooprobe.errors import InvalidInputError

MARKER = ".zooprobe"
"""Marker file of a folder zooprobe wrote (JSON: ``kind``, ``version``, ``created``)."""

#: Temporary files of `zooprobe.core.files.atomic_path` (``.NAME.RANDOM.tmp``), anywhere in an owned folder.
TEMPORARY = ("*.tmp",)

State = Literal["new", "empty", "own"]


class OutputFolderError(InvalidInputError):
    """An output folder zooprobe may not write into (or not remove files from)."""


@dataclass(frozen=True)
class OutputKind:
    """A kind of folder zooprobe writes: its name and the relative paths (fnmatch patterns, ``*`` also
    matches ``/``) of every file it may write there."""

    name: str
    owned: tuple[str, ...]
    what: str = ""
    """How to call it in messages (default: the name)."""
    signature: tuple[str, ...] = ()
    """Files only zooprobe writes (e.g. ``zooprobe_manifest.json``): a folder without a marker, written by
    a zooprobe from before markers, is still recognized as its own when it holds one of them and nothing
    but files of this kind."""

    @property
    def label(self) -> str:
        return self.what or self.name

    def owns(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return (
            rel == MARKER
            or any(fnmatch.fnmatchcase(rel, p) for p in self.owned)
            or any(fnmatch.fnmatchcase(name, p) for p in TEMPORARY)
        )


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


def _shown(paths: list[str], limit: int = 6) -> str:
    more = len(paths) - limit
    return ", ".join(paths[:limit]) + (f" and {more} more" if more > 0 else "")


def read_marker(root: Path) -> dict[str, object] | None:
    """The marker of `root` (None if there is none; an unreadable marker counts as none)."""
    path = Path(root) / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def foreign_files(root: str | Path, kind: OutputKind) -> list[str]:
    """Files under `root` that zooprobe does not write for `kind` (relative POSIX paths, sorted)."""
    root = Path(root)
    return [rel for rel in _files(root) if not kind.owns(rel)] if root.is_dir() else []


def _legacy(root: Path, present: list[str], kind: OutputKind) -> bool:
    """A `kind` folder written before markers existed (see `OutputKind.signature`)."""
    return any((root / name).is_file() for name in kind.signature) and all(kind.owns(rel) for rel in present)


def _writable(root: Path) -> Path | None:
    """The nearest existing folder at or above `root` if it cannot be written into, else None."""
    probe = root
    while not probe.exists():
        if probe.parent == probe:
            return None
        probe = probe.parent
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        return probe
    return None


def check_output(
    root: str | Path, kind: OutputKind, *, overwrite: bool = False, option: str = "--output"
) -> State:
    """Whether zooprobe may write a `kind` folder at `root`; never writes. Returns ``new`` (does not exist),
    ``empty`` or ``own`` (a `kind` folder zooprobe wrote: resume it, or with ``overwrite`` start over).

    Raises `OutputFolderError` naming what is in the way (see the module docs).
    """
    root = Path(root).expanduser()
    where = f"{option} {root}"
    if root.exists() and not root.is_dir():
        raise OutputFolderError(
            f"{where}: exists and is a file; {option} must be a folder (a new or empty one, or a "
            f"{kind.label} folder zooprobe wrote)"
        )
    for ancestor in root.parents:
        if ancestor.exists() and not ancestor.is_dir():
            raise OutputFolderError(f"{where}: {ancestor} is a file, so the folder cannot be created there")
        if ancestor.exists():
            break
    blocked = _writable(root)
    if blocked is not None:
        raise OutputFolderError(
            f"{where}: cannot write into {blocked} (permission denied); choose a folder you can write to"
        )
    if not root.exists():
        return "new"
    present = _files(root)
    if not present and not any(root.iterdir()):
        return "empty"
    marker = read_marker(root)
    if marker is None and _legacy(root, present, kind):
        marker = {"kind": kind.name}
    if marker is None:
        shown = _shown(present) if present else "empty subfolders"
        raise OutputFolderError(
            f"{where}: the folder is not empty and was not written by zooprobe (it holds {shown}); zooprobe "
            f"writes only into a new or empty folder, or one it wrote itself (those carry a {MARKER} file): "
            f"choose another {option}"
        )
    if marker.get("kind") != kind.name:
        raise OutputFolderError(
            f"{where}: holds a zooprobe {marker.get('kind')!s} folder, not a {kind.label} folder; choose "
            f"another {option}"
        )
    if overwrite:
        foreign = [rel for rel in present if not kind.owns(rel)]
        if foreign:
            raise OutputFolderError(
                f"{where}: overwrite removes only files zooprobe wrote, but the folder also holds files it "
                f"did not write: {_shown(foreign)}; move them elsewhere, or choose another {option}"
            )
    return "own"


def claim_output(
    root: str | Path, kind: OutputKind, *, overwrite: bool = False, option: str = "--output"
) -> State:
    """Check `root` (`check_output`), then make it a `kind` folder: create it, write the marker, remove the
    leftovers of a killed process and, with ``overwrite``, every file zooprobe wrote there. Returns the
    state the folder had."""

    root = Path(root).expanduser()
    state = check_output(root, kind, overwrite=overwrite, option=option)
    try:
        root.mkdir(parents=True, exist_ok=True)
        if state == "own":
            remove_owned(root, kind, everything=overwrite)
        if not (root / MARKER).is_file():
            atomic_write_json(
                root / MARKER,
                {
                    "kind": kind.name,
                    "version": __version__,
                    "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                },
            )
    except PermissionError as e:
        raise OutputFolderError(
            f"{option} {root}: cannot write there ({e.strerror}); choose another {option}"
        ) from e
    return state


def remove_owned(root: str | Path, kind: OutputKind, *, everything: bool = False) -> list[str]:
    """Remove leftovers of a killed process from a `kind` folder (temporary files, empty TensorBoard event
    files) and, with ``everything``, every file zooprobe wrote there but the marker; then the subfolders that
    became empty. Files zooprobe did not write are never touched. Returns the removed paths."""
    root = Path(root)
    removed: list[str] = []
    for rel in _files(root):
        name = rel.rsplit("/", 1)[-1]
        path = root / rel
        leftover = any(fnmatch.fnmatchcase(name, p) for p in TEMPORARY) or (
            name.startswith("events.out.tfevents.") and path.stat().st_size == 0
        )
        if leftover or (everything and rel != MARKER and kind.owns(rel)):
            path.unlink(missing_ok=True)
            removed.append(rel)
    parents = {(root / rel).parent for rel in removed}
    for folder in sorted(parents, key=lambda p: -len(p.parts)):
        while folder != root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a subfolder that emptied because its files were removed
            folder = folder.parent
    return removed


__all__ = [
    "MARKER",
    "OutputFolderError",
    "OutputKind",
    "check_output",
    "claim_output",
    "foreign_files",
    "read_marker",
    "remove_owned",
]
