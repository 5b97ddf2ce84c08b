"""Weight tokenization: state dicts <-> SANE-style token sequences, with zoo-level normalization.

See `zooprobe.tokens.tokenizer` for the rules and why the representation is exactly invertible.
"""

from zooprobe.tokens.batching import TokenSequence, TokenWindow, collate, iter_windows
from zooprobe.tokens.normalization import NormalizationStats, RunningMoments
from zooprobe.tokens.summary import (
    SUMMARY_DIM,
    LayerSummarizer,
    collate_summaries,
    raw_layer_summaries,
)
from zooprobe.tokens.tokenizer import (
    MODULE_KINDS,
    TokenizedModel,
    TokenizerConfig,
    TokenizerError,
    WeightTokenizer,
    detokenize,
    module_kinds_from_model,
)

__all__ = [
    "MODULE_KINDS",
    "SUMMARY_DIM",
    "LayerSummarizer",
    "NormalizationStats",
    "RunningMoments",
    "TokenSequence",
    "TokenWindow",
    "TokenizedModel",
    "TokenizerConfig",
    "TokenizerError",
    "WeightTokenizer",
    "collate",
    "collate_summaries",
    "detokenize",
    "iter_windows",
    "module_kinds_from_model",
    "raw_layer_summaries",
]
