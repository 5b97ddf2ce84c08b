"""Flat-vector zoos: the import path of `import_flat` and `import_cnnzoo`, kept for callers of
``zooprobe.zoo.flat``. The code lives in `zooprobe.zoo.importers`: `~zooprobe.zoo.importers.flat` (the
formats, in its module docs, and the import engine), `.layout`, `.splits`, `.plan`, `.writer` and `.cnnzoo`.
"""

from __future__ import annotations

from zooprobe.zoo.importers.cnnzoo import import_cnnzoo
from zooprobe.zoo.importers.common import FlatImportReport
from zooprobe.zoo.importers.flat import CHUNK_ROWS, import_flat
from zooprobe.zoo.importers.layout import LayoutEntry, open_weights, read_layout
from zooprobe.zoo.importers.plan import _Plan
from zooprobe.zoo.importers.splits import read_split_file
from zooprobe.zoo.importers.writer import _write_part, source_fingerprint

__all__ = [
    "CHUNK_ROWS",
    "FlatImportReport",
    "LayoutEntry",
    "_Plan",
    "_write_part",
    "import_cnnzoo",
    "import_flat",
    "open_weights",
    "read_layout",
    "read_split_file",
    "source_fingerprint",
]
