"""Neuron-level inputs of the v3 encoder: a state dict becomes per-neuron, per-input and per-layer features.

The v2 encoder cuts weight rows into SANE-style chunk tokens with a within-layer position, and must learn
that hidden neurons can be permuted from augmentation. The v3 encoder (`zooprobe.encoder.neuron_model`)
reads the network one **neuron** at a time instead, with no within-layer position anywhere, so a
permutation of hidden neurons leaves its output unchanged by construction.

1. `parse_state_dict`: a feed-forward state dict -> `NeuronModel`, its list of `Layer` (main layers are
   the ``*.weight`` tensors with >= 2 dims, with their bias; 1-D leftovers are grouped by module prefix
   into BatchNorm (has running statistics) or LayerNorm and attached to the latest main layer of that
   width; layer l+1 reads layer l's neurons when ``in == out_l`` or, after a channel-major flatten,
   ``in == out_l * s``). Residual connections need no special case: the layers they join have equal
   widths. Models are grouped by `NeuronModel.signature` (every shape and flag), so a batch stacks
   same-shaped tensors.
2. `featurize_batch`: per neuron (an output unit or conv output channel) a 34-value descriptor of its
   incoming weights (quantiles and moments of ``w * sqrt(fan_in)``; sorting makes it invariant to the
   order of the previous layer's neurons), bias, norm parameters, outgoing weights and layer context; per
   first-layer input a 12-value descriptor; per layer a 33-value summary (weight and bias moments, and
   WeightWatcher-style spectral features: top singular value, stable and effective rank, power-law
   alpha, singular-value quantiles). Values pass through asinh; the encoder standardizes them with
   zoo-level statistics fitted at pretraining (`FeatureNorm`), never per model.

Large networks need no windows: every layer is pooled to one token before the transformer, so memory
grows with the number of weights of one batch and the sequence length with depth only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from zooprobe.errors import InvalidInputError
from zooprobe.tokens.neuron_parse import Layer, parse_state_dict, signature

# ------------------------------------------------------------------------------------------ models
VALUE_CLIP = 1e6
"""Weights are clipped to ``[-VALUE_CLIP, VALUE_CLIP]`` before featurization: zoo weights stay within
about ±20, and a finite but extreme value (1e20) would otherwise overflow float32 moments into NaN."""


@dataclass
class NeuronModel:
    """One parsed network: its main layers (with norms and connectivity) and their joint signature."""

    layers: list[Layer]
    features: BatchFeatures | None = field(default=None, repr=False, compare=False)
    """This model's features alone, kept by the first encode that computes them (the weights of a
    `NeuronModel` never change, so fine-tuning epochs reuse them instead of featurizing again)."""

    @property
    def signature(self) -> tuple:
        return signature(self.layers)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_tokens(self) -> int:
        """Neurons of all layers plus the first layer's inputs (the encoder's set elements)."""
        return sum(ly.out for ly in self.layers) + int(self.layers[0].weight.shape[1])


def neuron_model(state_dict: Mapping[str, torch.Tensor], max_layers: int | None = None) -> NeuronModel:
    """Parse a state dict for the neuron encoder (see the module docs, step 1).

    Raises `InvalidInputError` for a state dict without a main layer, with non-finite weights, or (when
    `max_layers` is given) with more main layers than the encoder's position tables hold.
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            continue
        t = t.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(t).all()):
            raise InvalidInputError(f"tensor {name!r} holds non-finite values (NaN or inf)")
        tensors[name] = t.clamp(-VALUE_CLIP, VALUE_CLIP)
    layers = parse_state_dict(tensors)
    if max_layers is not None and len(layers) > max_layers:
        raise InvalidInputError(
            f"the network has {len(layers)} main layers but this encoder holds at most {max_layers}; use an "
            "encoder pretrained with a larger max_layers"
        )
    return NeuronModel(layers)


def stack_groups(models: Sequence[NeuronModel]) -> list[tuple[list[int], list[StackedLayer]]]:
    """Models grouped by signature, in order of first appearance: (their indices, stacked layers)."""
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(models):
        groups.setdefault(m.signature, []).append(i)
    return [(idx, stack_models([models[i].layers for i in idx])) for idx in groups.values()]


# ------------------------------------------------------------------------------------------ stacking


@dataclass
class StackedLayer:
    """One layer of B same-signature models: tensors with a leading batch dim (None if absent)."""

    weight: torch.Tensor  # [B, out, in, *k]
    bias: torch.Tensor | None
    bn: dict[str, torch.Tensor | None] | None
    ln: dict[str, torch.Tensor | None] | None
    span: int


