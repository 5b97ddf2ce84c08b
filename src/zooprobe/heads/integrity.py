"""The content hash of a head folder: whether a file that defines its predictions changed since it was saved.

`write_content_hash` records the sha256 of every file of `HASHED_FILES` the folder has in `HASH_FILE`
(``content_hash.json``); `save_head` and `Trust.save` call it after writing, so a trained head's hash
covers its config, weights, gbm models and trust files. `check_content_hash` (`load_head_folder`,
`zooprobe.load_head`, ``zooprobe predict``) refuses a folder where one of those files was edited, deleted
or added since: a `HeadModifiedError` naming the files, unless ``trust=True`` (``--trust true``), for
people who edit heads on purpose. A folder without ``content_hash.json`` (saved by an older zooprobe)
loads with an `UnhashedHeadWarning`.

The hash detects accidental or unnoticed modification (a hand edit, a file lost in a copy, a deleted
trust.json that would make withheld targets look predictable); it is not a signature: whoever can write the
folder can write a matching hash. Loading never relies on it for safety: every file is validated on its own.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

from zooprobe.core.files import atomic_write_json, read_json
from zooprobe.errors import ZooFormatError

HASH_FILE = "content_hash.json"
HASH_FORMAT = 1
HASHED_FILES = ("config.json", "model.safetensors", "gbm.json", "trust.json", "domain.safetensors")
"""The files of a head folder that define its predictions (the model card is not among them)."""


class HeadModifiedError(ZooFormatError):
    """A head folder's files differ from its recorded content hash (the message names them)."""


class UnhashedHeadWarning(UserWarning):
    """A head folder has no content hash (saved by an older zooprobe): its files cannot be checked."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hashes(folder: str | Path) -> dict[str, str]:
    """sha256 of each file of `HASHED_FILES` present in `folder`, by name."""
    folder = Path(folder)
    return {name: _sha256(folder / name) for name in HASHED_FILES if (folder / name).is_file()}


def combined_hash(hashes: dict[str, str]) -> str:
    """One sha256 over the per-file hashes (what a model card or a log shows)."""
    text = "".join(f"{name}:{hashes[name]}\n" for name in sorted(hashes))
    return hashlib.sha256(text.encode()).hexdigest()


def write_content_hash(folder: str | Path) -> str:
    """Record the content hash of `folder` (atomically); returns the combined hash."""
    hashes = content_hashes(folder)
    combined = combined_hash(hashes)
    atomic_write_json(
        Path(folder) / HASH_FILE,
        {"format_version": HASH_FORMAT, "algorithm": "sha256", "sha256": combined, "files": hashes},
    )
    return combined


def check_content_hash(folder: str | Path, *, trust: bool = False) -> bool:
    """Whether `folder` matches its recorded content hash: True when it does, False when it has none (an
    `UnhashedHeadWarning`) or ``trust`` skips the check. A mismatch is a `HeadModifiedError`."""
    folder = Path(folder)
    path = folder / HASH_FILE
    if trust:
        return False
    if not path.is_file():
        warnings.warn(
            f"{folder}: the head has no {HASH_FILE} (saved by an older zooprobe), so changes to its files "
            "cannot be detected; save it again with this zooprobe to add one",
            UnhashedHeadWarning,
            stacklevel=3,
        )
        return False
    record = read_json(path, "head content hash", ZooFormatError)
    files = record.get("files") if isinstance(record, dict) else None
    if (
        not isinstance(record, dict)
        or record.get("format_version") != HASH_FORMAT
        or record.get("algorithm") != "sha256"
        or not isinstance(files, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    ):
        raise HeadModifiedError(
            f"{path}: not a zooprobe content hash (format_version {HASH_FORMAT}, algorithm sha256, files); "
            "restore the head folder, or pass trust=True (--trust true) to load it unchecked"
        )
    actual = content_hashes(folder)
    changed = sorted(n for n in files if n in actual and actual[n] != files[n])
    deleted = sorted(n for n in files if n not in actual)
    added = sorted(n for n in actual if n not in files)
    if changed or deleted or added:
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (("changed:", changed), ("deleted:", deleted), ("added:", added))
            if names
        ]
        raise HeadModifiedError(
            f"{folder}: the head was modified after it was saved ({'; '.join(parts)}; see {HASH_FILE}). "
            "Restore the original files (download or copy the head again), or pass trust=True "
            "(zooprobe predict --trust true) if you edited it on purpose"
        )
    return True


__all__ = [
    "HASHED_FILES",
    "HASH_FILE",
    "HeadModifiedError",
    "UnhashedHeadWarning",
    "check_content_hash",
    "combined_hash",
    "content_hashes",
    "write_content_hash",
]
