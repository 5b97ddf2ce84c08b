"""The transfer benchmark's plan (see zooprobe.bench.transfer): the groups and methods, the folds and their
leak check, the key of a cell."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zooprobe.core.outputs import OutputKind
from zooprobe.errors import ZooprobeError
from zooprobe.zoo.store import Zoo

GROUPS = ("datasets", "families", "recipes", "foreign")
GROUP_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "datasets": ("dataset",),
    "families": ("family",),
    "recipes": ("optimizer", "scheduler"),
}
"""The metadata columns whose values make the folds of each group (one fold per value)."""
METHODS = (
    "stats+rep+gbm",
    "frozen-linear",
    "zero-shot stats+rep+gbm",
    "stats+gbm",
    "zero-shot stats+gbm",
    "floor",
)
ENCODER_METHODS = frozenset({"stats+rep+gbm", "frozen-linear", "zero-shot stats+rep+gbm"})
ZERO_SHOT = frozenset({"zero-shot stats+gbm", "zero-shot stats+rep+gbm"})
NO_ENCODER = "-"
"""The encoder name of cells of methods that read no representation."""
DEFAULT_ENCODERS = ("v2", "v3", "foundation")  # "default" is "foundation"


class FoldLeakError(ZooprobeError):
    """A fold whose seen side holds a held-out run, attribute value or checkpoint."""


@dataclass(frozen=True)
class Fold:
    """One held-out generator. ``seen``/``held`` are views of the trained models (`Zoo.final`) of the
    seen and held-out side; ``seen_index``/``held_index`` their row positions in the ``final()`` view of
    the zoos named ``seen_source``/``held_source`` (where the per-zoo statistics and representations are)."""

    group: str
    name: str
    attribute: str | None
    """The held-out column (``dataset``...); None for a foreign zoo."""
    values: tuple[str, ...]
    seen: Zoo
    held: Zoo
    seen_source: str
    held_source: str
    seen_index: np.ndarray
    held_index: np.ndarray

    def seen_ids(self) -> set[str]:
        return set(self.seen.metadata()["model_id"].astype(str))

    def held_ids(self) -> set[str]:
        return set(self.held.metadata()["model_id"].astype(str))

    def seen_view(self, corpus: Zoo) -> Zoo:
        """The seen side as a view of `corpus` with every checkpoint of its runs (what a per-fold pretraining
        may read): ``corpus.select`` of the seen runs; `check_fold(self, seen=view)` checks it."""
        meta = corpus.metadata()
        mask = meta["model_id"].astype(str).isin(self.seen_ids())
        if self.attribute is not None:
            mask &= ~meta[self.attribute].astype(str).isin(self.values)
        return corpus.select(mask.to_numpy())

    def describe(self) -> dict[str, Any]:
        held = self.held.metadata()["split"].value_counts().to_dict()
        seen = self.seen.metadata()["split"].value_counts().to_dict()
        return {
            "group": self.group,
            "attribute": self.attribute,
            "values": list(self.values),
            "seen": self.seen_source,
            "held_out": self.held_source,
            "n_seen": {s: int(n) for s, n in seen.items()},
            "n_held_out": {s: int(n) for s, n in held.items()},
        }


def check_fold(fold: Fold, seen: Zoo | None = None, *, weights: bool = False) -> None:
    """Raise `FoldLeakError` if the fold's seen side (or `seen`, e.g. `Fold.seen_view`'s pretraining view)
    holds a held-out run: the same ``model_id`` (attribute folds), a row whose held-out attribute has a
    held-out value, or (``weights``, and always for foreign folds with `seen` views) identical weights."""
    held_meta = fold.held.metadata()
    held_ids = set(held_meta["model_id"].astype(str))
    sides = [("seen side", fold.seen)] + ([("given seen view", seen)] if seen is not None else [])
    if fold.attribute is not None:
        outside = ~held_meta[fold.attribute].astype(str).isin(fold.values)
        if outside.any():
            raise FoldLeakError(
                f"fold {fold.name}: {int(outside.sum())} held-out row(s) lack the held-out value(s) "
                f"{list(fold.values)} of {fold.attribute!r}"
            )
    for what, zoo in sides:
        meta = zoo.metadata()
        if fold.attribute is not None:
            both = sorted(held_ids & set(meta["model_id"].astype(str)))
            if both:
                raise FoldLeakError(
                    f"fold {fold.name}: held-out run(s) {both[:5]} ({len(both)} in all) are on the {what}"
                )
            if fold.attribute not in meta.columns:
                raise FoldLeakError(f"fold {fold.name}: the {what} has no {fold.attribute!r} column")
            leaked = meta[fold.attribute].astype(str).isin(fold.values)
            if leaked.any():
                ids = meta.loc[leaked, "model_id"].astype(str).unique().tolist()
                raise FoldLeakError(
                    f"fold {fold.name}: {fold.attribute}={list(fold.values)} appears on the {what} "
                    f"(run(s) {ids[:5]})"
                )
        else:
            if Path(zoo.root).resolve() == Path(fold.held.root).resolve():
                raise FoldLeakError(f"fold {fold.name}: the {what} is the held-out zoo itself")
        if weights or fold.attribute is None:
            held_hashes = {fold.held.content_hash(i) for i in range(len(fold.held))}
            same = [i for i in range(len(zoo)) if zoo.content_hash(i) in held_hashes]
            if same:
                ids = sorted({str(zoo.metadata()["model_id"].iloc[i]) for i in same})
                raise FoldLeakError(
                    f"fold {fold.name}: the {what} holds {len(same)} checkpoint(s) with the same weights as "
                    f"held-out ones (run(s) {ids[:5]})"
                )


def _values(meta: pd.DataFrame, column: str) -> list[str]:
    return sorted(meta[column].dropna().astype(str).unique())


def _foreign_fold(corpus: Zoo, source: str, foreign: Zoo, foreign_source: str) -> Fold:
    return Fold(
        "foreign",
        f"foreign:{foreign_source}",
        None,
        (),
        corpus,
        foreign,
        source,
        foreign_source,
        np.arange(len(corpus)),
        np.arange(len(foreign)),
    )


def cell_key(fold: str, method: str, encoder: str) -> str:
    return f"{fold}|{method}|{encoder}"


@dataclass(frozen=True)
class Target:
    """One benchmark target: the task whose spec scores it, its column (None: every usable has_* flag) and
    the metric of `evaluate_predictions` shown in the table."""

    name: str
    task: str
    column: str | None
    metric: str
    label: str


TARGETS = (
    Target("accuracy", "accuracy", "test_accuracy", "r2", "test accuracy, R²"),
    Target("log10_lr", "hyperparameters", "learning_rate", "learning_rate/r2", "log10 learning rate, R²"),
    Target("optimizer", "hyperparameters", "optimizer", "optimizer/accuracy", "optimizer, accuracy"),
    Target("activation", "hyperparameters", "activation", "activation/accuracy", "activation, accuracy"),
    Target("patterns", "patterns", None, "macro_f1", "architecture patterns, macro F1"),
)


TRANSFER_OUTPUT = OutputKind(
    "bench-transfer",
    owned=("transfer.md", "transfer.json", "cache/*"),
    what="transfer benchmark",
)
