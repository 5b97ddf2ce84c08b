"""The model card (README.md) of a token (v2) encoder folder, generated from its config.json content."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zooprobe.encoder.base import card_header, card_how_to_load
from zooprobe.hub import render_card


def model_card(config: Mapping[str, Any]) -> str:
    """The README.md model card of an encoder folder, generated from its config.json content."""
    enc = config["encoder"]
    prov = config.get("provenance") or {}
    pre = config["preprocessing"]
    tok = config["tokenizer"]["config"]
    zoo_source = str(prov.get("zoo_source", ""))
    pcfg = prov.get("pretrain_config") or {}
    header = card_header(["hyper-representations"], zoo_source)
    n_params = prov.get("encoder_parameters")
    lines = [
        "# zooprobe weight-space encoder",
        "",
        "A transformer that reads the **weights** of a trained neural network and returns a fixed-size "
        f"embedding ({enc['latent_dim']} values) describing it. Prediction heads (accuracy, training "
        "hyperparameters, architecture flags) are trained on these embeddings. It was pretrained "
        "self-supervised (SANE-style masked reconstruction of weight tokens plus a contrastive loss between "
        "two augmented views of the same network), with no property labels.",
        "",
        f"- architecture: {enc['n_layers']} pre-norm transformer block(s), width {enc['d_model']}, "
        f"{enc['n_heads']} heads, MLP {enc['d_ff']}, pooling `{enc['pooling']}`"
        + (f", {n_params:,} parameters" if isinstance(n_params, int) else ""),
        f"- input: weight tokens of {tok['token_size']} values (one row of a layer per token chunk), with "
        "learned (global, layer, in-layer) position embeddings",
        f"- sequences longer than {pre['window']} tokens are encoded in windows of {pre['window']} tokens "
        "whose embeddings are averaged, weighted by their token counts",
        *card_how_to_load(
            'enc = zooprobe.load_encoder("path/to/this/folder")   # or the Hub repo id it was uploaded to',
            f"embeddings = enc.encode([model.state_dict() for model in models])   # [N, {enc['latent_dim']}]",
        ),
        "`encode` applies the exact pretraining preprocessing stored in `config.json` (token size, zoo-level "
        "normalization statistics, window length); weights load strictly from `model.safetensors`.",
        "",
        "## Training data",
        "",
    ]
    lines += _training_data(prov, zoo_source)
    lines += _training_procedure(pcfg, pre)
    lines += LIMITATIONS
    return render_card(header, lines)


def _training_data(prov: Mapping[str, Any], zoo_source: str) -> list[str]:
    """The card's training data lines: the zoo, its models and the checkpoint selection."""
    lines: list[str] = []
    if prov:
        n_ids = len(prov.get("model_ids", []))
        lines += [
            f"- zoo: `{zoo_source}` (fingerprint `{str(prov.get('zoo_fingerprint', ''))[:16]}`)",
            f"- {n_ids} models: the final checkpoints of the zoo's `train` split; their ids are listed in "
            "`config.json` (`provenance.model_ids`). Evaluate heads on models outside that list.",
            f"- checkpoint selection: {prov.get('selection', 'lowest validation loss')} "
            f"({len(prov.get('validation_model_ids', []))} validation models, never trained on)",
        ]
        if prov.get("best_epoch") is not None:
            lines.append(
                f"- selected epoch {prov['best_epoch']} of {prov.get('epochs_trained')}, "
                f"loss {prov.get('best_loss', float('nan')):.4f}"
            )
    else:
        lines.append("- no pretraining provenance was recorded for this encoder.")
    return lines


def _training_procedure(pcfg: Mapping[str, Any], pre: Mapping[str, Any]) -> list[str]:
    """The card's training procedure lines (losses, views, optimizer), from the pretraining config."""
    if not pcfg:
        return []
    return [
        "",
        "## Training procedure",
        "",
        f"- loss: (1 - {pcfg.get('gamma')}) x masked reconstruction MSE (mask ratio "
        f"{pcfg.get('mask_ratio')}) + {pcfg.get('gamma')} x NT-Xent (temperature "
        f"{pcfg.get('temperature')}) on pooled embeddings of two views",
        f"- views: function-preserving neuron permutations ({'on' if pcfg.get('permute') else 'off'}), "
        "multiplicative noise "
        f"(sigma {pcfg.get('noise_sigma')}), token erasing ({pcfg.get('erase_ratio')}), random "
        f"{pre['window']}-token crops",
        f"- optimizer: AdamW, lr {pcfg.get('lr')}, weight decay {pcfg.get('weight_decay')}, "
        f"{pcfg.get('epochs')} epochs, batch size {pcfg.get('batch_size')}, linear warmup "
        f"({pcfg.get('warmup_fraction')}) then cosine decay, gradient clipping {pcfg.get('grad_clip')}",
        f"- preset `{pcfg.get('preset')}`, seed {pcfg.get('seed')}",
    ]


LIMITATIONS = (
    "",
    "## Limitations",
    "",
    "- The encoder only knows the architectures of its pretraining zoo; embeddings of very different "
    "networks (other layer types, far larger layers) are out of distribution even when they encode "
    "without error.",
    "- Normalization statistics come from the pretraining zoo: a tensor with an unseen name is "
    "standardized with the statistics of its kind (or global ones).",
    "- Long networks are read in independent windows; relations between distant layers are only seen "
    "through the averaged window embeddings.",
    "- Weight statistics are a strong baseline for predicting accuracy from weights (field literature); "
    "compare against them before trusting a head trained on this encoder.",
    "",
    "## License",
    "",
    "MIT.",
    "",
)
"""The card's limitations and license sections (the same for every token encoder)."""
