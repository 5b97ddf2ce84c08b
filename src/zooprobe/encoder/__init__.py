"""Weight-space encoders: one interface (`base.WeightSpaceEncoder`), a registry of kinds and of named
pretrained encoders (`registry`), reading and writing any kind (`auto`); the kinds: the v2 token
transformer (`model`, `encoder_loader`) and the v3 neuron-level encoder (`neuron_model`,
`neuron_loader`); function-preserving augmentations (`augment`), configurations without torch (`config`).

Pretraining is training: `zooprobe.training.pretrain`. The benchmark is `zooprobe.bench.encoder`.

Names are imported on first use (PEP 562): ``zooprobe.encoder.config`` stays importable without torch.
"""

from __future__ import annotations

from zooprobe.core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "AnyEncoder": "zooprobe.encoder.folders",
    "WeightSpaceEncoder": "zooprobe.encoder.base",
    "list_encoders": "zooprobe.encoder.auto",
    "load_encoder": "zooprobe.encoder.auto",
    "register_encoder": "zooprobe.encoder.registry",
    "register_pretrained": "zooprobe.encoder.registry",
    "EncoderConfig": "zooprobe.encoder.config",
    "EncoderConfigError": "zooprobe.encoder.config",
    "EncoderOutput": "zooprobe.encoder.model",
    "LoadedEncoder": "zooprobe.encoder.encoder_loader",
    "LoadedNeuronEncoder": "zooprobe.encoder.neuron_loader",
    "NeuronEncoder": "zooprobe.encoder.neuron_model",
    "NeuronEncoderConfig": "zooprobe.encoder.config",
    "PretrainTarget": "zooprobe.encoder.config",
    "TransformerBlock": "zooprobe.encoder.model",
    "WeightEncoder": "zooprobe.encoder.model",
    "load_encoder_folder": "zooprobe.encoder.folders",
    "save_encoder": "zooprobe.encoder.encoder_loader",
    "save_neuron_encoder": "zooprobe.encoder.neuron_loader",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
