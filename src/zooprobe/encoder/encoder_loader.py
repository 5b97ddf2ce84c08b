"""Saving and loading pretrained weight-space encoders: a Hugging Face model-repo folder.

Folder layout (what `save_encoder` writes and `load_encoder` reads)::

    config.json        format_version, library_name "zooprobe", the EncoderConfig, the tokenizer (config and
                       zoo-level normalization statistics), the summary-token standardization
                       (``summaries``: `LayerSummarizer`, null for encoders without summary tokens), the
                       preprocessing (window, position policy) and the pretraining provenance (zoo
                       source, zoo fingerprint, the exact model ids used)
    model.safetensors  the encoder's weights (safetensors only: nothing is ever unpickled)
    README.md          model card (YAML header with library_name: zooprobe)

Why the preprocessing is stored and checked strictly: the field notes warn that encoding with a token size or
normalization that differs from pretraining silently degrades results. `LoadedEncoder.encode` therefore
tokenizes exactly as pretraining did (`prepare_tokens`), from what config.json says, and a config.json
with a missing, unknown or mistyped field is an error naming it, never a silent default.

The exact preprocessing, shared with `zooprobe.training.pretrain`:

1. ``tokenizer.tokenize(state_dict, normalize=True)`` with the zoo-level statistics of config.json (values
   beyond ``±TOKEN_CLIP`` standard deviations clipped, so extreme but finite weights stay finite); for
   an encoder with summary tokens, the per-layer summaries of the raw weights standardized by the saved
   `LayerSummarizer` (`TokenizedModel.summaries`; every window reads all of them);
2. the in-layer position index wraps modulo ``EncoderConfig.max_in_layer_pos`` (like the global index
   does inside the model), so one huge layer (a ResNet's 512x512x3x3 convolution is 73,728 tokens at token
   size 32) stays encodable; a network with more layers than ``max_layers`` is an error;
3. sequences are cut into non-overlapping windows of ``preprocessing.window`` tokens (pretraining crops
   random windows of the same length), and the global position index of each window counts from the
   window's start (the layer and in-layer indices keep saying where in the network it is); the model
   embedding is the mean of the window embeddings weighted by their real-token counts (a model that fits
   one window gets exactly its plain forward's pooled output).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from zooprobe.core.config import check_record
from zooprobe.core.device import resolve_device
from zooprobe.encoder.base import (
    CARD_FILE,
    CONFIG_FILE,
    ENCODER_OUTPUT,
    LIBRARY_NAME,
    WEIGHTS_FILE,
    Embeddings,
    EncoderFormatError,
    EncoderRuntime,
    EncoderWeightsError,
    UnfinishedEncoderWarning,
    WeightSpaceEncoder,
    check_embed_args,
    encode_chunks,
    load_weights,
    read_encoder_config,
    warn_if_unfinished,
    write_encoder_folder,
)
from zooprobe.encoder.config import EncoderConfig
from zooprobe.encoder.model import EncoderSequence, WeightEncoder
from zooprobe.encoder.registry import register_encoder
from zooprobe.encoder.token_card import model_card
from zooprobe.encoder.token_inputs import (
    TOKEN_CLIP,
    Preprocessing,
    check_summarizer,
    check_token_sizes,
    model_window,
    prepare_tokens,
    prepare_tokens_many,
)
from zooprobe.encoder.token_windows import (
    _assemble_prefix,
    _batches,
    _model_windows,
    _pool_windows,
    _PrefixState,
    _token_outputs,
)
from zooprobe.errors import ConfigError, InvalidInputError, ZooprobeError
from zooprobe.tokens import (
    LayerSummarizer,
    TokenizedModel,
    TokenWindow,
    WeightTokenizer,
    collate,
)

FORMAT_VERSION = 2  # 2: summary tokens (EncoderConfig.summary_tokens) and the "summaries" field
REQUIRED_FIELDS = (
    "format_version",
    "library_name",
    "encoder",
    "tokenizer",
    "summaries",
    "preprocessing",
    "provenance",
)


@register_encoder("tokens")
@dataclass
class LoadedEncoder(WeightSpaceEncoder):
    """A pretrained encoder (eval mode) with the exact preprocessing it was pretrained with.

    Attributes:
        encoder: the `WeightEncoder`, in eval mode.
        tokenizer: tokenizer with the zoo-level normalization statistics of pretraining.
        preprocessing: window length and position policy (see the module docs).
        provenance: what it was pretrained on (zoo source and fingerprint, ``model_ids``, config, ...).
        source: the folder it was loaded from (None when built in memory).
        summarizer: zoo-level standardization of the per-layer summary tokens (required exactly when
            ``EncoderConfig.summary_tokens``).
    """

    architecture: ClassVar[str] = "tokens"
    format_version: ClassVar[int] = FORMAT_VERSION
    config_class: ClassVar[type] = EncoderConfig
    token_outputs: ClassVar[bool] = True

    encoder: WeightEncoder
    tokenizer: WeightTokenizer
    preprocessing: Preprocessing
    provenance: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    summarizer: LayerSummarizer | None = None

    def __post_init__(self) -> None:
        check_token_sizes(self.encoder.config, self.tokenizer)
        check_summarizer(self.encoder.config, self.summarizer, ConfigError, "LoadedEncoder")
        if self.preprocessing.normalize and self.tokenizer.stats is None:
            raise ConfigError("LoadedEncoder: the tokenizer has no normalization statistics")
        self.encoder.eval()

    @property
    def config(self) -> EncoderConfig:
        return self.encoder.config

    @property
    def latent_dim(self) -> int:
        return self.encoder.config.latent_dim

    def _fingerprint_meta(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "summaries": None if self.summarizer is None else self.summarizer.to_dict(),
        }

    def save_pretrained(self, folder: str | Path) -> Path:
        """`save_encoder` of this encoder, its tokenizer, preprocessing, summarizer and provenance."""
        return save_encoder(
            self.encoder,
            self.tokenizer,
            self.provenance,
            folder,
            preprocessing=self.preprocessing,
            summarizer=self.summarizer,
        )

    @classmethod
    def from_folder(cls, folder: Path, data: dict[str, Any], device: str = "cpu") -> LoadedEncoder:
        del data  # the v2 reader reads and checks config.json itself
        return load_token_encoder_folder(folder, device, stacklevel=4)

    @staticmethod
    def model_card(config: Mapping[str, Any]) -> str:
        return model_card(config)

    def tokenize(self, state_dict: Mapping[str, torch.Tensor]) -> TokenizedModel:
        """The encoder's input for one state dict (normalized, positions wrapped; not yet windowed)."""
        return prepare_tokens(
            self.tokenizer, state_dict, self.encoder.config, self.preprocessing, self.summarizer
        )

    def tokenize_many(
        self, state_dicts: Sequence[Any], indices: Sequence[int] | int = 0
    ) -> list[TokenizedModel]:
        """The encoder's inputs for many state dicts, equal to `tokenize_checked` of each: models of one
        architecture are tokenized together (`prepare_tokens_many`). An invalid item is reported by
        `tokenize_checked`, naming its index."""
        if len(state_dicts) < 2 or not all(isinstance(sd, Mapping) for sd in state_dicts):
            return super().tokenize_many(state_dicts, indices)
        try:
            tms = prepare_tokens_many(
                self.tokenizer, state_dicts, self.encoder.config, self.preprocessing, self.summarizer
            )
        except InvalidInputError:
            return super().tokenize_many(state_dicts, indices)
        if any(tm.num_tokens == 0 for tm in tms):
            return super().tokenize_many(state_dicts, indices)
        return tms

    def embed(
        self,
        tokenized: Sequence[TokenizedModel],
        batch_size: int = 64,
        token_outputs: bool = False,
        stats: dict[str, float] | None = None,
        frozen_blocks: int = 0,
    ) -> Embeddings:
        """Embed already-tokenized models (from `tokenize`); differentiable, in the encoder's current mode.

        This is the one forward path: `encode` calls it without gradients, and fine-tuning calls it with
        gradients (and the encoder in train mode). Each model is cut into windows (module docs, step 3),
        windows are sorted by length and run `batch_size` at a time, and a model's pooled embedding is the
        mean of its window embeddings weighted by their real-token counts. With ``token_outputs`` the
        per-token latents of every model are returned too (windows do not overlap, so each real token has
        exactly one latent). `stats` (if a dict) accumulates ``n_windows, n_padded_tokens, flops``.

        ``frozen_blocks=k``: the input embeddings and the first k blocks do not train (fine-tuning with
        ``unfreeze_top_layers``), so their output is computed once per model, kept on the `TokenizedModel`
        (``prefix_states``) and reused by later calls while those weights are unchanged; only the top blocks
        run again. Results equal the full forward up to float rounding. Not used when those parameters
        require gradients or dropout is active in training mode (the output would not be fixed).
        """
        check_embed_args(self, batch_size, token_outputs)
        device = self.device
        windows, ordinal = _model_windows(tokenized, self.preprocessing.window)
        if not windows:
            return Embeddings(torch.empty(0, self.latent_dim, device=device), None)

        def window_key(k: int) -> tuple[int, int]:  # sequence length: tokens, then summary tokens
            return windows[k][1].num_tokens, tokenized[windows[k][0]].num_layers

        order = sorted(range(len(windows)), key=window_key)
        keys = [window_key(k) for k in order]
        frozen = self._cacheable_prefix(frozen_blocks)
        if frozen:
            self._fill_prefix(tokenized, windows, ordinal, order, keys, frozen, batch_size)
        pooled_parts: list[torch.Tensor] = []
        count_parts: list[torch.Tensor] = []
        token_parts: dict[int, torch.Tensor] = {}
        for idx in _batches(order, keys, batch_size):
            seq = self._batch_sequence(tokenized, windows, ordinal, idx, frozen)
            out = self.encoder.finish(self.encoder.run_blocks(seq, frozen), token_latents=token_outputs)
            attention = seq.attention_mask
            pooled_parts.append(out.pooled.float())
            count_parts.append(attention.sum(dim=1).float())
            if token_outputs:
                assert out.latent_tokens is not None
                for row, k in enumerate(idx):
                    token_parts[k] = out.latent_tokens[row, : windows[k][1].num_tokens].float()
            if stats is not None:
                self._count(stats, seq, token_outputs)
        n_models = len(tokenized)
        embedded = _pool_windows(windows, order, pooled_parts, count_parts, n_models, device)
        tokens_out = _token_outputs(windows, token_parts, n_models) if token_outputs else None
        return Embeddings(embedded, tokens_out)

    def _batch_sequence(
        self,
        tokenized: Sequence[TokenizedModel],
        windows: list[tuple[int, TokenWindow]],
        ordinal: list[int],
        idx: list[int],
        frozen: int,
    ) -> EncoderSequence:
        """The sequence of the windows `idx` the blocks after `frozen` read: from the kept prefix outputs,
        or embedded from the tokens (`frozen` 0)."""
        if frozen:
            kept = [tokenized[windows[k][0]].prefix_states[1][ordinal[k]] for k in idx]
            return _assemble_prefix(kept, self.device, self.config.summary_tokens)
        return self._sequence(tokenized, windows, idx)

    def _count(self, stats: dict[str, float], seq: EncoderSequence, token_outputs: bool) -> None:
        """Add one batch's windows, padded tokens and forward FLOPs to `stats` (see `embed`)."""
        b, length = seq.attention_mask.shape
        stats["n_windows"] = stats.get("n_windows", 0) + b
        stats["n_padded_tokens"] = stats.get("n_padded_tokens", 0) + b * length
        stats["flops"] = stats.get("flops", 0.0) + self.encoder.flops_per_forward(
            length, b, seq.n_summary, token_latents=token_outputs
        )

    def _sequence(
        self, tokenized: Sequence[TokenizedModel], windows: list[tuple[int, TokenWindow]], idx: list[int]
    ) -> EncoderSequence:
        """The embedded input sequence of the windows `idx` (collated and padded)."""
        device = self.device
        batch = collate([windows[k][1] for k in idx])
        extra = self.encoder.summary_inputs([tokenized[windows[k][0]] for k in idx], len(idx), device)
        return self.encoder.embed_sequence(
            batch["tokens"].to(device),
            batch["mask"].to(device),
            batch["positions"].to(device),
            batch["attention_mask"].to(device),
            extra,
        )

    def _cacheable_prefix(self, frozen_blocks: int) -> int:
        """`frozen_blocks` when its output can be kept (see `embed`), else 0."""
        if frozen_blocks <= 0:
            return 0
        if self.encoder.training and self.config.dropout > 0:
            return 0
        if any(p.requires_grad for p in self.encoder.prefix_parameters(frozen_blocks)):
            return 0
        return min(frozen_blocks, len(self.encoder.blocks))

    def _prefix_key(self, frozen: int) -> tuple[Any, ...]:
        """Identifies the weights a kept prefix output was computed with (in-place updates bump versions)."""
        params = self.encoder.prefix_parameters(frozen)
        return (id(self.encoder), frozen, tuple((p.data_ptr(), p._version) for p in params))

    def _fill_prefix(
        self,
        tokenized: Sequence[TokenizedModel],
        windows: list[tuple[int, TokenWindow]],
        ordinal: list[int],
        order: list[int],
        keys: list[Any],
        frozen: int,
        batch_size: int,
    ) -> None:
        """Compute and keep the prefix output of every window of the models that lack a current one."""
        key = self._prefix_key(frozen)
        missing = {
            j for j, tm in enumerate(tokenized) if tm.prefix_states is None or tm.prefix_states[0] != key
        }
        if not missing:
            return
        states: dict[int, list[Any]] = {j: [] for j in missing}
        todo = [(k, key_) for k, key_ in zip(order, keys, strict=True) if windows[k][0] in missing]
        with torch.no_grad():
            for idx in _batches([k for k, _ in todo], [key_ for _, key_ in todo], batch_size):
                seq = self.encoder.run_blocks(self._sequence(tokenized, windows, idx), 0, frozen)
                n_cls, n_sum = seq.n_cls, seq.n_summary
                for row, k in enumerate(idx):
                    j, length = windows[k][0], windows[k][1].num_tokens
                    s_i = tokenized[j].num_layers if seq.summary_attention is not None else 0
                    x = seq.x[row]
                    part = torch.cat(
                        [x[:n_cls], x[n_cls : n_cls + s_i], x[n_cls + n_sum : n_cls + n_sum + length]]
                    )
                    states[j].append(
                        (ordinal[k], _PrefixState(part, n_cls, s_i, seq.attention_mask[row, :length]))
                    )
        for j, items in states.items():
            tokenized[j].prefix_states = (key, [state for _, state in sorted(items, key=lambda t: t[0])])


