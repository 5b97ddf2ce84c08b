"""Layer tokens of the foundation encoder: a state dict becomes one fixed-size vector per main layer.

The v3 encoder learns a DeepSets function over every neuron of every layer, so a batch must stack
models of one architecture; a corpus of mixed architectures (nearly every run its own shape) then
trains at about one model per step. The foundation encoder (`zooprobe.encoder.layer_model`) reads the
same neuron descriptors (`zooprobe.tokens.neurons`) through a *fixed* pooling instead:

- one **input token**: the mean and standard deviation over the first layer's inputs of their
  12-value descriptors;
- one **layer token** per main layer: the mean, standard deviation and 10/50/90 % quantiles over the
  layer's neurons of each of the 34 neuron descriptors (incoming weights, bias, norms, outgoing weights,
  context), plus the layer's 33-value summary (moments and WeightWatcher-style spectral features).

Every token has `N_TOKEN_F` values, the first two a one-hot token type. Pooling over neurons makes the
tokens invariant to hidden-neuron permutations by construction and independent of width; the token
sequence grows with depth only. Duplicated and dead neurons are removed first (`layer_tokens`). The
tokens of a model are computed once (a model's weights never change) and the encoder is a small
transformer over them, so pretraining on tens of thousands of mixed models takes minutes on two cores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from zooprobe.symmetry import canonicalize
from zooprobe.tokens.neurons import (
    N_INPUT_F,
    N_LAYER_F,
    N_NEURON_F,
    BatchFeatures,
    NeuronModel,
    featurize_batch,
    neuron_model,
    stack_models,
)

POOL_QUANTILES = (0.1, 0.5, 0.9)
N_POOLED_F = N_NEURON_F * (2 + len(POOL_QUANTILES))
N_TOKEN_F = 2 + N_POOLED_F + N_LAYER_F + 2 * N_INPUT_F
"""Values per token: type one-hot (2), pooled neuron descriptors, layer summary, pooled input descriptors."""
_POOL_AT = 2
_LAYER_AT = _POOL_AT + N_POOLED_F
_INPUT_AT = _LAYER_AT + N_LAYER_F


def _pool(x: torch.Tensor) -> torch.Tensor:
    """[n, f] -> [5f]: mean, std and the POOL_QUANTILES over the n rows."""
    if x.shape[0] == 1:
        return torch.cat([x[0], torch.zeros_like(x[0]), x[0].repeat(len(POOL_QUANTILES))])
    q = torch.quantile(x, torch.tensor(POOL_QUANTILES, dtype=x.dtype), dim=0)
    return torch.cat([x.mean(0), x.std(0, unbiased=False), q.reshape(-1)])


def layer_tokens(state_dict: Mapping[str, torch.Tensor], max_layers: int | None = None) -> torch.Tensor:
    """The ``[1 + L, N_TOKEN_F]`` tokens of one network (input token first, then its L main layers).

    The weights are canonicalized first (`zooprobe.symmetry.canonicalize`: duplicated units merged, dead
    ones dropped; a no-op on trained networks), so a network widened by neuron duplication or padded with
    dead neurons gets the tokens of the original.

    Raises `InvalidInputError` as `zooprobe.tokens.neurons.neuron_model` does (no main layer,
    non-finite weights, more than `max_layers` main layers).
    """
    return tokens_of_models([token_model(state_dict, max_layers)])[0]


def token_model(state_dict: Mapping[str, torch.Tensor], max_layers: int | None = None) -> NeuronModel:
    """The parsed, canonicalized network `layer_tokens` reads (its errors: see there)."""
    return neuron_model(canonicalize(state_dict), max_layers=max_layers)


def tokens_of_models(models: Sequence[NeuronModel]) -> list[torch.Tensor]:
    """The layer tokens of parsed networks (`token_model`), those of one architecture featurized together:
    each network gets exactly the tokens it gets alone (every feature is computed per network)."""
    groups: dict[tuple, list[int]] = {}
    for i, model in enumerate(models):
        groups.setdefault(model.signature, []).append(i)
    out: list[torch.Tensor] = [torch.empty(0)] * len(models)
    with torch.no_grad():
        for idx in groups.values():
            bf = featurize_batch(stack_models([models[i].layers for i in idx]), edges=False)
            for j, i in enumerate(idx):
                out[i] = _tokens(bf, j)
    return out


def _tokens(bf: BatchFeatures, j: int) -> torch.Tensor:
    """The tokens of network `j` of a featurized batch."""
    n_layers = len(bf.neurons)
    out = torch.zeros(1 + n_layers, N_TOKEN_F)
    inputs = bf.inputs[j]
    std = inputs.std(0, unbiased=False) if inputs.shape[0] > 1 else torch.zeros(N_INPUT_F)
    out[0, 0] = 1.0
    out[0, _INPUT_AT:] = torch.cat([inputs.mean(0), std])
    for i in range(n_layers):
        out[1 + i, 1] = 1.0
        out[1 + i, _POOL_AT:_LAYER_AT] = _pool(bf.neurons[i][j])
        out[1 + i, _LAYER_AT:_INPUT_AT] = bf.layers[j, i]
    return out


def pad_tokens(tokens: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length token sequences: ``([B, T, N_TOKEN_F], mask [B, T])``, zeros where padded."""
    t = max(int(x.shape[0]) for x in tokens)
    x = torch.zeros(len(tokens), t, N_TOKEN_F)
    mask = torch.zeros(len(tokens), t, dtype=torch.bool)
    for i, tok in enumerate(tokens):
        x[i, : len(tok)] = tok
        mask[i, : len(tok)] = True
    return x, mask


@dataclass
class LayerTokens:
    """One network's layer tokens: the foundation encoder's tokenized form of a state dict."""

    tokens: torch.Tensor  # [1 + L, N_TOKEN_F]

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_layers(self) -> int:
        return self.num_tokens - 1
