"""The v3 weight-space encoder: permutation-invariant over hidden neurons by construction.

Inputs come from `zooprobe.tokens.neurons` (per-neuron, per-input and per-layer features of same-shaped
models, batched). The forward pass, top to bottom:

1. `FeatureNorm` standardizes every feature with zoo-level statistics fitted once at pretraining on the
   train split (saved as buffers with the weights), clipped to ±8.
2. Each neuron is embedded by an MLP, then sees its layer's mean embedding (DeepSets context); optional
   ``message_passing_rounds`` pass messages forward and backward along the weight matrices (NFN / neural
   graph style, equivariant). Nothing depends on a neuron's index, so permuting hidden neurons permutes
   the embeddings and nothing else.
3. Each layer is pooled (mean, max and std over its neurons: symmetric functions), added to its layer
   summary embedding and its position counted from the start and from the end of the network.
4. A small transformer reads ``[cls, inputs, layer_1 .. layer_L]``; the latent is a projection of the cls
   state and the mean layer state.
5. The **representation** is ``[latent, predictions]``: the latent and the encoder's own multi-task head
   outputs (softmax for categorical, sigmoid for binary targets, standardized values for continuous
   ones) for the metadata it was pretrained to predict (`training.objectives.neurons`). On the bench zoo the
   predictions gave gradient boosting more than the latent alone did (docs/encoder.md).

A permutation of hidden neurons therefore leaves the representation unchanged up to float rounding of
sums; `tests/encoder/test_neuron_encoder.py` checks it on real subject models without augmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zooprobe.encoder.config import NeuronEncoderConfig, PretrainTarget
from zooprobe.encoder.supervised import TargetHeadsModule
from zooprobe.tokens.neurons import N_INPUT_F, N_LAYER_F, N_NEURON_F, BatchFeatures


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.GELU(), nn.Linear(h, o))


class FeatureNorm(nn.Module):
    """Zoo-level standardization of neuron, input and layer features (buffers, fitted once)."""

    def __init__(self) -> None:
        super().__init__()
        for name, n in (("neuron", N_NEURON_F), ("input", N_INPUT_F), ("layer", N_LAYER_F)):
            self.register_buffer(f"{name}_mean", torch.zeros(n))
            self.register_buffer(f"{name}_std", torch.ones(n))

    def fit(self, batches: list[BatchFeatures]) -> None:
        def set_(name: str, x: torch.Tensor) -> None:
            x = x.double()
            getattr(self, f"{name}_mean").copy_(x.mean(0).float())
            getattr(self, f"{name}_std").copy_(x.std(0).nan_to_num(1.0).clamp_min(1e-6).float())

        set_("neuron", torch.cat([n.reshape(-1, n.shape[-1]) for bf in batches for n in bf.neurons]))
        set_("input", torch.cat([bf.inputs.reshape(-1, bf.inputs.shape[-1]) for bf in batches]))
        set_("layer", torch.cat([bf.layers.reshape(-1, bf.layers.shape[-1]) for bf in batches]))

    def apply(self, name: str, x: torch.Tensor) -> torch.Tensor:
        z = (x.to(self.neuron_mean.device) - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")
        return z.nan_to_num(0.0).clamp(-8, 8)


class MessagePassingRound(nn.Module):
    """h <- h + MLP(LN([h, forward message, backward message, layer mean])) for every node set."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fwd = nn.Linear(2 * d, d)
        self.bwd = nn.Linear(2 * d, d)
        self.norm = nn.LayerNorm(4 * d)
        self.upd = _mlp(4 * d, 2 * d, d)

    def forward(
        self, h_in: torch.Tensor, hs: list[torch.Tensor], edges: list[torch.Tensor | None]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        nodes = [h_in, *hs]  # nodes[0]: inputs; nodes[l + 1]: layer l's neurons
        b, d = h_in.shape[0], h_in.shape[-1]
        fwd = [torch.zeros_like(x) for x in nodes]
        bwd = [torch.zeros_like(x) for x in nodes]
        for li, e in enumerate(edges):
            if e is None:
                continue
            e = e.to(h_in.device)
            src, dst = nodes[li], nodes[li + 1]
            n_prev, out = src.shape[1], dst.shape[1]
            m_f = torch.einsum("bojc,bjd->bocd", e, src).reshape(b, out, 2 * d) / n_prev
            m_b = torch.einsum("bojc,bod->bjcd", e, dst).reshape(b, n_prev, 2 * d) / out
            fwd[li + 1] = fwd[li + 1] + self.fwd(m_f)
            bwd[li] = bwd[li] + self.bwd(m_b)
        new = []
        for x, f, bw in zip(nodes, fwd, bwd, strict=True):
            ctx = x.mean(1, keepdim=True).expand_as(x)
            new.append(x + self.upd(self.norm(torch.cat([x, f, bw, ctx], -1))))
        return new[0], new[1:]


class NeuronEncoder(TargetHeadsModule):
    """Permutation-invariant encoder of same-signature batches (see the module docs).

    ``forward(features)`` returns the representation ``[B, representation_dim]``; `latent` and
    `predict` expose the parts.
    """

    def __init__(self, config: NeuronEncoderConfig, targets: list[PretrainTarget]) -> None:
        super().__init__()
        self._set_targets(config, targets)
        d = config.d_model
        self.norm = FeatureNorm()
        self.emb_neuron = _mlp(N_NEURON_F, 2 * d, d)
        self.emb_input = _mlp(N_INPUT_F, 2 * d, d)
        self.ctx_neuron = nn.Sequential(nn.LayerNorm(2 * d), _mlp(2 * d, 2 * d, d))
        self.rounds = nn.ModuleList(MessagePassingRound(d) for _ in range(config.message_passing_rounds))
        self.pool = nn.Sequential(nn.LayerNorm(3 * d), nn.Linear(3 * d, d))
        self.emb_layer = _mlp(N_LAYER_F, 2 * d, d)
        self.pos_start = nn.Embedding(config.max_layers, d)
        self.pos_end = nn.Embedding(config.max_layers, d)
        self.type_emb = nn.Embedding(3, d)  # cls, inputs, layer
        self.cls = nn.Parameter(torch.zeros(d))
        self._add_transformer_and_heads()

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.cat([h.mean(1), h.amax(1), h.std(1, unbiased=False)], -1))

    def latent(self, bf: BatchFeatures) -> torch.Tensor:
        """Latent ``[B, latent_dim]`` of one same-signature batch."""
        n = self.norm
        hs = [self.emb_neuron(n.apply("neuron", x)) for x in bf.neurons]
        hs = [h + self.ctx_neuron(torch.cat([h, h.mean(1, keepdim=True).expand_as(h)], -1)) for h in hs]
        h_in = self.emb_input(n.apply("input", bf.inputs))
        for rnd in self.rounds:
            h_in, hs = rnd(h_in, hs, bf.edges)
        n_layers, b, device = len(hs), h_in.shape[0], h_in.device
        pos = torch.arange(n_layers, device=device).clamp(max=self.config.max_layers - 1)
        pos_end = (n_layers - 1 - torch.arange(n_layers, device=device)).clamp(max=self.config.max_layers - 1)
        layer_tokens = (
            torch.stack([self._pool(h) for h in hs], 1)
            + self.emb_layer(n.apply("layer", bf.layers))
            + self.pos_start(pos)
            + self.pos_end(pos_end)
            + self.type_emb.weight[2]
        )
        tokens = torch.cat(
            [
                (self.cls + self.type_emb.weight[0]).expand(b, 1, -1),
                (self._pool(h_in) + self.type_emb.weight[1]).unsqueeze(1),
                layer_tokens,
            ],
            1,
        )
        x = self.transformer(tokens)
        return self.to_latent(torch.cat([x[:, 0], x[:, 1:].mean(1)], -1))

    def forward(self, bf: BatchFeatures) -> torch.Tensor:
        return self.represent(self.latent(bf))


def multitask_loss(
    specs: list[PretrainTarget], outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Weighted sum over targets of MSE (continuous, standardized), cross-entropy (categorical) and binary
    cross-entropy; rows without a value (NaN, or class -1) do not count."""
    total = next(iter(outputs.values())).new_zeros(())
    for t in specs:
        y, o = targets[t.name].to(total.device), outputs[t.name]
        if t.kind == "continuous":
            keep = torch.isfinite(y)
            if keep.any():
                total = total + t.weight * F.mse_loss(o[keep, 0], y[keep])
        else:
            keep = y >= 0
            if not keep.any():
                continue
            if t.kind == "categorical":
                total = total + t.weight * F.cross_entropy(o[keep], y[keep].long())
            else:
                total = total + t.weight * F.binary_cross_entropy_with_logits(o[keep, 0], y[keep].float())
    return total
