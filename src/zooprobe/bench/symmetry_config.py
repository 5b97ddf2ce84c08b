"""`SymmetryConfig`: the settings of ``zooprobe bench symmetry``, shared by the command line and
`zooprobe.bench.symmetry.bench_symmetry`, and saved as ``symmetry_config.yaml`` next to its results.

Light on purpose (no torch): the command line builds its parser from it before importing anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zooprobe.core.config import config
from zooprobe.errors import ConfigError

TRANSFORM_NAMES = ("permute", "rescale", "flip_signs", "widen2", "widen4", "pad_dead", "fold_batchnorm")
"""The function-preserving transforms the benchmark knows (`zooprobe.bench.symmetry` implements them)."""
SYMMETRY_CONFIG_FILE = "symmetry_config.yaml"


@config()
@dataclass
class SymmetryConfig:
    """What ``zooprobe bench symmetry`` measures (the command line's options are these fields)."""

    zoo: str = ""
    """Zoo whose models are transformed (a folder, ``builtin:NAME`` or a Hub id)."""
    head: str = ""
    """Trained head (run folder, head folder or Hub id)."""
    transforms: list[str] = field(default_factory=lambda: list(TRANSFORM_NAMES))
    """Transforms to apply (default: all): permute, rescale, flip_signs, widen2, widen4, pad_dead,
    fold_batchnorm."""
    split: str | None = "test"
    """Zoo split to use (all models if the zoo has no such split, or None)."""
    max_models: int = 200
    """Use at most this many models."""
    seed: int = 0
    """Seed of the random transforms."""

    def check(self) -> SymmetryConfig:
        if not self.zoo or not self.head:
            raise ConfigError("bench symmetry: give --zoo and --head")
        unknown = sorted(set(self.transforms) - set(TRANSFORM_NAMES))
        if unknown or not self.transforms:
            raise ConfigError(
                f"--transforms: unknown {unknown or 'none given'}; choose from {', '.join(TRANSFORM_NAMES)}"
            )
        if self.max_models < 1:
            raise ConfigError(f"--max_models must be >= 1, got {self.max_models}")
        return self

    def options(self) -> dict[str, Any]:
        """The keyword options of `bench_symmetry` (everything but the zoo, head and transforms)."""
        return {"split": self.split, "max_models": self.max_models, "seed": self.seed}


__all__ = ["SYMMETRY_CONFIG_FILE", "TRANSFORM_NAMES", "SymmetryConfig"]
