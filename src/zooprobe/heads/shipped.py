"""Heads shipped inside the package, on the shipped foundation encoder: what ``zooprobe predict FILE`` uses
when no ``--head`` is given, `zooprobe.default_heads` returns, and the app shows by default.

Each is an ordinary head folder (``config.json``, ``gbm.json``, trust files, ``content_hash.json``) under
``zooprobe/heads/pretrained/<name>/``, trained by ``zooprobe train`` on the foundation corpus with
``--encoder foundation --head.kind gbm --head.features stats+rep`` (see ``docs/foundation.md`` for the
recipe and the held-out scores). `load_head` accepts their names; the content hash is checked on load as
for any head, so a shipped head changed after it was built is refused.

``zooprobe/heads/pretrained/reference/`` holds the corpus reference the app compares a model with: the
metadata of the heads' training models and their foundation representations (`CorpusReference`).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zooprobe.errors import InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

SHIPPED_HEADS: dict[str, str] = {
    "foundation-accuracy": "accuracy",
    "foundation-hyperparameters": "hyperparameters",
    "foundation-patterns": "patterns",
}
"""Shipped head name -> the task it predicts, in the order `default_heads` loads them."""
REFERENCE = "reference"
"""The folder of the corpus reference (`CorpusReference`)."""


def _root() -> Path:
    return Path(str(importlib.resources.files("zooprobe").joinpath("heads", "pretrained")))


def is_shipped_head(source: object) -> bool:
    """True when `source` is the name of a shipped head (a str, not a path that exists here)."""
    return isinstance(source, str) and source in SHIPPED_HEADS and not Path(source).exists()


def shipped_head_folder(name: str) -> Path:
    """The folder of the shipped head `name`; a one-line error naming the shipped heads when there is
    none of that name, or when this installation lacks its files."""
    if name not in SHIPPED_HEADS:
        raise InvalidInputError(
            f"{name!r} is not a shipped head; the shipped heads are {', '.join(SHIPPED_HEADS)}"
        )
    folder = _root() / name
    if not (folder / "config.json").is_file():
        raise InvalidInputError(
            f"the shipped head {name} is not in this installation of zooprobe (no {folder}/config.json); "
            "reinstall zooprobe, or give a head folder or Hub repo id with --head"
        )
    return folder


def local_head_path(source: str | Path) -> Path:
    """Where a head `source` is on this machine, if anywhere: a shipped head's folder inside the package (its
    one-line error when this installation lacks it), else the path as given, ``~`` expanded (it may not
    exist: then the source is a Hub repo id)."""
    return shipped_head_folder(str(source)) if is_shipped_head(source) else Path(str(source)).expanduser()


def list_shipped_heads() -> list[str]:
    """The names of the shipped heads present in this installation, in `SHIPPED_HEADS` order."""
    return [name for name in SHIPPED_HEADS if (_root() / name / "config.json").is_file()]


def require_shipped_heads() -> list[str]:
    """`list_shipped_heads`, or a one-line error saying to give a head when this installation has none."""
    names = list_shipped_heads()
    if not names:
        raise InvalidInputError(
            "this installation of zooprobe has no shipped heads; give a head with --head (a run folder, "
            "head folder or Hub repo id)"
        )
    return names


@dataclass
class CorpusReference:
    """The shipped heads' training models: ``metadata`` (one row per model: ids, dataset, family, recipe,
    accuracy) and ``representation`` ``[N, D]`` (float32, the foundation encoder's pooled output, the
    columns the gbm heads read), for "where does this model sit in the corpus" and its nearest models."""

    metadata: pd.DataFrame
    representation: np.ndarray

    def nearest(self, representation: np.ndarray, k: int = 5) -> pd.DataFrame:
        """The `k` corpus models nearest to one model's representation ``[D]`` (cosine similarity of
        standardized representations), most similar first, with a ``similarity`` column."""
        rep = np.asarray(representation, dtype=np.float64).reshape(-1)
        if rep.shape[0] != self.representation.shape[1]:
            raise InvalidInputError(
                f"a representation of {rep.shape[0]} values; the corpus reference has "
                f"{self.representation.shape[1]} (another encoder's?)"
            )
        ref = self.representation.astype(np.float64)
        mean, std = ref.mean(axis=0), ref.std(axis=0) + 1e-8
        a = (ref - mean) / std
        b = (rep - mean) / std
        sim = a @ b / (np.linalg.norm(a, axis=1) * np.linalg.norm(b) + 1e-12)
        order = np.argsort(-sim, kind="stable")[: max(int(k), 0)]
        out = self.metadata.iloc[order].copy()
        out.insert(0, "similarity", sim[order])
        return out.reset_index(drop=True)


def load_reference() -> CorpusReference | None:
    """The shipped corpus reference, or None when this installation has none."""
    folder = _root() / REFERENCE
    table, tensors = folder / "metadata.parquet", folder / "representation.safetensors"
    if not (table.is_file() and tensors.is_file()):
        return None
    import pandas as pd  # heavy: pandas

    from zooprobe.core.tensorfile import load_safetensors  # heavy: torch
    from zooprobe.encoder.registry import check_sums  # heavy: torch (the encoder package)

    check_sums(folder)
    rep = load_safetensors(tensors)["representation"].float().numpy()
    meta = pd.read_parquet(table)
    if len(meta) != len(rep):
        raise InvalidInputError(f"{folder}: {len(meta)} metadata rows for {len(rep)} representations")
    return CorpusReference(meta, rep)


__all__ = [
    "REFERENCE",
    "SHIPPED_HEADS",
    "CorpusReference",
    "is_shipped_head",
    "list_shipped_heads",
    "load_reference",
    "require_shipped_heads",
    "shipped_head_folder",
]
