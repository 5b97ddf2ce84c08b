"""Prediction heads over weight-space representations.

`config` (`HeadConfig`, torch-free), `targets` (what to predict, from a zoo's metadata),
`prediction_heads` (the three heads), `encoder_with_head` (`EncoderWithHead`: frozen or fine-tuned
encoder + head), `head_loader` (`save_head`, `load_head_folder`, `LoadedHead`). Training them is
`zooprobe.training`.

Names are imported on first use (PEP 562): ``zooprobe.heads.config`` stays importable without torch.
"""

from __future__ import annotations

from zooprobe.core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "AccuracyPredictionHead": "zooprobe.heads.prediction_heads",
    "EncoderWithHead": "zooprobe.heads.encoder_with_head",
    "HeadConfig": "zooprobe.heads.config",
    "HyperparameterPredictionHead": "zooprobe.heads.prediction_heads",
    "LoadedHead": "zooprobe.heads.head_loader",
    "PatternClassificationHead": "zooprobe.heads.prediction_heads",
    "TargetSpec": "zooprobe.heads.targets",
    "TaskSpec": "zooprobe.heads.targets",
    "build_head": "zooprobe.heads.prediction_heads",
    "build_task_spec": "zooprobe.heads.targets",
    "load_head_folder": "zooprobe.heads.head_loader",
    "save_head": "zooprobe.heads.head_loader",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
