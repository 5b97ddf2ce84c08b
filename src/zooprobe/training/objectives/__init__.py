"""Pretraining objectives, one module each, run by `zooprobe.training.loop.run_loop` (see `base`).

- ``tokens`` (`tokens`): the v2 token encoder, self-supervised (masked reconstruction + contrastive views);
- ``neurons`` (`neurons`): the v3 neuron-level encoder, supervised multi-task on the zoo's metadata.

Importing this package registers them; a new objective is a module here, imported below.
"""

from __future__ import annotations

from zooprobe.training.objectives import neurons, tokens
from zooprobe.training.objectives.base import OBJECTIVES, Objective, Step, objective_for, register_objective

__all__ = ["OBJECTIVES", "Objective", "Step", "neurons", "objective_for", "register_objective", "tokens"]
