"""Encoder pretraining, the public entry point: `pretrain` picks the objective of the configuration's
architecture (`zooprobe.training.objectives`: ``tokens`` self-supervised, ``neurons`` supervised on the
zoo's metadata) and runs it with the one engine, `zooprobe.training.loop.run_loop` (torchrun, resume,
optimizer, schedule, clipping, divergence, checkpoints, TensorBoard, log, progress).

``load_encoder(OUTPUT)`` loads the best encoder; `training_history(OUTPUT)` the per-epoch records.
"""

from __future__ import annotations

from pathlib import Path

from zooprobe.training.loop import (
    LAST_DIR,
    LOG_FILE,
    STATE_FILE,
    TB_DIR,
    EpochCallback,
    OptimSettings,
    run_loop,
    training_history,
)
from zooprobe.training.objectives import objective_for
from zooprobe.training.objectives.tokens import PretrainModel, length_buckets, nt_xent
from zooprobe.training.pretrain_config import NEURON_PRESETS, PRESETS, PretrainConfig
from zooprobe.zoo.store import Zoo


def pretrain(
    config: PretrainConfig | None,
    zoo: Zoo,
    output: str | Path,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> Path:
    """Pretrain an encoder on `zoo` into `output`; returns `output` (load it with `load_encoder`).

    `zooprobe.api.pretrain_encoder` takes any zoo source (folder, Hub id, ``default``) and calls this. With
    ``resume=True`` (default) a run found in `output` continues after its last finished epoch (a finished
    run returns at once); its configuration and zoo must match. With ``resume=False`` the files a previous
    run wrote into `output` are deleted first (only those). `on_epoch_end(epoch, record)` is called after
    each epoch's checkpoint is written (1-based epoch).
    """
    cfg = (config or PretrainConfig()).resolved()
    objective = objective_for(str(cfg.architecture), cfg)
    return run_loop(
        objective,
        OptimSettings.from_config(cfg),
        zoo,
        output,
        resume=resume,
        progress=progress,
        on_epoch_end=on_epoch_end,
    )


__all__ = [
    "LAST_DIR",
    "LOG_FILE",
    "NEURON_PRESETS",
    "PRESETS",
    "STATE_FILE",
    "TB_DIR",
    "PretrainConfig",
    "PretrainModel",
    "length_buckets",
    "nt_xent",
    "pretrain",
    "training_history",
]
