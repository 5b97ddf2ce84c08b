"""Progress and logs of long work (zoo builds, pretraining, head training, encoding, statistics).

- `Progress`: on an interactive terminal a rich progress bar on stderr; elsewhere (a pipe, a file, CI,
  ``--progress false``) plain log lines at most every 10% of the work or 30 seconds, never a bar cut to 80
  columns. Log records written while a bar is drawn are held back from the terminal (they still reach the
  log file) so the bar stays intact.
- `configure_logging`: the ``zooprobe`` logger's terminal output (``--log_level``; under torchrun only rank 0
  writes to the terminal) and `log_file`, which copies every record of a run into its folder as it goes
  (``train.log``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from zooprobe.core.torchrun import torchrun_env
from zooprobe.errors import ConfigError

LOGGER_NAME = "zooprobe"
log = logging.getLogger(LOGGER_NAME)
LEVELS = ("debug", "info", "warning", "error")
_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_bars = 0  # live rich bars: the terminal handler holds INFO records back meanwhile


class _TerminalFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _bars == 0 or record.levelno >= logging.WARNING


def rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    return torchrun_env().rank


def configure_logging(level: str = "info") -> None:
    """Send the ``zooprobe`` logger's records at `level` or above to stderr (rank 0 only under torchrun;
    other ranks show errors only)."""
    if level not in LEVELS:
        raise ConfigError(f"--log_level must be one of {', '.join(LEVELS)}, got {level!r}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    for handler in [h for h in log.handlers if getattr(h, "_zooprobe_terminal", False)]:
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(getattr(logging, level.upper()) if rank() == 0 else logging.ERROR)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler.addFilter(_TerminalFilter())
    handler._zooprobe_terminal = True  # type: ignore[attr-defined]
    log.addHandler(handler)


@contextlib.contextmanager
def log_file(path: Path, level: str = "info") -> Iterator[None]:
    """Append every ``zooprobe`` record at `level` or above to `path` while the block runs (flushed per
    record, so a killed run leaves its log up to the last line). Only rank 0 writes."""
    if rank() != 0:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(getattr(logging, level.upper()) if level in LEVELS else logging.INFO)
    handler.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
    if log.level == logging.NOTSET or log.level > handler.level:
        log.setLevel(handler.level)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


def interactive() -> bool:
    """True when stderr is a terminal a progress bar can be drawn on (and this is rank 0)."""
    return rank() == 0 and sys.stderr.isatty()


class Progress:
    """Progress of `total` units of work (see the module docs); a context manager.

    ``advance(n, **fields)`` counts finished units and updates the fields shown (e.g. ``loss``);
    ``describe(text)`` changes the label. `enabled=False` shows nothing at all (log lines of the caller's
    own, such as per-epoch summaries, still go through the logger).
    """

    def __init__(
        self, label: str, total: int, *, unit: str = "", enabled: bool = True, done: int = 0, **fields: str
    ) -> None:
        self.label, self.total, self.unit, self.enabled = label, max(int(total), 0), unit, enabled
        self.done, self.fields = done, dict(fields)
        self._bar: Any = None
        self._start = time.perf_counter()
        self._done0 = done
        self._next_log = 0.0
        self._logged_at = self._start

    def __enter__(self) -> Progress:
        global _bars
        if self.enabled and interactive():
            from rich.console import Console  # heavy: rich
            from rich.progress import (  # heavy: rich
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress  # heavy: rich

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                auto_refresh=False,  # no refresh thread competing with a training loop
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.done, info="")
            _bars += 1
        return self

    def _info(self) -> str:
        parts = [f"{k} {v}" for k, v in self.fields.items()]
        elapsed = time.perf_counter() - self._start
        if self.unit and elapsed > 0 and self.done > self._done0:
            parts.append(f"{(self.done - self._done0) / elapsed:.1f} {self.unit}/s")
        return "  ".join(parts)

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        self.fields.update({k: (f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in fields.items()})
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, info=self._info(), description=self.label)
            self._bar.refresh()
            return
        now = time.perf_counter()
        fraction = self.done / self.total if self.total else 1.0
        if fraction >= self._next_log or now - self._logged_at >= 30 or self.done >= self.total:
            log.info("%s: %d/%d  %s", self.label, self.done, self.total, self._info())
            self._next_log = fraction + 0.1
            self._logged_at = now

    def describe(self, label: str) -> None:
        self.label = label
        if self._bar is not None:
            self._bar.update(self._task, description=label)
            self._bar.refresh()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        global _bars
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
            _bars -= 1


__all__ = ["LEVELS", "LOGGER_NAME", "Progress", "configure_logging", "interactive", "log", "log_file", "rank"]
