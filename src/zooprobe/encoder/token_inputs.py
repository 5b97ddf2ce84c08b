"""The token encoder's inputs: the `Preprocessing` saved with it, and state dicts tokenized exactly as
pretraining does (steps 1-3 of the `zooprobe.encoder.encoder_loader` docs); shared by `LoadedEncoder` and the
token pretraining objective (`zooprobe.training.objectives.tokens`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from zooprobe.core.config import check_field_types, config
from zooprobe.encoder.config import EncoderConfig, EncoderConfigError
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.tokens import (
    LayerSummarizer,
    TokenizedModel,
    TokenWindow,
    WeightTokenizer,
)


@config(EncoderConfigError, require_all=True)
@dataclass(frozen=True)
class Preprocessing:
    """How state dicts become encoder inputs; saved with the encoder and reused exactly by `encode`.

    Attributes:
        window: tokens per window (pretraining crops windows of this length; encoding cuts sequences into
            non-overlapping windows of it).
        normalize: tokens are standardized with the zoo-level statistics of the tokenizer (always True for
            pretrained encoders).
        in_layer_positions: ``"wrap"``: in-layer indices wrap modulo ``EncoderConfig.max_in_layer_pos``.
        global_positions: ``"window"``: the global index counts from the start of each window (and of
            each pretraining crop), so it never exceeds the window length.
    """

    window: int = 256
    normalize: bool = True
    in_layer_positions: Literal["wrap"] = "wrap"
    global_positions: Literal["window"] = "window"

    def __post_init__(self) -> None:
        check_field_types(self, EncoderConfigError)
        if self.window < 1:
            raise EncoderConfigError(f"Preprocessing.window: must be >= 1, got {self.window}")


# ------------------------------------------------------------------------------------------ preprocessing
TOKEN_CLIP = 1e4
"""Normalized token values are clipped to ``[-TOKEN_CLIP, TOKEN_CLIP]`` (zoo models stay within about
±20): a finite but extreme weight (1e20) would otherwise overflow the encoder's float32 arithmetic into
NaN. Such a network is far outside any zoo and its head's applicability domain says so."""


def prepare_tokens(
    tokenizer: WeightTokenizer,
    state_dict: Mapping[str, torch.Tensor],
    config: EncoderConfig,
    preprocessing: Preprocessing | None = None,
    summarizer: LayerSummarizer | None = None,
) -> TokenizedModel:
    """Tokenize one state dict exactly as pretraining does (see the module docs, steps 1-2).

    For an encoder with ``summary_tokens`` the layer summaries (standardized by `summarizer`, computed
    from the raw weights) are attached as `TokenizedModel.summaries`.
    """
    return prepare_tokens_many(tokenizer, [state_dict], config, preprocessing, summarizer)[0]


def prepare_tokens_many(
    tokenizer: WeightTokenizer,
    state_dicts: Sequence[Mapping[str, torch.Tensor]],
    config: EncoderConfig,
    preprocessing: Preprocessing | None = None,
    summarizer: LayerSummarizer | None = None,
) -> list[TokenizedModel]:
    """`prepare_tokens` of many state dicts, equal to it model by model: models of one architecture are
    tokenized, summarized and position-wrapped together (`WeightTokenizer.tokenize_many`), which is what
    makes encoding a zoo fast."""
    if config.summary_tokens and summarizer is None:
        raise ConfigError("prepare_tokens: the encoder reads summary tokens but no LayerSummarizer was given")
    pre = preprocessing or Preprocessing()
    tokenized = tokenizer.tokenize_many(state_dicts, normalize=pre.normalize)
    groups: dict[int, list[int]] = {}  # models sharing a plan share their mask (`tokenize_many`)
    for i, tm in enumerate(tokenized):
        groups.setdefault(id(tm.mask), []).append(i)
    out: list[TokenizedModel | None] = [None] * len(tokenized)
    for rows in groups.values():
        tm = tokenized[rows[0]]
        if tm.num_layers > config.max_layers:
            raise InvalidInputError(
                f"the network has {tm.num_layers} tokenized layers but this encoder's "
                f"EncoderConfig.max_layers is {config.max_layers}; use an encoder pretrained with a larger "
                "max_layers"
            )
        positions = tm.positions.clone()
        positions[:, 2] %= config.max_in_layer_pos
        summaries: torch.Tensor | list[None] = [None] * len(rows)
        if config.summary_tokens and summarizer is not None:
            summaries = summarizer.summarize_many([state_dicts[i] for i in rows], tm.layout)
        for j, i in enumerate(rows):
            tokens = tokenized[i].tokens
            if tokens.numel():
                low, high = torch.aminmax(tokens)
                if float(low) < -TOKEN_CLIP or float(high) > TOKEN_CLIP:  # extreme but finite weights (1e20)
                    tokens = tokens.clamp(-TOKEN_CLIP, TOKEN_CLIP)
            t = tokenized[i]
            summary = summaries[j]
            out[i] = TokenizedModel(tokens, t.mask, positions, t.layout, t.passthrough, t.skipped, summary)
    return out  # type: ignore[return-value]


def model_window(window: TokenWindow) -> TokenWindow:
    """`window` with its global position index counted from the window's start (step 3 of the module docs)."""
    positions = window.positions.clone()
    positions[:, 0] -= window.start
    return TokenWindow(window.tokens, window.mask, positions, window.start, window.stop)


def check_summarizer(
    config: EncoderConfig, summarizer: LayerSummarizer | None, error: type[Exception], where: str
) -> None:
    if config.summary_tokens and (summarizer is None or not summarizer.fitted):
        raise error(f"{where}: the encoder reads summary tokens but has no fitted LayerSummarizer")
    if not config.summary_tokens and summarizer is not None:
        raise error(f"{where}: a LayerSummarizer was given but the encoder does not read summary tokens")


def check_token_sizes(encoder_config: EncoderConfig, tokenizer: WeightTokenizer) -> None:
    if encoder_config.token_size != tokenizer.config.token_size:
        raise EncoderConfigError(
            f"EncoderConfig.token_size ({encoder_config.token_size}) does not match the tokenizer's "
            f"TokenizerConfig.token_size ({tokenizer.config.token_size})"
        )
