"""zooprobe: read a neural network's weights and tell what it is.

The pipeline, one package per stage, each importing only the ones before it::

    zoo -> tokens -> encoder -> representations -> heads -> training -> api -> predict / report / publish

The names below are the whole pipeline, with consistent verbs (build/load/save, pretrain/train, predict)::

    zoo = zooprobe.load_zoo("default")             # or build_zoo(ZooConfig(...), folder)
    encoder = zooprobe.load_encoder("default")     # or pretrain_encoder(PretrainConfig(), zoo, folder)
    run = zooprobe.train(zooprobe.TrainConfig(task="accuracy"), "runs/acc")
    head = zooprobe.load_head("runs/acc")
    table = zooprobe.predict(head, [model.state_dict(), "other.safetensors"])  # a pandas DataFrame

or, scikit-learn style, ``zooprobe.Probe(task="accuracy").fit(zoo).predict(state_dicts)``.

Names are imported on first use (PEP 562), so ``import zooprobe`` and ``zooprobe --help`` stay fast.
"""

from __future__ import annotations

from zooprobe._version import __version__
from zooprobe.core.lazy import lazy_exports
from zooprobe.errors import ConfigError, InvalidInputError, ZooFormatError, ZooprobeError

_EXPORTS: dict[str, str] = {
    # zoo
    "Zoo": "zooprobe.zoo.store",
    "ZooConfig": "zooprobe.zoo.config",
    "build_zoo": "zooprobe.zoo.build",
    "merge_zoo": "zooprobe.zoo.build",
    "import_checkpoint_folder": "zooprobe.zoo.importers",
    "import_model_zoos": "zooprobe.zoo.importers",
    # loaders and the verbs that take sources
    "load_zoo": "zooprobe.api",
    "builtin_zoo": "zooprobe.api",
    "load_encoder": "zooprobe.api",
    "list_encoders": "zooprobe.api",
    "default_encoder_path": "zooprobe.api",
    "load_head": "zooprobe.api",
    "list_presets": "zooprobe.api",
    "pretrain_encoder": "zooprobe.api",
    "adapt_encoder": "zooprobe.api",
    "train": "zooprobe.api",
    "evaluate": "zooprobe.api",
    # encoder
    "EncoderConfig": "zooprobe.encoder.config",
    "WeightEncoder": "zooprobe.encoder.model",
    "LoadedEncoder": "zooprobe.encoder.encoder_loader",
    "save_encoder": "zooprobe.encoder.encoder_loader",
    "NeuronEncoderConfig": "zooprobe.encoder.config",
    "NeuronEncoder": "zooprobe.encoder.neuron_model",
    "LoadedNeuronEncoder": "zooprobe.encoder.neuron_loader",
    "WeightSpaceEncoder": "zooprobe.encoder.base",
    "register_encoder": "zooprobe.encoder.registry",
    # heads
    "HeadConfig": "zooprobe.heads.config",
    "PatternClassificationHead": "zooprobe.heads.prediction_heads",
    "AccuracyPredictionHead": "zooprobe.heads.prediction_heads",
    "HyperparameterPredictionHead": "zooprobe.heads.prediction_heads",
    "EncoderWithHead": "zooprobe.heads.encoder_with_head",
    "LoadedHead": "zooprobe.heads.head_loader",
    "save_head": "zooprobe.heads.head_loader",
    "list_shipped_heads": "zooprobe.heads.shipped",
    # training
    "PretrainConfig": "zooprobe.training.pretrain_config",
    "AdaptConfig": "zooprobe.training.adapt_config",
    "TrainConfig": "zooprobe.training.config",
    "OptimConfig": "zooprobe.training.config",
    "StopConfig": "zooprobe.training.config",
    "TrainResult": "zooprobe.training.head_outputs",
    "RunFolder": "zooprobe.training.run_folder",
    # delivery
    "predict": "zooprobe.inference",
    "default_heads": "zooprobe.inference",
    "Probe": "zooprobe.probe",
    "write_report": "zooprobe.report",
    "push_run": "zooprobe.publish.push",
}

__all__ = [
    "ConfigError",
    "InvalidInputError",
    "ZooFormatError",
    "ZooprobeError",
    "__version__",
    *_EXPORTS,
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
