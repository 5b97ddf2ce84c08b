"""Prediction heads over weight-space representations.

`config` (`HeadConfig`, torch-free), `targets` (what to predict, from a zoo's metadata),
`prediction_heads` (the three heads), `encoder_with_head` (`EncoderWithHead`: frozen or fine-tuned
encoder + head), `head_loader` (`save_head`, `load_head_folder`, `LoadedHead`). Training them is
`zooprobe.training`.

Names are imported on first use (PEP 562): ``zooprobe.heads.config`` stays importable without torch.
"""

from __future__ import annotations

from zooprobe.core.lazy import exports_by_module, lazy_exports

_EXPORTS = exports_by_module(
    {
        "zooprobe.heads.config": ["HeadConfig"],
        "zooprobe.heads.encoder_with_head": ["EncoderWithHead"],
        "zooprobe.heads.head_loader": ["LoadedHead", "load_head_folder", "save_head"],
        "zooprobe.heads.prediction_heads": [
            "AccuracyPredictionHead",
            "HyperparameterPredictionHead",
            "PatternClassificationHead",
            "build_head",
        ],
        "zooprobe.heads.targets": ["TargetSpec", "TaskSpec", "build_task_spec"],
    }
)

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
