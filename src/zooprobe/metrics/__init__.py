"""Evaluator metrics: numpy in, plain floats out, undefined metrics as NaN (see `zooprobe.metrics.core`)."""

from __future__ import annotations

from zooprobe.metrics.core import *  # noqa: F403 - the package re-exports its one module
from zooprobe.metrics.core import __all__ as __all__
