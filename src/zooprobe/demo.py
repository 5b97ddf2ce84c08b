"""``make demo`` / ``zooprobe demo``: the main job on the built-in default.

Until the head trainer lands this builds (once; later runs reuse the cache) and summarizes the default
zoo: the same code path as ``zooprobe zoo build --preset small``.
"""

from __future__ import annotations

import time

from rich.console import Console

from .zoo.build import builtin_zoo
from .zoo.store import Zoo
from .zoo.summary import print_summary


def run_demo(preset: str = "small", console: Console | None = None) -> Zoo:
    console = console or Console()
    start = time.perf_counter()
    root = builtin_zoo(preset)
    zoo = Zoo.open(root)
    console.print(f"built-in zoo '{preset}' ready at {root} ({time.perf_counter() - start:.1f}s)")
    print_summary(zoo, console)
    return zoo
