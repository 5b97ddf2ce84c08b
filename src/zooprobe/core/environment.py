"""Facts about the environment that determine a generated artifact (recorded in manifests)."""

from __future__ import annotations

import platform
from importlib import metadata


def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine a generated artifact, recorded in manifests."""
    out = {"python": platform.python_version()}
    for name in ("zooprobe", "torch", "numpy", "scikit-learn", "mnist1d", "safetensors", "pyarrow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