def save_encoder(
    encoder: WeightEncoder,
    tokenizer: WeightTokenizer,
    provenance: Mapping[str, Any],
    folder: str | Path,
    *,
    preprocessing: Preprocessing | None = None,
    summarizer: LayerSummarizer | None = None,
) -> Path:
    """Write `encoder` + `tokenizer` (+ provenance) as a Hugging Face model-repo folder; returns it.

    Every file is written atomically (temporary file, then rename); weights first, config.json and the
    model card after, so a folder whose config.json exists always has weights. `folder` must be new, empty
    or an encoder folder zooprobe wrote (`zooprobe.core.outputs`): a folder of the user's own is refused.
    """

    pre = preprocessing or Preprocessing()
    check_token_sizes(encoder.config, tokenizer)
    check_summarizer(encoder.config, summarizer, ConfigError, "save_encoder")
    if pre.normalize and tokenizer.stats is None:
        raise ConfigError("save_encoder: the tokenizer has no normalization statistics (fit them first)")
    fields = {
        "encoder": encoder.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "summaries": None if summarizer is None else summarizer.to_dict(),
        "preprocessing": pre.to_dict(),
    }
    return write_encoder_folder(folder, encoder, FORMAT_VERSION, fields, provenance, model_card)


# ------------------------------------------------------------------------------------------ loading
def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    data = read_encoder_config(folder)
    check_record(data, str(path), EncoderFormatError, fields=REQUIRED_FIELDS, version=FORMAT_VERSION)
    if data["library_name"] != LIBRARY_NAME:
        raise EncoderFormatError(
            f"{path}: library_name is {data['library_name']!r}, not {LIBRARY_NAME!r}: not a zooprobe encoder"
        )
    if not isinstance(data["provenance"], dict):
        raise EncoderFormatError(f"{path}: provenance must be an object, got {data['provenance']!r}")
    return data


