"""Progress bars for long work (zoo builds, pretraining, head training, encoding)."""

from __future__ import annotations

from typing import Any


def progress_bar(label: str, extra: str) -> Any:
    """A rich progress bar on stderr: label, bar, done/total, ``extra`` (a text column), elapsed, ETA.

    No refresh thread (``auto_refresh=False``): callers redraw with ``refresh()`` on their own updates,
    so a background thread never competes with a training loop of many short torch calls.
    """
    from rich.console import Console  # heavy: rich
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )  # heavy: rich

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(extra),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        auto_refresh=False,
    )
