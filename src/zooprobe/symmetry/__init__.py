"""Function-preserving transforms of networks' weights, and a canonical form that undoes some of them.

- `structure`: the hidden units of a state dict (zooprobe MLPs and CNNs, plain ``nn.Sequential`` MLPs) and
  the `Architecture` (activation, residual connections, pooling) the weights do not show;
- `transforms`: `rescale` (ReLU), `flip_signs` (tanh), `widen`, `pad_dead`, `fold_batchnorm` (permutations:
  `zooprobe.encoder.augment.permute_neurons`);
- `canonical`: `canonicalize`, which merges duplicated units and drops dead ones (undoing `widen` and
  `pad_dead` exactly, a no-op on trained networks); `canonical_form` (`canonicalize`, then
  `normalize_units`: per-unit scale and sign), the form training and prediction read networks in, and
  `canonical_state_dicts`, its lazy featurization hook.

See docs/symmetry.md for what each transform does to zooprobe's predictions.
"""

from zooprobe.symmetry.canonical import (
    CANONICAL_FORM,
    canonical_form,
    canonical_state_dicts,
    canonicalize,
    normalize_scales,
    normalize_units,
)
from zooprobe.symmetry.structure import ACTIVATIONS, Architecture, Network, SymmetryError, network
from zooprobe.symmetry.transforms import flip_signs, fold_batchnorm, pad_dead, rescale, widen

__all__ = [
    "ACTIVATIONS",
    "CANONICAL_FORM",
    "Architecture",
    "Network",
    "SymmetryError",
    "canonical_form",
    "canonical_state_dicts",
    "canonicalize",
    "flip_signs",
    "fold_batchnorm",
    "network",
    "normalize_scales",
    "normalize_units",
    "pad_dead",
    "rescale",
    "widen",
]
