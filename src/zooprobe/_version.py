"""The installed zooprobe version (``0.0.0+local`` when running from a source tree without installing)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zooprobe")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
