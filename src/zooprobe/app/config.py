"""`AppConfig`: the settings of ``zooprobe app``, shared by the command line and `zooprobe.app.ui.serve`.

Light on purpose (no torch, no Gradio): the command line builds its parser from it before importing
anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

from zooprobe.core.state_dicts import DEFAULT_MAX_PARAMS
from zooprobe.errors import ConfigError

DEFAULT_MAX_UPLOAD_MB = 256
DEFAULT_PORT = 7860


@dataclass
class AppConfig:
    """Settings of ``zooprobe app`` (the command line's options are these fields)."""

    heads: list[str] | None = None
    """Head folders, run folders or Hub repo ids of heads; none: the heads shipped with zooprobe."""
    host: str = "127.0.0.1"
    """Address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes the page to the network)."""
    port: int = DEFAULT_PORT
    """Port to serve on."""
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    """Largest file the page accepts, in MiB."""
    max_params: int = DEFAULT_MAX_PARAMS
    """Largest checkpoint read, in values (as zooprobe predict --max_params)."""
    level: float = 0.9  # zooprobe.heads.uncertainty.DEFAULT_LEVEL (a test checks they agree)
    """Level of the prediction intervals of continuous targets."""
    show_unpredictable: bool = False
    """Also show the values of targets the zoo does not make predictable (as zooprobe predict)."""

    def check(self) -> AppConfig:
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port {self.port}: must be in 1-65535")
        if self.max_upload_mb < 1:
            raise ConfigError(f"--max_upload_mb {self.max_upload_mb}: must be at least 1")
        if not 0.0 < self.level < 1.0:
            raise ConfigError(f"--level {self.level}: must be in (0, 1), e.g. 0.9 for 90% intervals")
        if isinstance(self.max_params, bool) or not isinstance(self.max_params, int) or self.max_params < 1:
            raise ConfigError(
                f"--max_params {self.max_params!r}: must be a positive integer (values per checkpoint)"
            )
        if self.heads is not None and not self.heads:
            raise ConfigError("--heads: give at least one head, or leave it out for the shipped heads")
        return self


__all__ = ["DEFAULT_MAX_UPLOAD_MB", "DEFAULT_PORT", "AppConfig"]
