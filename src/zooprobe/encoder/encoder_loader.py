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

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from zooprobe.core.config import check_field_types, check_record, config
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
    encode_chunks,
    load_weights,
    read_encoder_config,
    warn_if_unfinished,
    write_encoder_folder,
)
from zooprobe.encoder.config import EncoderConfig, EncoderConfigError
from zooprobe.encoder.model import EncoderSequence, WeightEncoder
from zooprobe.encoder.registry import register_encoder
from zooprobe.errors import ConfigError, InvalidInputError, ZooprobeError
from zooprobe.hub import is_repo_id, render_card
from zooprobe.tokens import (
    LayerSummarizer,
    TokenizedModel,
    TokenWindow,
    WeightTokenizer,
    collate,
    iter_windows,
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


def _check_summarizer(
    config: EncoderConfig, summarizer: LayerSummarizer | None, error: type[Exception], where: str
) -> None:
    if config.summary_tokens and (summarizer is None or not summarizer.fitted):
        raise error(f"{where}: the encoder reads summary tokens but has no fitted LayerSummarizer")
    if not config.summary_tokens and summarizer is not None:
        raise error(f"{where}: a LayerSummarizer was given but the encoder does not read summary tokens")


def _check_token_sizes(encoder_config: EncoderConfig, tokenizer: WeightTokenizer) -> None:
    if encoder_config.token_size != tokenizer.config.token_size:
        raise EncoderConfigError(
            f"EncoderConfig.token_size ({encoder_config.token_size}) does not match the tokenizer's "
            f"TokenizerConfig.token_size ({tokenizer.config.token_size})"
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
        _check_token_sizes(self.encoder.config, self.tokenizer)
        _check_summarizer(self.encoder.config, self.summarizer, ConfigError, "LoadedEncoder")
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
        if batch_size < 1:
            raise ConfigError(f"embed: batch_size must be >= 1, got {batch_size}")
        device = self.device
        windows: list[tuple[int, TokenWindow]] = []
        ordinal: list[int] = []  # each window's index within its model
        for j, tm in enumerate(tokenized):
            for w_index, w in enumerate(iter_windows(tm, self.preprocessing.window)):
                windows.append((j, model_window(w)))
                ordinal.append(w_index)
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
            if frozen:
                kept = [tokenized[windows[k][0]].prefix_states[1][ordinal[k]] for k in idx]
                seq = _assemble_prefix(kept, device, self.config.summary_tokens)
            else:
                seq = self._sequence(tokenized, windows, idx)
            out = self.encoder.finish(self.encoder.run_blocks(seq, frozen), token_latents=token_outputs)
            attention = seq.attention_mask
            pooled_parts.append(out.pooled.float())
            count_parts.append(attention.sum(dim=1).float())
            if token_outputs:
                assert out.latent_tokens is not None
                for row, k in enumerate(idx):
                    token_parts[k] = out.latent_tokens[row, : windows[k][1].num_tokens].float()
            if stats is not None:
                b, length = attention.shape
                stats["n_windows"] = stats.get("n_windows", 0) + b
                stats["n_padded_tokens"] = stats.get("n_padded_tokens", 0) + b * length
                stats["flops"] = stats.get("flops", 0.0) + self.encoder.flops_per_forward(
                    length, b, seq.n_summary, token_latents=token_outputs
                )
        position = torch.empty(len(windows), dtype=torch.long)
        position[torch.tensor(order)] = torch.arange(len(windows))
        pooled = torch.cat(pooled_parts)[position.to(device)]  # back to window order
        counts = torch.cat(count_parts)[position.to(device)]
        owner = torch.tensor([j for j, _ in windows], device=device)
        n_models = len(tokenized)
        totals = torch.zeros(n_models, device=device).index_add_(0, owner, counts)
        weights = counts / totals[owner]
        embedded = torch.zeros(n_models, self.latent_dim, device=device, dtype=pooled.dtype)
        embedded = embedded.index_add(0, owner, pooled * weights[:, None])
        tokens_out = None
        if token_outputs:
            tokens_out = [
                torch.cat([token_parts[k] for k in range(len(windows)) if windows[k][0] == j])
                for j in range(n_models)
            ]
        return Embeddings(embedded, tokens_out)

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
            **extra,
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


@dataclass
class _PrefixState:
    """One window's sequence after the frozen blocks, without padding: ``[cls] + its summary tokens + its
    weight tokens`` (`LoadedEncoder.embed` with ``frozen_blocks``)."""

    x: torch.Tensor  # [n_cls + n_summary + length, d_model]
    n_cls: int
    n_summary: int  # 0 without summary tokens
    attention: torch.Tensor  # [length] bool


def _assemble_prefix(
    items: list[_PrefixState], device: torch.device, summary_tokens: bool
) -> EncoderSequence:
    """Pad kept prefix outputs into one `EncoderSequence` (the layout of `WeightEncoder.embed_sequence`)."""
    n_cls = items[0].n_cls
    n_sum = max(it.n_summary for it in items)
    length = max(int(it.attention.shape[0]) for it in items)
    d = int(items[0].x.shape[-1])
    b = len(items)
    x = items[0].x.new_zeros(b, n_cls + n_sum + length, d)
    attention = torch.zeros(b, length, dtype=torch.bool, device=device)
    summary_attention = torch.zeros(b, n_sum, dtype=torch.bool, device=device)
    for row, it in enumerate(items):
        n = int(it.attention.shape[0])
        x[row, : n_cls + it.n_summary] = it.x[: n_cls + it.n_summary]
        x[row, n_cls + n_sum : n_cls + n_sum + n] = it.x[n_cls + it.n_summary :]
        attention[row, :n] = it.attention
        summary_attention[row, : it.n_summary] = True
    keys = torch.cat([attention.new_ones(b, n_cls), summary_attention, attention], dim=1)
    return EncoderSequence(x, keys, attention, summary_attention if summary_tokens else None)


def _batches(order: list[int], keys: list[Any], batch_size: int) -> Iterator[list[int]]:
    """`order` (windows sorted by `keys`, their lengths) cut into batches of at most `batch_size`; a batch
    also ends where the length changes once it is half full, so most batches hold equal sequences: no
    padding, and no key mask (SDPA without a mask is 1.4x faster on CPU)."""
    start = 0
    for i in range(1, len(order) + 1):
        size = i - start
        if i == len(order) or size == batch_size or (keys[i] != keys[i - 1] and 2 * size >= batch_size):
            yield order[start:i]
            start = i


# ------------------------------------------------------------------------------------------ saving
def model_card(config: Mapping[str, Any]) -> str:
    """The README.md model card of an encoder folder, generated from its config.json content."""
    enc = config["encoder"]
    prov = config.get("provenance") or {}
    pre = config["preprocessing"]
    tok = config["tokenizer"]["config"]
    zoo_source = str(prov.get("zoo_source", ""))
    pcfg = prov.get("pretrain_config") or {}
    header: dict[str, Any] = {
        "library_name": "zooprobe",
        "license": "mit",
        "pipeline_tag": "feature-extraction",
        "tags": ["zooprobe", "weight-space-learning", "model-zoo", "hyper-representations"],
    }
    if zoo_source and is_repo_id(zoo_source):
        header["datasets"] = [zoo_source]
    n_params = prov.get("encoder_parameters")
    lines = [
        "# zooprobe weight-space encoder",
        "",
        "A transformer that reads the **weights** of a trained neural network and returns a fixed-size "
        f"embedding ({enc['latent_dim']} values) describing it. Prediction heads (accuracy, training "
        "hyperparameters, architecture flags) are trained on these embeddings. It was pretrained "
        "self-supervised (SANE-style masked reconstruction of weight tokens plus a contrastive loss between "
        "two augmented views of the same network), with no property labels.",
        "",
        f"- architecture: {enc['n_layers']} pre-norm transformer block(s), width {enc['d_model']}, "
        f"{enc['n_heads']} heads, MLP {enc['d_ff']}, pooling `{enc['pooling']}`"
        + (f", {n_params:,} parameters" if isinstance(n_params, int) else ""),
        f"- input: weight tokens of {tok['token_size']} values (one row of a layer per token chunk), with "
        "learned (global, layer, in-layer) position embeddings",
        f"- sequences longer than {pre['window']} tokens are encoded in windows of {pre['window']} tokens "
        "whose embeddings are averaged, weighted by their token counts",
        "",
        "## How to load",
        "",
        "```python",
        "import zooprobe",
        "",
        'enc = zooprobe.load_encoder("path/to/this/folder")   # or the Hub repo id it was uploaded to',
        f"embeddings = enc.encode([model.state_dict() for model in models])   # [N, {enc['latent_dim']}]",
        "```",
        "",
        "`encode` applies the exact pretraining preprocessing stored in `config.json` (token size, zoo-level "
        "normalization statistics, window length); weights load strictly from `model.safetensors`.",
        "",
        "## Training data",
        "",
    ]
    if prov:
        n_ids = len(prov.get("model_ids", []))
        lines += [
            f"- zoo: `{zoo_source}` (fingerprint `{str(prov.get('zoo_fingerprint', ''))[:16]}`)",
            f"- {n_ids} models: the final checkpoints of the zoo's `train` split; their ids are listed in "
            "`config.json` (`provenance.model_ids`). Evaluate heads on models outside that list.",
            f"- checkpoint selection: {prov.get('selection', 'lowest validation loss')} "
            f"({len(prov.get('validation_model_ids', []))} validation models, never trained on)",
        ]
        if prov.get("best_epoch") is not None:
            lines.append(
                f"- selected epoch {prov['best_epoch']} of {prov.get('epochs_trained')}, "
                f"loss {prov.get('best_loss', float('nan')):.4f}"
            )
    else:
        lines.append("- no pretraining provenance was recorded for this encoder.")
    if pcfg:
        lines += [
            "",
            "## Training procedure",
            "",
            f"- loss: (1 - {pcfg.get('gamma')}) x masked reconstruction MSE (mask ratio "
            f"{pcfg.get('mask_ratio')}) + {pcfg.get('gamma')} x NT-Xent (temperature "
            f"{pcfg.get('temperature')}) on pooled embeddings of two views",
            f"- views: function-preserving neuron permutations ({'on' if pcfg.get('permute') else 'off'}), "
            "multiplicative noise "
            f"(sigma {pcfg.get('noise_sigma')}), token erasing ({pcfg.get('erase_ratio')}), random "
            f"{pre['window']}-token crops",
            f"- optimizer: AdamW, lr {pcfg.get('lr')}, weight decay {pcfg.get('weight_decay')}, "
            f"{pcfg.get('epochs')} epochs, batch size {pcfg.get('batch_size')}, linear warmup "
            f"({pcfg.get('warmup_fraction')}) then cosine decay, gradient clipping {pcfg.get('grad_clip')}",
            f"- preset `{pcfg.get('preset')}`, seed {pcfg.get('seed')}",
        ]
    lines += [
        "",
        "## Limitations",
        "",
        "- The encoder only knows the architectures of its pretraining zoo; embeddings of very different "
        "networks (other layer types, far larger layers) are out of distribution even when they encode "
        "without error.",
        "- Normalization statistics come from the pretraining zoo: a tensor with an unseen name is "
        "standardized with the statistics of its kind (or global ones).",
        "- Long networks are read in independent windows; relations between distant layers are only seen "
        "through the averaged window embeddings.",
        "- Weight statistics are a strong baseline for predicting accuracy from weights (field literature); "
        "compare against them before trusting a head trained on this encoder.",
        "",
        "## License",
        "",
        "MIT.",
        "",
    ]
    return render_card(header, lines)


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
    _check_token_sizes(encoder.config, tokenizer)
    _check_summarizer(encoder.config, summarizer, ConfigError, "save_encoder")
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
    _check_token_sizes(config, tokenizer)
    _check_summarizer(config, summarizer, EncoderFormatError, str(folder / CONFIG_FILE))
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


__all__ = [  # the shared names of `zooprobe.encoder.base` too, where callers imported them before 0.3
    "CARD_FILE",
    "CONFIG_FILE",
    "ENCODER_OUTPUT",
    "FORMAT_VERSION",
    "LIBRARY_NAME",
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
