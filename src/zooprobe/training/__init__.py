"""Training: encoder pretraining (`pretrain`), head training (`trainer`, `TrainConfig`), the data loader,
the evaluator, run folders, training state and distributed helpers.

These work on loaded objects; `zooprobe.train` and `zooprobe.pretrain_encoder` take sources by name.
Names are imported on first use (PEP 562): ``zooprobe.training.config`` stays importable without torch.
"""

from __future__ import annotations

from zooprobe.core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "OptimConfig": "zooprobe.training.config",
    "PretrainConfig": "zooprobe.training.pretrain_config",
    "RunFolder": "zooprobe.training.run_folder",
    "StopConfig": "zooprobe.training.config",
    "TrainConfig": "zooprobe.training.config",
    "TrainResult": "zooprobe.training.head_outputs",
    "fit": "zooprobe.training.trainer",
    "pretrain": "zooprobe.training.pretrain",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
