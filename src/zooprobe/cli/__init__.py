"""The ``zooprobe`` command line, an application on top of the library (`main`, `build_parser`)."""

from zooprobe.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
