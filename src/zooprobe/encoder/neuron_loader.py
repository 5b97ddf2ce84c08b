"""Saving and loading v3 (neuron-level) encoders, and `LoadedNeuronEncoder`, their loaded form.

An encoder folder of format version 3 holds the files of every kind (`zooprobe.encoder.base`)::

    config.json        format_version 3, library_name "zooprobe", architecture "neurons", the
                       `NeuronEncoderConfig`, the pretraining targets (`PretrainTarget`: classes, mean, std)
                       and the provenance
    model.safetensors  the weights, including the zoo-level feature standardization (buffers)
    README.md          the model card

`LoadedNeuronEncoder` is the ``neurons`` kind of `WeightSpaceEncoder` (``tokenize``, ``embed``,
``encode``, ``latent_dim``, ``fingerprint``, provenance), so heads, representations, bench, push and
predict work with it as with any kind. Its "tokenized" form of a model is a `NeuronModel`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from zooprobe.encoder.base import (
    Embeddings,
    card_header,
    card_how_to_load,
    check_embed_args,
)
from zooprobe.encoder.config import NeuronEncoderConfig
from zooprobe.encoder.neuron_model import NeuronEncoder
from zooprobe.encoder.registry import register_encoder
from zooprobe.encoder.supervised import SupervisedEncoder
from zooprobe.hub import render_card
from zooprobe.tokens.neurons import BatchFeatures, NeuronModel, featurize_batch, neuron_model, stack_models

NEURON_FORMAT_VERSION = 3
ARCHITECTURE = "neurons"
REQUIRED_FIELDS = ("format_version", "library_name", "architecture", "encoder", "targets", "provenance")


@register_encoder(ARCHITECTURE)
@dataclass
class LoadedNeuronEncoder(SupervisedEncoder):
    """A pretrained v3 encoder (eval mode); see the module docs.

    Attributes:
        encoder: the `NeuronEncoder` (its feature standardization is part of its weights).
        provenance: what it was pretrained on (zoo source and fingerprint, ``model_ids``, config, ...).
        source: the folder it was loaded from (None when built in memory).
    """

    architecture: ClassVar[str] = ARCHITECTURE
    format_version: ClassVar[int] = NEURON_FORMAT_VERSION
    config_class: ClassVar[type] = NeuronEncoderConfig
    module_class: ClassVar[type] = NeuronEncoder
    token_outputs: ClassVar[bool] = False
    preprocessing: ClassVar[None] = None  # v3 encoders need no windows

    encoder: NeuronEncoder
    provenance: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    @property
    def config(self) -> NeuronEncoderConfig:
        return self.encoder.config

    @staticmethod
    def model_card(config: Mapping[str, Any]) -> str:
        return neuron_model_card(config)

    def tokenize(self, state_dict: Mapping[str, torch.Tensor]) -> NeuronModel:
        """The encoder's input for one state dict: its parsed layers (`zooprobe.tokens.neurons`)."""
        return neuron_model(state_dict, self.config.max_layers)

    def embed(
        self,
        tokenized: Sequence[NeuronModel],
        batch_size: int = 64,
        token_outputs: bool = False,
        stats: dict[str, float] | None = None,
        frozen_blocks: int = 0,
    ) -> Embeddings:
        """Representations of parsed models; differentiable, in the encoder's current mode.

        Models are grouped by signature (same shapes) and run `batch_size` at a time; each model's
        features are computed once and kept on it (`features`). `stats` (a dict) accumulates
        ``n_windows`` (batches), ``featurize_s`` and ``model_forward_s``. `frozen_blocks` is accepted for
        the interface of `LoadedEncoder.embed` and not used (the kept features are what is reused).
        """
        check_embed_args(self, batch_size, token_outputs)
        device = self.device
        out = torch.zeros(len(tokenized), self.latent_dim, device=device)
        rows: list[torch.Tensor] = []
        index: list[list[int]] = []
        groups: dict[tuple, list[int]] = {}
        for i, m in enumerate(tokenized):
            groups.setdefault(m.signature, []).append(i)
        for idx in groups.values():
            for s in range(0, len(idx), batch_size):
                part = idx[s : s + batch_size]
                start = time.perf_counter()
                features = self.features([tokenized[i] for i in part])
                mid = time.perf_counter()
                rows.append(self.encoder(features))
                index.append(part)
                if stats is not None:
                    stats["n_windows"] = stats.get("n_windows", 0) + 1
                    stats["featurize_s"] = stats.get("featurize_s", 0.0) + mid - start
                    stats["model_forward_s"] = stats.get("model_forward_s", 0.0) + time.perf_counter() - mid
        if not rows:
            return Embeddings(out, None)
        order = torch.tensor([i for part in index for i in part], device=device)
        out = out.index_copy(0, order, torch.cat(rows).float())
        return Embeddings(out, None)

    def features(self, models: Sequence[NeuronModel]) -> BatchFeatures:
        """Features of same-architecture `models`: computed together for those that have none yet (and
        kept on each model), reused for the others."""
        edges = self.config.message_passing_rounds > 0  # only message passing reads edge channels
        missing = [m for m in models if m.features is None or (edges and not m.features.with_edges)]
        if missing:
            stacked = stack_models([m.layers for m in missing])
            computed = featurize_batch(stacked, edges=edges)
            for m, f in zip(missing, computed.split(), strict=True):
                m.features = f
        return BatchFeatures.concat([m.features for m in models])  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ saving
