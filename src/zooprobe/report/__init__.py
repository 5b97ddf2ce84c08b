"""Reports on trained heads (``zooprobe report``) and predictions on checkpoint files (``zooprobe predict``).

`write_report` writes a self-contained HTML page of a finished run folder (see `zooprobe.report.html`).
"""

from __future__ import annotations

from zooprobe.report.html import write_report

__all__ = ["write_report"]
