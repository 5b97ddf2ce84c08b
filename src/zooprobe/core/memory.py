"""The process's resident memory on Linux (``/proc/self``): one home for the benchmarks and memory tests.

`reset_peak_rss` sets the peak (``VmHWM``) back to the current resident set (``VmRSS``), so the peak of a
step above its starting level can be read afterwards with ``process_status_kib("VmHWM")``.
"""

from __future__ import annotations

from pathlib import Path


def process_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``); None where there is none (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the process's peak resident memory (``VmHWM``) to the current one; False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