def _parse_config(
    folder: Path, data: dict[str, Any]
) -> tuple[EncoderConfig, WeightTokenizer, Preprocessing, LayerSummarizer | None]:
    """The parts of config.json, each validated strictly by its own ``from_dict`` (normalization statistics:
    finite, means and stds in a sane range); an error names the file, then the entry and the field."""
    path = folder / CONFIG_FILE
    try:
        config = EncoderConfig.from_dict(data["encoder"])
        tokenizer = WeightTokenizer.from_dict(data["tokenizer"])
        preprocessing = Preprocessing.from_dict(data["preprocessing"])
        summarizer = None if data["summaries"] is None else LayerSummarizer.from_dict(data["summaries"])
    except ZooprobeError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from e
    return config, tokenizer, preprocessing, summarizer


def load_token_encoder_folder(folder: str | Path, device: str = "cpu", stacklevel: int = 2) -> LoadedEncoder:
    """Load a v2 (token) encoder from a local folder written by `save_encoder` (strict; see `load_encoder`;
    `zooprobe.encoder.folders.load_encoder_folder` reads any format version)."""
    folder = Path(folder)
    data = _read_config(folder)
    config, tokenizer, preprocessing, summarizer = _parse_config(folder, data)
    check_token_sizes(config, tokenizer)
    check_summarizer(config, summarizer, EncoderFormatError, str(folder / CONFIG_FILE))
    if preprocessing.normalize and tokenizer.stats is None:
        raise EncoderFormatError(
            f"{folder / CONFIG_FILE}: tokenizer.normalization is null but preprocessing.normalize is true"
        )
    encoder = WeightEncoder(config)
    load_weights(folder, encoder)
    encoder.to(resolve_device(device)).eval()
    loaded = LoadedEncoder(encoder, tokenizer, preprocessing, dict(data["provenance"]), folder, summarizer)
    warn_if_unfinished(loaded, stacklevel)
    return loaded


__all__ = [  # re-exported: token_inputs (preprocessing) and the shared names of `zooprobe.encoder.base`
    "CARD_FILE",
    "CONFIG_FILE",
    "ENCODER_OUTPUT",
    "FORMAT_VERSION",
    "LIBRARY_NAME",
    "TOKEN_CLIP",
    "WEIGHTS_FILE",
    "Embeddings",
    "EncoderFormatError",
    "EncoderRuntime",
    "EncoderWeightsError",
    "LoadedEncoder",
    "Preprocessing",
    "UnfinishedEncoderWarning",
    "encode_chunks",
    "load_token_encoder_folder",
    "load_weights",
    "model_card",
    "model_window",
    "prepare_tokens",
    "prepare_tokens_many",
    "save_encoder",
    "write_encoder_folder",
]