def _stack_norm(lys: list[Layer], kind: str) -> dict[str, torch.Tensor | None] | None:
    """The first norm of `kind` of same-signature layers, stacked per leaf (None when there is none)."""
    idx = next((j for j, n in enumerate(lys[0].norms) if n.kind == kind), None)
    if idx is None:
        return None
    res: dict[str, torch.Tensor | None] = {}
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        v0 = getattr(lys[0].norms[idx], leaf)
        res[leaf] = None if v0 is None else torch.stack([getattr(ly.norms[idx], leaf) for ly in lys])
    return res


def stack_models(models: list[list[Layer]]) -> list[StackedLayer]:
    """Stack the parsed layers of same-signature models (first BN and first LN per layer are used)."""
    out: list[StackedLayer] = []
    for li in range(len(models[0])):
        lys = [m[li] for m in models]
        w = torch.stack([ly.weight for ly in lys])
        b = torch.stack([ly.bias for ly in lys]) if lys[0].bias is not None else None  # type: ignore[misc]
        out.append(StackedLayer(w, b, _stack_norm(lys, "bn"), _stack_norm(lys, "ln"), lys[0].span))
    return out


def index_stack(st: list[StackedLayer], idx: torch.Tensor) -> list[StackedLayer]:
    def sel(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[idx]

    return [
        StackedLayer(
            s.weight[idx],
            sel(s.bias),
            None if s.bn is None else {k: sel(v) for k, v in s.bn.items()},
            None if s.ln is None else {k: sel(v) for k, v in s.ln.items()},
            s.span,
        )
        for s in st
    ]


def noise_stack(
    st: list[StackedLayer], sigma: float, gen: torch.Generator | None = None
) -> list[StackedLayer]:
    """Multiplicative weight noise w * (1 + sigma * eps) on weights, biases and norm affines."""

    def nz(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        return x * (1 + sigma * torch.randn(x.shape, generator=gen))

    res = []
    for s in st:
        bn = None if s.bn is None else {k: (nz(v) if k in ("weight", "bias") else v) for k, v in s.bn.items()}
        ln = None if s.ln is None else {k: nz(v) for k, v in s.ln.items()}
        res.append(StackedLayer(nz(s.weight), nz(s.bias), bn, ln, s.span))  # type: ignore[arg-type]
    return res


# ------------------------------------------------------------------------------------------ features
QUANTS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
N_NEURON_F = 34
N_INPUT_F = 12
N_LAYER_F = 33


def _sorted_quantiles(x: torch.Tensor) -> torch.Tensor:
    """Nearest-rank quantiles QUANTS along the last dim: [..., n] -> [..., 7]."""
    n = x.shape[-1]
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not x.requires_grad:
        # numpy's SIMD sort is several times faster than torch's on CPU; sorting only moves values
        s = torch.from_numpy(np.sort(x.numpy(), axis=-1))
    else:
        s = x.sort(dim=-1).values
    idx = torch.tensor([round(q * (n - 1)) for q in QUANTS])
    return s[..., idx]


def _std(x: torch.Tensor) -> torch.Tensor:
    """Population standard deviation over the last dim, two-pass: unlike ``Tensor.std``, whose kernel rounds
    a short last dim differently with the number of rows, each row gets the same bits whatever else is in
    the batch (`zooprobe.tokens.layers.tokens_of_models` featurizes same-architecture networks together)."""
    return (x - x.mean(-1, keepdim=True)).pow(2).mean(-1).sqrt()


def _moments(x: torch.Tensor) -> torch.Tensor:
    """[..., n] -> [..., 11]: 7 quantiles, mean, std, mean|x|/rms, log rms (x already scaled)."""
    rms = x.pow(2).mean(-1).add(1e-12).sqrt()
    std = _std(x) if x.shape[-1] > 1 else torch.zeros_like(rms)
    return torch.cat(
        [
            torch.asinh(_sorted_quantiles(x)),
            torch.asinh(x.mean(-1, keepdim=True)),
            torch.asinh(std.unsqueeze(-1)),
            (x.abs().mean(-1) / rms).unsqueeze(-1),
            rms.log().unsqueeze(-1),
        ],
        dim=-1,
    )


def _context(li: int, n_layers: int, w: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """Layer context broadcast to [b, n, 8]."""
    out, fan_in = w.shape[1], w[0, 0].numel()
    k = w[0, 0, 0].numel() if w.ndim > 3 else 1
    v = torch.tensor(
        [
            math.log(fan_in),
            math.log(out),
            float(w.ndim > 3),
            math.log(k),
            float(li == 0),
            float(li == n_layers - 1),
            li / max(n_layers - 1, 1),
            math.log(n_layers),
        ]
    )
    return v.expand(b, n, 8)


def _outgoing(st: list[StackedLayer], li: int) -> tuple[torch.Tensor, bool]:
    """Outgoing weights of layer li's neurons grouped per neuron: [B, out_li, m] (scaled by sqrt(fan_in'))."""
    if li + 1 >= len(st) or st[li + 1].span == 0:
        return torch.zeros(0), False
    nxt = st[li + 1].weight
    b, o2 = nxt.shape[:2]
    n_out = st[li].weight.shape[1]
    fan = nxt[0, 0].numel()
    cols = nxt.reshape(b, o2, n_out, -1).permute(0, 2, 1, 3).reshape(b, n_out, -1)
    return cols * math.sqrt(fan), True


def neuron_features(st: list[StackedLayer], li: int) -> torch.Tensor:
    """[B, out, N_NEURON_F] descriptors of layer li's neurons."""
    s = st[li]
    w = s.weight
    b, out = w.shape[:2]
    fan = w[0, 0].numel()
    x = w.reshape(b, out, fan) * math.sqrt(fan)
    parts = [_moments(x)]  # 11
    if s.bias is not None:
        parts.append(torch.stack([torch.asinh(s.bias), torch.ones_like(s.bias)], -1))
    else:
        parts.append(torch.zeros(b, out, 2))
    if s.bn is not None:
        g = s.bn["weight"] if s.bn["weight"] is not None else torch.ones(b, out)
        be = s.bn["bias"] if s.bn["bias"] is not None else torch.zeros(b, out)
        rm = s.bn["running_mean"] if s.bn["running_mean"] is not None else torch.zeros(b, out)
        rv = s.bn["running_var"] if s.bn["running_var"] is not None else torch.ones(b, out)
        parts.append(
            torch.stack(
                [torch.asinh(g), torch.asinh(be), torch.asinh(rm), (rv + 1e-5).log(), torch.ones_like(g)], -1
            )
        )
    else:
        parts.append(torch.zeros(b, out, 5))
    if s.ln is not None:
        g = s.ln["weight"] if s.ln["weight"] is not None else torch.ones(b, out)
        be = s.ln["bias"] if s.ln["bias"] is not None else torch.zeros(b, out)
        parts.append(torch.stack([torch.asinh(g), torch.asinh(be), torch.ones_like(g)], -1))
    else:
        parts.append(torch.zeros(b, out, 3))
    cols, ok = _outgoing(st, li)
    if ok:
        rms = cols.pow(2).mean(-1).add(1e-12).sqrt()
        std = _std(cols) if cols.shape[-1] > 1 else torch.zeros_like(rms)
        parts.append(
            torch.stack(
                [
                    torch.asinh(cols.mean(-1)),
                    torch.asinh(std),
                    rms.log(),
                    torch.asinh(cols.abs().amax(-1)),
                    torch.ones_like(rms),
                ],
                -1,
            )
        )
    else:
        parts.append(torch.zeros(b, out, 5))
    parts.append(_context(li, len(st), w, b, out))
    f = torch.cat(parts, -1)
    assert f.shape[-1] == N_NEURON_F, f.shape
    return f


def input_features(st: list[StackedLayer]) -> torch.Tensor:
    """[B, in, N_INPUT_F]: per input channel of the first layer, moments of its column (w*sqrt(fan_in))."""
    w = st[0].weight
    b, _, n_in = w.shape[:3]
    fan = w[0, 0].numel()
    cols = w.transpose(1, 2).reshape(b, n_in, -1) * math.sqrt(fan)
    ctx = torch.full((b, n_in, 1), math.log(n_in))
    return torch.cat([_moments(cols), ctx], -1)


def _power_law_alpha(sv: torch.Tensor) -> torch.Tensor:
    """[B] power-law exponent of the tail of the squared singular values `sv` [B, r] (at or above their
    median; Hill estimator), at most 20."""
    ev = sv.pow(2)
    xmin = ev.median(-1, keepdim=True).values
    tail = ev >= xmin
    ntail = tail.sum(-1).float()
    alpha = 1 + ntail / (torch.where(tail, (ev / xmin).log(), torch.zeros_like(ev)).sum(-1).clamp_min(1e-12))
    return alpha.clamp(max=20.0)


def layer_features(st: list[StackedLayer], li: int) -> torch.Tensor:
    """[B, N_LAYER_F] per-layer summary: moments of all weights, bias moments, spectral features, context."""
    s = st[li]
    w = s.weight
    b, out = w.shape[:2]
    fan = w[0, 0].numel()
    m = w.reshape(b, out, fan)
    parts = [_moments(m.reshape(b, -1) * math.sqrt(fan))]  # 11
    if s.bias is not None:
        bb = s.bias
        parts.append(
            torch.stack(
                [
                    torch.asinh(bb.mean(-1)),
                    torch.asinh(_std(bb)),
                    bb.pow(2).mean(-1).add(1e-12).sqrt().log(),
                ],
                -1,
            )
        )
    else:
        parts.append(torch.zeros(b, 3))
    # spectral (WeightWatcher-style); power-law alpha only for min(dim) >= 16
    sv = torch.linalg.svdvals(m.double()).float().clamp_min(1e-12)  # [B, r] descending
    r = sv.shape[-1]
    top = sv[:, 0]
    fro2 = sv.pow(2).sum(-1)
    p = sv.pow(2) / fro2.unsqueeze(-1)
    eff = torch.exp(-(p * p.clamp_min(1e-30).log()).sum(-1)) / r
    ratios = sv[:, [min(r - 1, round(q * (r - 1))) for q in (0.25, 0.5, 0.75)]] / top.unsqueeze(-1)
    if r >= 16:
        alpha, alpha_ok = _power_law_alpha(sv), torch.ones(b)
    else:
        alpha, alpha_ok = torch.zeros(b), torch.zeros(b)
    std = _std(m.reshape(b, -1))
    mp_edge = std * (math.sqrt(out) + math.sqrt(fan))
    parts.append(
        torch.stack(
            [
                top.log(),
                fro2.sqrt().log(),
                (fro2 / top.pow(2)).log(),
                eff,
                alpha,
                alpha_ok,
                top / (mp_edge + 1e-12),
                sv[:, -1] / top,
            ],
            -1,
        )
    )
    parts.append(ratios)  # 3
    parts.append(_context(li, len(st), w, b, 1)[:, 0])  # 8 -> total 11+3+8+3+8 = 33
    f = torch.cat(parts, -1)
    return f


def edge_channels(st: list[StackedLayer], li: int) -> torch.Tensor | None:
    """[B, out_li, n_prev, 2] edge features of layer li: mean over the kernel/span group of
    asinh(w*sqrt(fan_in)) and of its absolute value. None when the layer has no source nodes."""
    s = st[li]
    w = s.weight
    b, out, n_in = w.shape[:3]
    fan = w[0, 0].numel()
    if li == 0:
        n_prev = n_in
    elif s.span > 0:
        n_prev = st[li - 1].weight.shape[1]
    else:
        return None
    e = torch.asinh(w.reshape(b, out, n_prev, -1) * math.sqrt(fan))
    return torch.stack([e.mean(-1), e.abs().mean(-1)], -1)


@dataclass
class BatchFeatures:
    """Features of B same-architecture models (see the module docs, step 2)."""

    neurons: list[torch.Tensor]  # per layer [B, out_l, N_NEURON_F]
    inputs: torch.Tensor  # [B, in, N_INPUT_F]
    layers: torch.Tensor  # [B, L, N_LAYER_F]
    edges: list[torch.Tensor | None]  # per layer [B, out_l, n_prev, 2]; None when not computed
    with_edges: bool = True  # whether the edge channels were computed at all

    def split(self) -> list[BatchFeatures]:
        """One `BatchFeatures` per model (B = 1 each), sharing no storage with this batch."""
        n = int(self.inputs.shape[0])
        return [
            BatchFeatures(
                [x[i : i + 1].clone() for x in self.neurons],
                self.inputs[i : i + 1].clone(),
                self.layers[i : i + 1].clone(),
                [None if e is None else e[i : i + 1].clone() for e in self.edges],
                self.with_edges,
            )
            for i in range(n)
        ]

    @staticmethod
    def concat(parts: Sequence[BatchFeatures]) -> BatchFeatures:
        """The batch of same-architecture `parts`, in order (inverse of `split`)."""
        first = parts[0]
        return BatchFeatures(
            [torch.cat([p.neurons[li] for p in parts]) for li in range(len(first.neurons))],
            torch.cat([p.inputs for p in parts]),
            torch.cat([p.layers for p in parts]),
            [
                None if first.edges[li] is None else torch.cat([p.edges[li] for p in parts])  # type: ignore[misc]
                for li in range(len(first.edges))
            ],
            all(p.with_edges for p in parts),
        )


def featurize_batch(st: list[StackedLayer], edges: bool = True) -> BatchFeatures:
    """Features of stacked same-architecture models; ``edges=False`` skips the per-weight edge channels
    (only message passing reads them, and they are the largest part)."""
    with torch.no_grad():
        return BatchFeatures(
            neurons=[neuron_features(st, i) for i in range(len(st))],
            inputs=input_features(st),
            layers=torch.stack([layer_features(st, i) for i in range(len(st))], 1),
            edges=[edge_channels(st, i) if edges else None for i in range(len(st))],
            with_edges=edges,
        )
