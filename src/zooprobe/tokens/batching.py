"""Batching helpers: pad several tokenized models into one batch, and cut long ones into windows.

Why windows: a ResNet-18 is ~370k tokens at token size 32; attention over that is quadratic, so SANE-style
encoders read long sequences window by window and combine the window embeddings. A window keeps the raw
(global, layer, in-layer) positions of its tokens, so the encoder still knows where in the network it is.

Why `collate` pads instead of packing: it is the simple, exact reference; the field notes warn that padding
a whole zoo to its longest model wastes most of the compute, so callers should bucket models by length
(`TokenizedModel.num_tokens`) before collating.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.nn.utils.rnn import pad_sequence

from zooprobe.tokens.tokenizer import TokenizedModel, TokenizerError


class TokenSequence(Protocol):
    """Anything with per-token tokens [N, T], mask [N, T] and positions [N, 3] (models and windows)."""

    @property
    def tokens(self) -> torch.Tensor: ...

    @property
    def mask(self) -> torch.Tensor: ...

    @property
    def positions(self) -> torch.Tensor: ...


@dataclass(frozen=True)
class TokenWindow:
    """A contiguous slice [start, stop) of a tokenized model's sequence (views, no copy)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    start: int
    stop: int

    @property
    def num_tokens(self) -> int:
        return self.stop - self.start


def iter_windows(tokenized: TokenizedModel, window: int, overlap: int = 0) -> Iterator[TokenWindow]:
    """Yield windows of at most `window` tokens; consecutive windows share `overlap` tokens.

    Windows start every ``window - overlap`` tokens and the last one ends exactly at the end of the
    sequence (it may be shorter); an empty model yields nothing.
    """
    if window < 1:
        raise TokenizerError(f"iter_windows: window must be >= 1, got {window}")
    if not 0 <= overlap < window:
        raise TokenizerError(f"iter_windows: overlap must be in [0, window), got {overlap} (window {window})")
    total = tokenized.num_tokens
    step = window - overlap
    start = 0
    while start < total:
        stop = min(start + window, total)
        yield TokenWindow(
            tokenized.tokens[start:stop],
            tokenized.mask[start:stop],
            tokenized.positions[start:stop],
            start,
            stop,
        )
        if stop == total:
            break
        start += step


def collate(items: Sequence[TokenSequence]) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest sequence.

    Returns ``tokens`` [B, L, T] float32, ``mask`` [B, L, T] bool, ``positions`` [B, L, 3] int64 (zeros in
    padding), ``attention_mask`` [B, L] bool (token has at least one real entry) and ``lengths`` [B] int64.
    """
    if not items:
        raise TokenizerError("collate: empty batch")
    size = int(items[0].tokens.shape[-1])
    for i, item in enumerate(items):
        if item.tokens.ndim != 2 or item.tokens.shape[-1] != size:
            raise TokenizerError(
                f"collate: item {i} has tokens of shape {tuple(item.tokens.shape)}, expected [N, {size}]"
            )
    lengths = torch.tensor([int(item.tokens.shape[0]) for item in items], dtype=torch.int64)
    tokens = pad_sequence([item.tokens for item in items], batch_first=True)
    mask = pad_sequence([item.mask for item in items], batch_first=True)
    positions = pad_sequence([item.positions for item in items], batch_first=True)
    return {
        "tokens": tokens,
        "mask": mask,
        "positions": positions,
        "attention_mask": mask.any(dim=-1),
        "lengths": lengths,
    }
