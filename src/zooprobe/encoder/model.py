"""Transformer weight-space encoder over SANE-style weight tokens.

Architecture (small on purpose: the field notes measure a d=64, 2-layer encoder on 2 CPU cores):

- token embedding: a linear map of ``[token values * mask, mask]`` (2 * token_size inputs), so the model can
  tell a padded zero from a real zero weight;
- three learned position embeddings, summed: global token index, layer index, token index within the layer
  (SANE's 3-D positions);
- pre-norm transformer blocks written by hand around `torch.nn.functional.scaled_dot_product_attention`,
  with the padding mask passed as ``attn_mask`` so padded sequence positions never influence real tokens
  (padding a sequence further leaves real outputs and the pooled vector unchanged);
- an optional learned summary ("cls") token, a final LayerNorm, a per-token latent projection and a pooled
  latent (mean over real tokens and/or the cls state);
- a small reconstruction decoder (`decode`) for masked-reconstruction pretraining.

Position ranges: the *global* index wraps around (``index % max_global_pos``). Long models are encoded in
windows whose raw global indices can exceed any fixed table, and a wrapped index still carries local order
within a window; raising there would make large networks unencodable. The *layer* and *in-layer* indices
are structural, so an out-of-range value raises a `ValueError` naming the config field to enlarge instead
of silently aliasing two layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from zooprobe.encoder.config import EncoderConfig, EncoderConfigError
from zooprobe.tokens import TokenizedModel, collate, collate_summaries, iter_windows


@dataclass
class EncoderOutput:
    """Outputs of `WeightEncoder.forward`; padded positions are zero in the per-token tensors."""

    token_states: torch.Tensor  # [B, L, d_model]
    pooled: torch.Tensor  # [B, latent_dim]
    latent_tokens: torch.Tensor | None  # [B, L, latent_dim] (None when forward(token_latents=False))
    summary_states: torch.Tensor | None = None  # [B, S, d_model] (summary_tokens only)
    summary_latents: torch.Tensor | None = None  # [B, S, latent_dim] (summary_tokens only)


@dataclass
class EncoderSequence:
    """The encoder's token sequence between its stages (`WeightEncoder.embed_sequence`, `run_blocks`,
    `finish`): ``[cls] + summary tokens + weight tokens``, each part padded at its end."""

    x: torch.Tensor  # [B, T, d_model]
    keys: torch.Tensor  # [B, T] bool: real positions (attention keys)
    attention_mask: torch.Tensor  # [B, L] bool: real weight tokens
    summary_attention: torch.Tensor | None  # [B, S] bool: real summary tokens (summary_tokens only)

    @property
    def n_summary(self) -> int:
        return 0 if self.summary_attention is None else int(self.summary_attention.shape[1])

    @property
    def n_cls(self) -> int:
        return int(self.x.shape[1]) - self.n_summary - int(self.attention_mask.shape[1])


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + GELU MLP block; attention masked by a boolean key mask."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """`x` [B, L, D]; `key_mask` [B, 1, 1, L] bool, True where a key may be attended to (None: every
        key, which lets SDPA skip the mask: 1.4x faster attention on CPU)."""
        b, length, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, length, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.norm2(x))))))


class _PositionEmbedding(nn.Module):
    """Sum of the three learned position embeddings, with the range policy of the module docs."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.global_index = nn.Embedding(config.max_global_pos, config.d_model)
        self.layer_index = nn.Embedding(config.max_layers, config.d_model)
        self.in_layer_index = nn.Embedding(config.max_in_layer_pos, config.d_model)
        for table in (self.global_index, self.layer_index, self.in_layer_index):
            nn.init.normal_(table.weight, std=0.02)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        _check_positions(positions, self.config)
        return (
            self.global_index(positions[..., 0] % self.config.max_global_pos)
            + self.layer_index(positions[..., 1])
            + self.in_layer_index(positions[..., 2])
        )


