"""The layer tokens of a zoo's models, computed once per model (`zooprobe.tokens.layers`), for the objectives
of the foundation (``layers``) encoder: ``layers`` (supervised) and ``adapt`` (self-supervised).

Only the weights are read here (`Zoo.state_dicts`), never a metadata column.
"""

from __future__ import annotations

from typing import Any

import torch

from zooprobe.core.progress import Progress
from zooprobe.errors import InvalidInputError
from zooprobe.tokens.layers import layer_tokens, pad_tokens


class LayerData:
    """Models' layer tokens, padded into one ``[N, T, F]`` tensor with its mask; batches index it."""

    def __init__(self, tokens: list[torch.Tensor]) -> None:
        self.n = len(tokens)
        if tokens:
            self.x, self.mask = pad_tokens(tokens)
        else:
            self.x, self.mask = torch.zeros(0, 1, 1), torch.zeros(0, 1, dtype=torch.bool)

    def __len__(self) -> int:
        return self.n

    def batches(self, batch_size: int, gen: torch.Generator | None) -> list[torch.Tensor]:
        """Row indices in chunks of `batch_size`: shuffled with `gen`, in order without it."""
        order = torch.randperm(self.n, generator=gen) if gen is not None else torch.arange(self.n)
        return [order[s : s + batch_size] for s in range(0, self.n, batch_size)]

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens and mask of rows `idx`, trimmed to their longest model."""
        mask = self.mask[idx]
        t = max(int(mask.sum(1).max()), 1) if len(idx) else 1
        return self.x[idx, :t], mask[:, :t]


def tokenize_zoo(zoo: Any, what: str, max_layers: int, progress: bool) -> LayerData:
    """The layer tokens of every model of `zoo` (a clear error names the model that cannot be read)."""
    tokens: list[torch.Tensor] = []
    with Progress(f"layer tokens of the {what} models", len(zoo), unit="models", enabled=progress) as bar:
        for i, sd in enumerate(zoo.state_dicts()):
            try:
                tokens.append(layer_tokens(sd, max_layers))
            except InvalidInputError as e:
                raise InvalidInputError(f"{what} model at row {i} (hash {zoo.content_hash(i)}): {e}") from e
            bar.advance()
    return LayerData(tokens)


__all__ = ["LayerData", "tokenize_zoo"]
