"""Saving and loading foundation (layer-token) encoders, and `LoadedLayerEncoder`, their loaded form.

An encoder folder of format version 4 holds the files of every kind (`zooprobe.encoder.base`)::

    config.json        format_version 4, library_name "zooprobe", architecture "layers", the
                       `LayerEncoderConfig`, the pretraining targets (`PretrainTarget`: classes, mean, std)
                       and the provenance (corpus, its manifest's sha256, the recipe, held-out scores)
    model.safetensors  the weights, including the corpus-level token standardization (buffers)
    README.md          the model card

`LoadedLayerEncoder` is the ``layers`` kind of `WeightSpaceEncoder`: its tokenized form of a model is a
`LayerTokens` (`zooprobe.tokens.layers`), and models of any depth are batched together (padded, masked).
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
from zooprobe.encoder.layer_model import LayerEncoder, LayerEncoderConfig
from zooprobe.encoder.registry import register_encoder
from zooprobe.encoder.supervised import SupervisedEncoder
from zooprobe.errors import InvalidInputError
from zooprobe.hub import render_card
from zooprobe.tokens.layers import LayerTokens, layer_tokens, pad_tokens, token_model, tokens_of_models

LAYER_FORMAT_VERSION = 4
ARCHITECTURE = "layers"
REQUIRED_FIELDS = ("format_version", "library_name", "architecture", "encoder", "targets", "provenance")


@register_encoder(ARCHITECTURE)
@dataclass
class LoadedLayerEncoder(SupervisedEncoder):
    """A pretrained foundation encoder (eval mode); see the module docs."""

    architecture: ClassVar[str] = ARCHITECTURE
    format_version: ClassVar[int] = LAYER_FORMAT_VERSION
    config_class: ClassVar[type] = LayerEncoderConfig
    module_class: ClassVar[type] = LayerEncoder
    token_outputs: ClassVar[bool] = False
    preprocessing: ClassVar[None] = None

    encoder: LayerEncoder
    provenance: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    @property
    def config(self) -> LayerEncoderConfig:
        return self.encoder.config

    @staticmethod
    def model_card(config: Mapping[str, Any]) -> str:
        return layer_model_card(config)

    def tokenize(self, state_dict: Mapping[str, torch.Tensor]) -> LayerTokens:
        """The encoder's input for one state dict: its layer tokens (`zooprobe.tokens.layers`)."""
        return LayerTokens(layer_tokens(state_dict, self.config.max_layers))

    def tokenize_many(
        self, state_dicts: Sequence[Any], indices: Sequence[int] | int = 0
    ) -> list[LayerTokens]:
        """`tokenize` of each state dict, same-architecture networks featurized together
        (`zooprobe.tokens.layers.tokens_of_models`: the same tokens as one at a time, several times faster
        for a zoo). An invalid item is reported by `tokenize_checked`, naming its index."""
        if len(state_dicts) < 2 or not all(isinstance(sd, Mapping) for sd in state_dicts):
            return super().tokenize_many(state_dicts, indices)
        try:
            models = [token_model(sd, self.config.max_layers) for sd in state_dicts]
        except InvalidInputError:
            return super().tokenize_many(state_dicts, indices)
        return [LayerTokens(t) for t in tokens_of_models(models)]

    def embed(
        self,
        tokenized: Sequence[LayerTokens],
        batch_size: int = 64,
        token_outputs: bool = False,
        stats: dict[str, float] | None = None,
        frozen_blocks: int = 0,
    ) -> Embeddings:
        """Representations of tokenized models, `batch_size` at a time (any depths together: padded and
        masked); differentiable, in the encoder's current mode. `frozen_blocks` is accepted for the
        interface and not used."""
        check_embed_args(self, batch_size, token_outputs)
        device = self.device
        rows: list[torch.Tensor] = []
        for s in range(0, len(tokenized), batch_size):
            start = time.perf_counter()
            x, mask = pad_tokens([t.tokens for t in tokenized[s : s + batch_size]])
            rows.append(self.encoder(x.to(device), mask.to(device)).float())
            if stats is not None:
                stats["n_windows"] = stats.get("n_windows", 0) + 1
                stats["n_padded_tokens"] = stats.get("n_padded_tokens", 0) + mask.numel()
                stats["model_forward_s"] = stats.get("model_forward_s", 0.0) + time.perf_counter() - start
        if not rows:
            return Embeddings(torch.zeros(0, self.latent_dim, device=device), None)
        return Embeddings(torch.cat(rows), None)