def _check_positions(positions: torch.Tensor, config: EncoderConfig) -> None:
    if positions.numel() == 0:
        return
    low = positions.reshape(-1, 3).amin(dim=0).tolist()
    high = positions.reshape(-1, 3).amax(dim=0).tolist()
    names = ("global index", "layer index", "in-layer index")
    for i, name in enumerate(names):
        if low[i] < 0:
            raise ValueError(f"positions[..., {i}] ({name}) has a negative value {low[i]}")
    if high[1] >= config.max_layers:
        raise ValueError(
            f"positions[..., 1] (layer index) reaches {high[1]} but EncoderConfig.max_layers is "
            f"{config.max_layers}: the network has more layers than the encoder's table; use an encoder "
            "with a larger max_layers"
        )
    if high[2] >= config.max_in_layer_pos:
        raise ValueError(
            f"positions[..., 2] (in-layer index) reaches {high[2]} but EncoderConfig.max_in_layer_pos is "
            f"{config.max_in_layer_pos}: a layer has more tokens than the encoder's table; use an encoder "
            "with a larger max_in_layer_pos (or a larger token size)"
        )


def _key_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] -> [B, 1, 1, L]; a sequence with no real token may attend to position 0.

    Without that, its attention rows would be fully masked and SDPA returns NaN, which would then leak into
    gradients of the shared weights; its outputs are zeroed afterwards anyway.
    """
    mask = attention_mask.clone()
    if mask.shape[1]:
        mask[:, 0] |= ~mask.any(dim=1)
    return mask[:, None, None, :]


class WeightEncoder(nn.Module):
    """Encodes batches of weight tokens into per-token states, per-token latents and a pooled embedding."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else EncoderConfig()
        self.token_embed = nn.Linear(2 * cfg.token_size, cfg.d_model)
        self.positions = _PositionEmbedding(cfg)
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.d_model) * 0.02) if cfg.uses_cls else None
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        self.to_latent = nn.Linear(cfg.d_model, cfg.latent_dim)
        self.summary_embed: nn.Linear | None = None
        self.summary_type: nn.Parameter | None = None
        self.summary_out: nn.Linear | None = None
        if cfg.summary_tokens:
            self.summary_embed = nn.Linear(2 * cfg.summary_dim, cfg.d_model)
            self.summary_type = nn.Parameter(torch.randn(1, 1, cfg.d_model) * 0.02)
            self.summary_out = nn.Linear(cfg.latent_dim, cfg.summary_dim)  # summary reconstruction head
        n_parts = (0 if cfg.pooling == "cls" else 1) + int(cfg.uses_cls) + int(cfg.summary_tokens)
        self.pool_proj = nn.Linear(n_parts * cfg.d_model, cfg.latent_dim)
        # reconstruction decoder: latents (+ its own position embeddings) -> token values
        self.dec_in = nn.Linear(cfg.latent_dim, cfg.d_model)
        self.dec_positions = _PositionEmbedding(cfg)
        self.dec_blocks = nn.ModuleList(
            TransformerBlock(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout)
            for _ in range(cfg.decoder_layers)
        )
        self.dec_norm = nn.LayerNorm(cfg.d_model)
        self.dec_out = nn.Linear(cfg.d_model, cfg.token_size)

    def _check_inputs(
        self, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor
    ) -> None:
        size = self.config.token_size
        if tokens.ndim != 3 or tokens.shape[-1] != size:
            raise ValueError(
                f"tokens must be [B, L, {size}] (EncoderConfig.token_size), got {tuple(tokens.shape)}"
            )
        b, length = tokens.shape[:2]
        if mask.shape != tokens.shape:
            raise ValueError(
                f"mask must have the shape of tokens {tuple(tokens.shape)}, got {tuple(mask.shape)}"
            )
        if positions.shape != (b, length, 3):
            raise ValueError(f"positions must be [{b}, {length}, 3], got {tuple(positions.shape)}")
        if attention_mask.shape != (b, length) or attention_mask.dtype != torch.bool:
            raise ValueError(
                f"attention_mask must be bool [{b}, {length}], got {attention_mask.dtype} "
                f"{tuple(attention_mask.shape)}"
            )
        if length == 0 and not self.config.uses_cls:
            raise ValueError("empty sequences: the batch has no tokens to encode")

    def forward(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        attention_mask: torch.Tensor,
        summaries: torch.Tensor | None = None,
        summary_layers: torch.Tensor | None = None,
        summary_attention: torch.Tensor | None = None,
        summary_keep: torch.Tensor | None = None,
        token_latents: bool = True,
    ) -> EncoderOutput:
        """Encode a padded batch (as produced by `zooprobe.tokens.collate`).

        With ``summary_tokens`` the batch also needs its layer summaries: `summaries` [B, S, summary_dim],
        `summary_layers` [B, S] (layer index of each summary) and `summary_attention` [B, S] bool (real
        summaries). `summary_keep` [B, S] bool (default: all) hides a summary's values from the encoder
        (masked-summary pretraining) while it stays in the sequence. The sequence is ``[cls] + summary
        tokens + weight tokens``; the summary tokens get the layer-index embedding of their layer plus a
        learned type vector. The pooled embedding projects the concatenation of the mean over real weight
        tokens (unless pooling is ``"cls"``), the cls state (``"cls"``/``"mean+cls"``) and the mean over
        real summary tokens (``summary_tokens``). ``token_latents=False`` skips the per-token (and
        per-summary) latents, which pooling does not need (`LoadedEncoder.embed` without token outputs).
        """
        summary = {"summaries": summaries, "summary_layers": summary_layers}
        summary |= {"summary_attention": summary_attention, "summary_keep": summary_keep}
        seq = self.embed_sequence(tokens, mask, positions, attention_mask, summary)
        return self.finish(self.run_blocks(seq), token_latents)

    def embed_sequence(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        attention_mask: torch.Tensor,
        summary: Mapping[str, torch.Tensor | None] | None = None,
    ) -> EncoderSequence:
        """The input sequence ``[cls] + summary tokens + weight tokens`` of `forward`, before the blocks;
        `summary` holds `forward`'s summary inputs by name (``summaries``, ``summary_layers``,
        ``summary_attention``, ``summary_keep``; missing: None)."""
        self._check_inputs(tokens, mask, positions, attention_mask)
        summary = summary or {}
        summaries, summary_layers = summary.get("summaries"), summary.get("summary_layers")
        summary_attention, summary_keep = summary.get("summary_attention"), summary.get("summary_keep")
        cfg = self.config
        b = tokens.shape[0]
        maskf = mask.to(tokens.dtype)
        x = self.token_embed(torch.cat([tokens * maskf, maskf], dim=-1)) + self.positions(positions)
        keys = attention_mask
        if cfg.summary_tokens:
            summaries, summary_layers, summary_attention = self._check_summaries(
                b, summaries, summary_layers, summary_attention
            )
            keep = summary_attention if summary_keep is None else summary_keep & summary_attention
            keepf = keep.unsqueeze(-1).to(summaries.dtype)
            assert self.summary_embed is not None and self.summary_type is not None
            s = self.summary_embed(torch.cat([summaries * keepf, keepf.expand_as(summaries)], dim=-1))
            s = s + self.summary_type + self.positions.layer_index(summary_layers)
            x = torch.cat([s, x], dim=1)
            keys = torch.cat([summary_attention, keys], dim=1)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(b, 1, cfg.d_model), x], dim=1)
            keys = torch.cat([attention_mask.new_ones(b, 1), keys], dim=1)
        return EncoderSequence(x, keys, attention_mask, summary_attention if cfg.summary_tokens else None)

    def run_blocks(self, seq: EncoderSequence, start: int = 0, stop: int | None = None) -> EncoderSequence:
        """`seq` through blocks ``start:stop`` (all by default)."""
        keys = seq.keys
        key_mask = None if bool(keys.all()) else _key_mask(keys)
        x = seq.x
        for block in self.blocks[start:stop]:
            x = block(x, key_mask)
        return replace(seq, x=x)

    def finish(self, seq: EncoderSequence, token_latents: bool = True) -> EncoderOutput:
        """The outputs of `forward` from the sequence after the last block: final norm, latents, pooling."""
        cfg = self.config
        x = self.norm(seq.x)
        attention_mask, summary_attention = seq.attention_mask, seq.summary_attention
        n_summary = seq.n_summary
        real = attention_mask.unsqueeze(-1).to(x.dtype)
        parts: list[torch.Tensor] = []
        cls_state: torch.Tensor | None = None
        if self.cls_token is not None:
            cls_state, x = x[:, 0], x[:, 1:]
        summary_states = summary_latents = summary_mean = None
        if cfg.summary_tokens:
            assert summary_attention is not None
            sreal = summary_attention.unsqueeze(-1).to(x.dtype)
            summary_states, x = x[:, :n_summary] * sreal, x[:, n_summary:]
            summary_latents = self.to_latent(summary_states) * sreal if token_latents else None
            summary_mean = summary_states.sum(dim=1) / sreal.sum(dim=1).clamp_min(1.0)
        token_states = x * real
        latent_tokens = self.to_latent(token_states) * real if token_latents else None
        if cfg.pooling != "cls":
            parts.append(token_states.sum(dim=1) / real.sum(dim=1).clamp_min(1.0))
        if cls_state is not None:
            parts.append(cls_state)
        if summary_mean is not None:
            parts.append(summary_mean)
        pooled_in = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return EncoderOutput(
            token_states=token_states,
            pooled=self.pool_proj(pooled_in),
            latent_tokens=latent_tokens,
            summary_states=summary_states,
            summary_latents=summary_latents,
        )

    def prefix_parameters(self, n_blocks: int) -> list[nn.Parameter]:
        """What the sequence after block ``n_blocks`` depends on: input embeddings and the first blocks."""
        names = ("token_embed.", "positions.", "cls_token", "summary_embed.", "summary_type")
        names += tuple(f"blocks.{i}." for i in range(n_blocks))
        return [p for n, p in self.named_parameters() if n.startswith(names)]

    def _check_summaries(
        self,
        b: int,
        summaries: torch.Tensor | None,
        summary_layers: torch.Tensor | None,
        summary_attention: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        if summaries is None or summary_layers is None or summary_attention is None:
            raise ValueError(
                "this encoder reads summary tokens (EncoderConfig.summary_tokens): pass summaries, "
                "summary_layers and summary_attention (LoadedEncoder.tokenize attaches them)"
            )
        if summaries.ndim != 3 or summaries.shape[0] != b or summaries.shape[-1] != cfg.summary_dim:
            raise ValueError(
                f"summaries must be [{b}, S, {cfg.summary_dim}] (EncoderConfig.summary_dim), "
                f"got {tuple(summaries.shape)}"
            )
        shape = tuple(summaries.shape[:2])
        if tuple(summary_layers.shape) != shape or tuple(summary_attention.shape) != shape:
            raise ValueError(
                f"summary_layers and summary_attention must be {list(shape)}, got "
                f"{tuple(summary_layers.shape)} and {tuple(summary_attention.shape)}"
            )
        if summary_attention.dtype != torch.bool:
            raise ValueError(f"summary_attention must be bool, got {summary_attention.dtype}")
        if summary_layers.numel() and int(summary_layers.max()) >= cfg.max_layers:
            raise ValueError(
                f"summary_layers reaches {int(summary_layers.max())} but EncoderConfig.max_layers is "
                f"{cfg.max_layers}: use an encoder with a larger max_layers"
            )
        return summaries, summary_layers, summary_attention

    def decode(
        self, latent_tokens: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Reconstruct token values [B, L, token_size] from per-token latents (zero at padded positions)."""
        cfg = self.config
        if latent_tokens.ndim != 3 or latent_tokens.shape[-1] != cfg.latent_dim:
            raise ValueError(
                f"latent_tokens must be [B, L, {cfg.latent_dim}] (EncoderConfig.latent_dim), "
                f"got {tuple(latent_tokens.shape)}"
            )
        b, length = latent_tokens.shape[:2]
        if positions.shape != (b, length, 3) or attention_mask.shape != (b, length):
            raise ValueError(
                f"positions [{b}, {length}, 3] and attention_mask [{b}, {length}] expected, got "
                f"{tuple(positions.shape)} and {tuple(attention_mask.shape)}"
            )
        x = self.dec_in(latent_tokens) + self.dec_positions(positions)
        key_mask = _key_mask(attention_mask)
        for block in self.dec_blocks:
            x = block(x, key_mask)
        return self.dec_out(self.dec_norm(x)) * attention_mask.unsqueeze(-1).to(x.dtype)

    @torch.no_grad()
    def encode_windows(self, tokenized: TokenizedModel, window: int, batch_windows: int = 8) -> torch.Tensor:
        """Pooled embedding [latent_dim] of a possibly very long model, encoded window by window.

        Windows of `window` tokens (no overlap) are encoded `batch_windows` at a time in eval mode without
        gradients, so memory is bounded by the window size, not the model size; the window embeddings are
        averaged weighted by their real-token counts. When one window covers the whole model the result is
        exactly the pooled output of a plain forward. The module's train/eval mode is restored afterwards.
        """
        if tokenized.num_tokens == 0:
            raise ValueError("encode_windows: the tokenized model has no tokens")
        if batch_windows < 1:
            raise ValueError(f"encode_windows: batch_windows must be >= 1, got {batch_windows}")
        _check_positions(tokenized.positions, self.config)  # fail on the whole model, not window k of n
        device = next(self.parameters()).device
        windows = list(iter_windows(tokenized, window))
        was_training = self.training
        self.eval()
        try:
            pooled: list[torch.Tensor] = []
            counts: list[torch.Tensor] = []
            for start in range(0, len(windows), batch_windows):
                batch = collate(windows[start : start + batch_windows])
                extra = self.summary_inputs(tokenized, len(windows[start : start + batch_windows]), device)
                out = self(
                    batch["tokens"].to(device),
                    batch["mask"].to(device),
                    batch["positions"].to(device),
                    batch["attention_mask"].to(device),
                    **extra,
                )
                pooled.append(out.pooled)
                counts.append(batch["attention_mask"].sum(dim=1).to(device))
        finally:
            self.train(was_training)
        all_pooled = torch.cat(pooled)
        weights = torch.cat(counts).to(torch.float64)
        weights = (weights / weights.sum()).to(all_pooled.dtype)
        return (all_pooled * weights[:, None]).sum(dim=0)

    def summary_inputs(
        self, tokenized: TokenizedModel | list[TokenizedModel], repeat: int, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """Keyword inputs of `forward` for the summary tokens: nothing without ``summary_tokens``; else the
        summaries of one model repeated `repeat` times (its windows), or of each model of a list."""
        if not self.config.summary_tokens:
            return {}
        models = tokenized if isinstance(tokenized, list) else [tokenized] * repeat
        missing = [i for i, tm in enumerate(models) if tm.summaries is None]
        if missing:
            raise ValueError(
                "this encoder reads summary tokens but a tokenized model has no summaries: tokenize with "
                "LoadedEncoder.tokenize (or io.prepare_tokens with the encoder's summarizer)"
            )
        batch = collate_summaries([tm.summaries for tm in models])  # type: ignore[misc]
        return {k: v.to(device) for k, v in batch.items()}

    def flops_per_forward(
        self, seq_len: int, batch: int = 1, n_summary: int = 0, token_latents: bool = True
    ) -> int:
        """Analytic FLOPs (2 per multiply-add) of one `forward` on `batch` sequences of `seq_len` tokens.

        Counts the matmuls: token embedding, QKV/output projections, attention scores and weighted values,
        MLPs, latent and pooling projections. Norms, softmax, GELU and embedding lookups are ignored (they
        are a few percent); the decoder is not part of `forward`. Used to report achieved GFLOP/s against
        the ~130 GFLOP/s matmul ceiling measured on the target CPUs.
        """
        cfg = self.config
        d, n_tok = cfg.d_model, seq_len
        n_all = seq_len + n_summary + (1 if cfg.uses_cls else 0)
        flops = 2 * n_tok * (2 * cfg.token_size) * d  # token embedding
        flops += 2 * n_summary * (2 * cfg.summary_dim) * d  # summary-token embedding
        per_block = (
            2 * n_all * d * 3 * d  # qkv
            + 2 * n_all * n_all * d  # q @ k^T over all heads
            + 2 * n_all * n_all * d  # attn @ v
            + 2 * n_all * d * d  # output projection
            + 2 * 2 * n_all * d * cfg.d_ff  # MLP
        )
        flops += cfg.n_layers * per_block
        if token_latents:
            flops += 2 * (n_tok + n_summary) * d * cfg.latent_dim  # per-token latents
        flops += 2 * self.pool_proj.in_features * cfg.latent_dim  # pooled projection
        return int(batch * flops)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = [
    "EncoderConfig",
    "EncoderConfigError",
    "EncoderOutput",
    "EncoderSequence",
    "TransformerBlock",
    "WeightEncoder",
]
