"""Pretraining objectives, one module each, run by `zooprobe.training.loop.run_loop` (see `base`).

- ``tokens`` (`tokens`): the v2 token encoder, self-supervised (masked reconstruction + contrastive views);
- ``neurons`` (`neurons`): the v3 neuron-level encoder, supervised multi-task on the zoo's metadata;
- ``layers`` (`layers`): the foundation encoder, supervised multi-task on the zoo's metadata;
- ``adapt`` (`adapt`): the foundation encoder's test-time adaptation, self-supervised on weights only.

Importing this package registers them; a new objective is a module here, imported below.
"""

from __future__ import annotations

from zooprobe.training.objectives import adapt, layers, neurons, tokens
from zooprobe.training.objectives.base import OBJECTIVES, Objective, Step, objective_for, register_objective

__all__ = [
    "OBJECTIVES",
    "Objective",
    "Step",
    "adapt",
    "layers",
    "neurons",
    "objective_for",
    "register_objective",
    "tokens",
]
