"""Test-time adaptation, the entry point: `adapt` runs the ``adapt`` objective
(`zooprobe.training.objectives.adapt`) with the one engine, `zooprobe.training.loop.run_loop` (resume,
checkpoints, one writer per folder, torchrun, log, progress), and writes the configuration as YAML next to
the encoder (`ADAPT_CONFIG_FILE`). ``load_encoder(OUTPUT)`` loads the adapted encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from zooprobe.core.files import atomic_write_text
from zooprobe.core.progress import rank
from zooprobe.training.adapt_config import ADAPT_CONFIG_FILE, AdaptConfig
from zooprobe.training.loop import OptimSettings, run_loop
from zooprobe.training.objectives.adapt import AdaptObjective


def adapt(config: AdaptConfig, encoder: Any, zoo: Any, output: str | Path, **loop: Any) -> Path:
    """Adapt the loaded foundation `encoder` to the weights of `zoo` into `output`; returns `output`.

    `zooprobe.api.adapt_encoder` loads both from ``config.zoo`` / ``config.encoder`` and calls this.
    `loop`: `run_loop`'s keywords ``resume`` (default True: a run found in `output` resumes, same
    configuration, zoo and source encoder; False removes what a previous run wrote first), ``progress``
    and ``on_epoch_end``. The configuration is written to ``OUTPUT/adapt_config.yaml``.
    """
    config.validate()
    out = run_loop(AdaptObjective(config, encoder), OptimSettings.from_config(config), zoo, output, **loop)
    if rank() == 0:  # under torchrun rank 0 writes
        atomic_write_text(out / ADAPT_CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
    return out


__all__ = ["ADAPT_CONFIG_FILE", "AdaptConfig", "adapt"]