def neuron_model_card(config: Mapping[str, Any]) -> str:
    """The README.md model card of a v3 encoder folder, generated from its config.json content."""
    enc = config["encoder"]
    prov = config.get("provenance") or {}
    targets = config.get("targets") or []
    zoo_source = str(prov.get("zoo_source", ""))
    header = card_header(["permutation-invariant"], zoo_source)
    n_params = prov.get("encoder_parameters")
    names = ", ".join(f"`{t['name']}`" for t in targets) or "none"
    dim = int(enc["latent_dim"]) + sum(
        len(t["classes"]) if t["kind"] == "categorical" else 1 for t in targets
    )
    lines = [
        "# zooprobe weight-space encoder (neuron-level, v3)",
        "",
        "Reads the **weights** of a trained neural network one neuron at a time and returns a fixed-size "
        f"representation ({dim} values). Hidden-neuron permutations leave it unchanged by construction: no "
        "input carries a within-layer position.",
        "",
        "- architecture: per-neuron MLP embeddings with DeepSets context"
        + (
            f" and {enc['message_passing_rounds']} message-passing round(s)"
            if enc["message_passing_rounds"]
            else ""
        )
        + f", per-layer pooling, {enc['n_layers']} transformer block(s) of width {enc['d_model']} over the "
        "layer tokens" + (f", {n_params:,} parameters" if isinstance(n_params, int) else ""),
        f"- pretrained **supervised** (multi-task) on the metadata of its pretraining zoo: {names}",
        f"- representation: latent ({enc['latent_dim']}) + the encoder's own predictions of those targets",
        *card_how_to_load(
            'encoder = zooprobe.load_encoder("PATH_OR_REPO_ID")',
            "representations = encoder.encode([state_dict])",
        ),
        "## Training data",
        "",
        f"- zoo: `{zoo_source or 'unknown'}`, {prov.get('n_models', '?')} models of its train split",
        f"- epochs trained: {prov.get('epochs_trained', '?')}"
        + ("" if prov.get("finished", True) is not False else " (**unfinished**)"),
    ]
    return render_card(header, lines)


save_neuron_encoder = LoadedNeuronEncoder.save_module
"""Write an encoder folder of this kind (see the module docs) atomically; weights first, config.json after."""
load_neuron_encoder_folder = LoadedNeuronEncoder.load_module
"""Load an encoder folder of this kind whose config.json content is `data` (strict: every field checked)."""


__all__ = [
    "NEURON_FORMAT_VERSION",
    "LoadedNeuronEncoder",
    "load_neuron_encoder_folder",
    "neuron_model_card",
    "save_neuron_encoder",
]
