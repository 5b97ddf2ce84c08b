"""Error types shown to users.

Every error a user can cause (bad input file, wrong option, missing field) is a `ZooprobeError`: the CLI
prints its message without a traceback and exits with status 2. Messages say what was wrong, where (file,
row, field) and what to do.
"""

from __future__ import annotations


class ZooprobeError(Exception):
    """Base class for errors caused by input or configuration, not by a bug in zooprobe."""


class InvalidInputError(ZooprobeError, ValueError):
    """A file, row or field given to zooprobe is unusable (corrupt, non-finite, mistyped, missing)."""


class ZooFormatError(ZooprobeError):
    """A folder does not hold a zoo in the expected format (missing files, unknown format version)."""


class ConfigError(ZooprobeError, ValueError):
    """A configuration value is out of range or inconsistent with another one."""


def error_message(error: BaseException) -> str | None:
    """The one line zooprobe shows a user for `error` (``zooprobe: error: ...``), or None for an error it
    does not expect (a bug, which keeps its traceback). The command line prints it and exits with status 2;
    the app (`zooprobe.app`) shows it on the page."""
    if isinstance(error, ZooprobeError):
        return f"zooprobe: error: {error}"
    if isinstance(error, MemoryError):
        return (
            "zooprobe: error: out of memory; use smaller inputs or batches (e.g. --encode_batch_size), or a "
            "machine with more memory"
        )
    if isinstance(error, OSError):  # a file system refusal (disk full, permissions changed)
        where = f" ({error.filename})" if error.filename else ""
        return f"zooprobe: error: {error.strerror or error}{where}; nothing more was written"
    return None


class TrainingDivergedError(ZooprobeError):
    """The training loss became non-finite (head training or pretraining); the last good state is kept."""
