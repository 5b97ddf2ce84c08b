"""`DemoConfig`: the settings of ``zooprobe demo`` / ``make demo``, shared by the command line and
`zooprobe.demo.run_demo`, and saved as ``demo_config.yaml`` in the demo's output folder.

Light on purpose (no torch): the command line builds its parser from it before importing anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

from zooprobe.core.config import config
from zooprobe.errors import ConfigError

DEMO_ZOO = "demo"
"""The built-in zoo preset the demo uses by default (`zooprobe.zoo.config.PRESETS`)."""
DEMO_CONFIG_FILE = "demo_config.yaml"


@config()
@dataclass
class DemoConfig:
    """What ``zooprobe demo`` runs on (the command line's options are these fields)."""

    preset: str = DEMO_ZOO
    """Built-in zoo preset to use (demo: 768 runs, 108 test models; tiny, small, bench)."""
    output: str = "runs/demo"
    """Folder for the run folders (and demo_config.yaml)."""

    def check(self) -> DemoConfig:
        if not self.preset:
            raise ConfigError("demo: --preset must name a built-in zoo preset (demo, tiny, small, bench)")
        if not str(self.output):
            raise ConfigError("demo: --output must be a folder")
        return self


__all__ = ["DEMO_CONFIG_FILE", "DEMO_ZOO", "DemoConfig"]
