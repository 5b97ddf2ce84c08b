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

One writer at a time: `claim_output` takes an exclusive lock (``fcntl.flock``) on ``.zooprobe.lock`` in the
folder (`lock_output`), held until the command ends (`release_outputs`, called by the command line when a
command returns; library calls release it when they return, see `holding_outputs`). A second command writing
the same folder is refused at once, naming the folder and the PID of the process holding it. The kernel
releases the lock when its process dies, so a killed command never blocks the next one. Under ``torchrun``
only process 0 locks (its peers write the same folder with it, by design).

Leftovers of a killed process (temporary files of atomic writes, ``*.tmp``; empty TensorBoard event files
of a writer that never flushed) belong to the kind's folder and are removed when the folder is claimed
again (`claim_output`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import fnmatch
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, Literal, TypeVar

from zooprobe._version import __version__
from zooprobe.core.files import atomic_write_json, parse_json
from zooprobe.core.torchrun import torchrun_env
from zooprobe.errors import InvalidInputError

MARKER = ".zooprobe"
"""Marker file of a folder zooprobe wrote (JSON: ``kind``, ``version``, ``created``)."""

LOCK = ".zooprobe.lock"
"""Lock file of a folder being written (`lock_output`): holds the writer's PID; kept afterwards."""

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
            rel in (MARKER, LOCK)
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
        data = parse_json(path.read_text())
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
    _refuse_if_locked(root, option)  # first: a folder being written may hold a marker not yet in place
    present = [rel for rel in _files(root) if rel != LOCK]  # a lock file alone: a claim that wrote nothing
    if not present and not any(p.name != LOCK for p in root.iterdir()):
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
    check_output(root, kind, overwrite=overwrite, option=option)
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock_output(root, option=option)
        state = check_output(root, kind, overwrite=overwrite, option=option)  # again, now that it is ours
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


_HELD: dict[Path, int] = {}
"""Folders this process holds the lock of (resolved path -> file descriptor of the lock file)."""


def _in_use(root: Path, holder: str, option: str) -> OutputFolderError:
    return OutputFolderError(
        f"{option} {root}: another zooprobe process (PID {holder}) is writing into this folder; wait for "
        f"it to finish (or stop it), or choose another {option}"
    )


def _refuse_if_locked(root: Path, option: str) -> None:
    """Refuse `root` while another process holds its lock (`lock_output`), naming that process; reads only
    (a shared lock tried and dropped at once)."""
    path = root / LOCK
    if not path.is_file() or root.resolve() in _HELD or torchrun_env().rank != 0:
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        raise _in_use(root, holder, option) from None
    finally:
        os.close(fd)


def lock_output(root: str | Path, *, option: str = "--output") -> None:
    """Take the exclusive lock of output folder `root` (existing) for this process, until `release_outputs`.

    Already held by this process: nothing to do. Held by another process: `OutputFolderError` naming the
    folder and that process's PID. Under ``torchrun``, processes other than 0 do not lock."""
    root = Path(root).expanduser()
    key = root.resolve()
    if key in _HELD or torchrun_env().rank != 0:
        return
    path = root / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise _in_use(root, holder, option) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = fd


def release_outputs() -> None:
    """Release every output-folder lock this process holds (`lock_output`)."""
    while _HELD:
        _key, fd = _HELD.popitem()
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the last descriptor releases the flock


F = TypeVar("F", bound=Callable[..., Any])


def holding_outputs(fn: F) -> F:
    """Decorate a library function that writes output folders: the locks it takes (`claim_output`) are
    released when it returns or raises, unless a caller up the stack (the command line) holds them."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with holding_outputs_block():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def holding_outputs_block() -> Iterator[None]:
    """`holding_outputs` as a context manager (the command line wraps each command in it)."""
    before = set(_HELD)
    try:
        yield
    finally:
        for key in set(_HELD) - before:
            with contextlib.suppress(OSError):
                os.close(_HELD.pop(key))


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
        if leftover or (everything and rel not in (MARKER, LOCK) and kind.owns(rel)):
            path.unlink(missing_ok=True)
            removed.append(rel)
    parents = {(root / rel).parent for rel in removed}
    for folder in sorted(parents, key=lambda p: -len(p.parts)):
        while folder != root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a subfolder that emptied because its files were removed
            folder = folder.parent
    return removed


__all__ = [
    "LOCK",
    "MARKER",
    "OutputFolderError",
    "OutputKind",
    "check_output",
    "claim_output",
    "foreign_files",
    "holding_outputs",
    "holding_outputs_block",
    "lock_output",
    "read_marker",
    "release_outputs",
    "remove_owned",
]
