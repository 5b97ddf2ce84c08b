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


class TrainingDivergedError(ZooprobeError):
    """The training loss became non-finite (head training or pretraining); the last good state is kept."""