# ------------------------------------------------------------------------------------------ saving
def layer_model_card(config: Mapping[str, Any]) -> str:
    """The README.md model card of a foundation encoder folder, generated from its config.json content."""
    enc = config["encoder"]
    prov = config.get("provenance") or {}
    targets = config.get("targets") or []
    header = card_header(["permutation-invariant", "foundation"])
    dim = int(enc["latent_dim"])
    dim += sum(len(t["classes"]) if t["kind"] == "categorical" else 1 for t in targets)
    n_params = prov.get("encoder_parameters")
    lines = [
        "# zooprobe foundation weight-space encoder (layer tokens)",
        "",
        "Reads the **weights** of a trained network as one token per layer (pooled neuron descriptors and "
        f"spectral summaries) and returns a fixed-size representation ({dim} values). Hidden-neuron "
        "permutations, widening by neuron duplication and dead-neuron padding leave it unchanged.",
        "",
        f"- architecture: {enc['n_layers']} transformer block(s) of width {enc['d_model']} over the layer "
        "tokens" + (f", {n_params:,} parameters" if isinstance(n_params, int) else ""),
        "- pretrained **supervised** (multi-task) on the corpus metadata: "
        + (", ".join(f"`{t['name']}`" for t in targets) or "none"),
        f"- representation: latent ({enc['latent_dim']}) + the encoder's own predictions of those targets",
        *card_how_to_load(
            'encoder = zooprobe.load_encoder("FOLDER")'
            if prov.get("adapted")
            else 'encoder = zooprobe.load_encoder("foundation")',
            "representations = encoder.encode([state_dict])",
        ),
        "## Training data",
        "",
        f"- corpus: `{prov.get('zoo_source', 'unknown')}`, {prov.get('n_models', '?')} models",
    ]
    if prov.get("adapted"):
        src = prov.get("source_provenance") or {}
        lines[-1] = (
            "- **adapted** (test-time adaptation, self-supervised on weights only, no labels read) to the "
            f"zoo `{prov.get('zoo_source', 'unknown')}` (fingerprint `{prov.get('zoo_fingerprint', '?')}`), "
            f"{prov.get('n_models', '?')} models"
        )
        lines += [
            f"- source encoder: `{prov.get('source_encoder', '?')}` (fingerprint "
            f"`{prov.get('source_fingerprint', '?')}`), pretrained on `{src.get('zoo_source', 'unknown')}`",
            f"- objective: {prov.get('objective', '?')}",
        ]
    if prov.get("corpus_sha256"):
        lines.append(f"- corpus content sha256 (its manifest): `{prov['corpus_sha256']}`")
    if prov.get("recipe"):
        lines.append(f"- recipe: `{prov['recipe']}`")
    if prov.get("pretrain_seconds"):
        seconds = float(prov["pretrain_seconds"])
        lines.append(f"- pretraining time: {seconds:.0f} s on {prov.get('machine', '?')}")
    held_out = prov.get("held_out") or {}
    if held_out:
        lines += ["", "## Held-out generators (never seen in pretraining)", ""]
        lines += ["| zoo | target | stats+gbm | stats+rep+gbm | zero-shot |", "|---|---|---|---|---|"]
        for zoo, rows in held_out.items():
            for target, row in rows.items():
                cells = [row.get(k) for k in ("stats", "stats+rep", "zero-shot")]
                text = [f"{c:.3f}" if isinstance(c, int | float) else "n/a" for c in cells]
                lines.append(f"| {zoo} | {target} | " + " | ".join(text) + " |")
    return render_card(header, lines)


save_layer_encoder = LoadedLayerEncoder.save_module
"""Write an encoder folder of this kind (see the module docs) atomically; weights first, config.json after."""
load_layer_encoder_folder = LoadedLayerEncoder.load_module
"""Load an encoder folder of this kind whose config.json content is `data` (strict: every field checked)."""


__all__ = [
    "LAYER_FORMAT_VERSION",
    "LoadedLayerEncoder",
    "layer_model_card",
    "load_layer_encoder_folder",
    "save_layer_encoder",
]
