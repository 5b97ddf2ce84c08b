"""The summary table printed after a build and by ``zooprobe zoo summary``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from zooprobe.zoo.store import Zoo

COUNTED = ("dataset", "family", "optimizer", "activation", "init", "batch_size")
FLAGS = ("has_conv_layers", "has_batch_norm", "has_layer_norm", "has_dropout", "has_residual")
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
MISSING = "missing"
"""How a field the zoo does not record is shown (an imported zoo may lack any metadata field)."""


def summary_tables(zoo: Zoo) -> Group:
    """Counts per split, per categorical field and per flag, and test-accuracy quantiles (final models)."""
    meta = zoo.final().metadata()
    tables: list = [Text(f"{zoo.root}: {len(meta)} trained models, {len(zoo)} checkpoints")]
    t = Table(title="models per split")
    t.add_column("split")
    t.add_column("models", justify="right")
    for s, n in meta["split"].value_counts().reindex(["train", "validation", "test"]).dropna().items():
        t.add_row(str(s), str(int(n)))
    tables.append(t)
    counts = Table(title="counts per value")
    counts.add_column("field")
    counts.add_column("value")
    counts.add_column("models", justify="right")
    for col in COUNTED:
        if col in meta.columns:
            values = meta[col]
            for value, n in values.dropna().value_counts().sort_index().items():
                counts.add_row(col, str(value), str(int(n)))
            if values.isna().any():
                counts.add_row(col, MISSING, str(int(values.isna().sum())))
    tables.append(counts)
    flags = Table(title="flags")
    flags.add_column("flag")
    flags.add_column("true", justify="right")
    flags.add_column("false", justify="right")
    flags.add_column(MISSING, justify="right")
    for col in FLAGS:
        known = meta[col].dropna().astype(bool) if col in meta.columns else pd.Series(dtype=bool)
        flags.add_row(col, str(int(known.sum())), str(int((~known).sum())), str(len(meta) - len(known)))
    tables.append(flags)
    if "test_accuracy" in meta.columns:
        q = Table(title="test accuracy quantiles")
        group_col = "dataset" if "dataset" in meta.columns else None
        q.add_column("subset")
        for p in QUANTILES:
            q.add_column(f"q{int(p * 100)}", justify="right")
        groups: list[tuple[str, pd.Series]] = [("all", meta["test_accuracy"])]
        if group_col:
            groups += [(str(k), g["test_accuracy"]) for k, g in meta.groupby(group_col)]
        for name, acc in groups:
            acc = acc.dropna()
            if len(acc):
                q.add_row(name, *[f"{x:.3f}" for x in np.quantile(acc, QUANTILES)])
        tables.append(q)
    return Group(*tables)


def print_summary(zoo: Zoo, console: Console | None = None) -> None:
    (console or Console()).print(summary_tables(zoo))
