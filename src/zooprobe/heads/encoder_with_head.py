"""`EncoderWithHead`: a pretrained encoder and a prediction head, frozen or fine-tuned end to end.

- ``frozen``: the encoder's parameters have ``requires_grad=False``, the encoder stays in eval mode, and it
  runs under ``torch.no_grad`` (no activations kept for backward: the memory saving the head benchmark
  shows). Training usually skips the encoder entirely and reads cached representations
  (`forward_features`).
- ``finetune``: the encoder trains too, at ``encoder_lr_ratio`` times the head's learning rate (0.1 by
  default); with ``unfreeze_top_layers=k`` only the top ``k`` transformer blocks (plus the final norm and
  the latent projection) are trained and the rest stays frozen: the output of the frozen blocks is computed
  once per model and reused in later epochs (`LoadedEncoder.embed` with ``frozen_blocks``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from zooprobe.encoder.base import WeightSpaceEncoder
from zooprobe.errors import ConfigError
from zooprobe.heads.prediction_heads import Head
from zooprobe.tokens import TokenizedModel

Mode = Literal["frozen", "finetune"]


def pad_tokens(tokens: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-model token latents -> padded [B, L, D] and a real-token mask [B, L]."""
    longest = max(int(t.shape[0]) for t in tokens)
    dim = int(tokens[0].shape[-1])
    out = tokens[0].new_zeros(len(tokens), longest, dim)
    mask = torch.zeros(len(tokens), longest, dtype=torch.bool, device=tokens[0].device)
    for i, t in enumerate(tokens):
        out[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return out, mask


class EncoderWithHead(nn.Module):
    """An encoder (any `WeightSpaceEncoder` kind) and a `Head`; see the module docs for the two modes."""

    def __init__(
        self,
        encoder: WeightSpaceEncoder,
        head: Head,
        mode: Mode = "frozen",
        *,
        encoder_lr_ratio: float = 0.1,
        unfreeze_top_layers: int | None = None,
        encode_batch_size: int = 64,
    ) -> None:
        super().__init__()
        if mode not in ("frozen", "finetune"):
            raise ConfigError(f"mode must be 'frozen' or 'finetune', got {mode!r}")
        if encoder_lr_ratio <= 0:
            raise ConfigError(f"encoder_lr_ratio must be > 0, got {encoder_lr_ratio}")
        n_blocks = encoder.n_blocks
        if unfreeze_top_layers is not None and not 0 <= unfreeze_top_layers <= n_blocks:
            raise ConfigError(f"unfreeze_top_layers must be in [0, {n_blocks}], got {unfreeze_top_layers}")
        if head.in_dim != encoder.latent_dim:
            raise ConfigError(f"head input size {head.in_dim} != encoder latent size {encoder.latent_dim}")
        self.loaded = encoder
        self.encoder = encoder.encoder  # registered as a submodule: its weights are in state_dict()
        self.head = head
        self.mode = mode
        self.encoder_lr_ratio = encoder_lr_ratio
        self.unfreeze_top_layers = unfreeze_top_layers
        self.encode_batch_size = encode_batch_size
        trainable = self._trainable_encoder_names() if mode == "finetune" else set()
        for name, p in self.encoder.named_parameters():
            p.requires_grad_(name in trainable)

    def _trainable_encoder_names(self) -> set[str]:
        # the reconstruction decoder (dec_*) plays no part in representations: it never trains here,
        # and neither does the summary-token reconstruction head (summary_out)
        names = {n for n, _ in self.encoder.named_parameters() if not n.startswith(("dec_", "summary_out."))}
        k = self.unfreeze_top_layers
        if k is None:
            return names
        n_blocks = self.loaded.n_blocks
        top = {f"blocks.{i}." for i in range(n_blocks - k, n_blocks)}
        # above the blocks: final norm, latent projection and pooling (what reads the top blocks' output)
        after = ("norm.", "to_latent.", "pool_proj.")
        return {n for n in names if n.startswith(tuple(top)) or (k > 0 and n.startswith(after))}

    @property
    def frozen(self) -> bool:
        return self.mode == "frozen"

    @property
    def frozen_blocks(self) -> int:
        """Fine-tuning with ``unfreeze_top_layers=k``: the bottom blocks that do not train; their output is
        computed once per kept model and reused every epoch (`LoadedEncoder.embed`)."""
        if self.frozen or self.unfreeze_top_layers is None:
            return 0
        return self.loaded.n_blocks - self.unfreeze_top_layers

    def train(self, mode: bool = True) -> EncoderWithHead:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()  # frozen: no dropout, no statistics updates in the encoder, ever
        return self

    # ---------------------------------------------------------------- forward
    def head_inputs(self, tokenized: Sequence[TokenizedModel]) -> dict[str, torch.Tensor]:
        """Encoder outputs for the head: pooled [B, D] (+ padded token latents with attention pooling)."""
        want_tokens = self.head.pool is not None
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            emb = self.loaded.embed(
                tokenized, self.encode_batch_size, token_outputs=want_tokens, frozen_blocks=self.frozen_blocks
            )
        inputs = {"pooled": emb.pooled}
        if want_tokens and emb.tokens is not None:
            inputs["tokens"], inputs["token_mask"] = pad_tokens(emb.tokens)
        return inputs

    def forward(
        self,
        tokenized: Sequence[TokenizedModel] | None = None,
        features: Mapping[str, torch.Tensor] | None = None,
        extra: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Raw head outputs from tokenized models (encoder runs) or from cached features (head only);
        `extra` adds inputs that do not come from the encoder (``stats``: weight statistics)."""
        if (tokenized is None) == (features is None):
            raise ConfigError("EncoderWithHead: pass exactly one of tokenized or features")
        inputs = dict(features) if features is not None else self.head_inputs(tokenized or [])
        inputs.update(extra or {})
        return self.head(inputs)

    # ---------------------------------------------------------------- optimization
    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: the head at `lr`; in fine-tuning mode, the trainable encoder parameters
        at ``lr * encoder_lr_ratio``. Biases and norm parameters get no weight decay."""
        groups: list[dict[str, Any]] = []

        def split(module: nn.Module, name: str, group_lr: float) -> None:
            decay, no_decay = [], []
            for n, p in module.named_parameters():
                if not p.requires_grad:
                    continue
                (no_decay if p.ndim < 2 or "norm" in n or "embed" in n else decay).append(p)
            if decay:
                groups.append(
                    {"name": f"{name}", "params": decay, "lr": group_lr, "weight_decay": weight_decay}
                )
            if no_decay:
                groups.append(
                    {"name": f"{name}_no_decay", "params": no_decay, "lr": group_lr, "weight_decay": 0.0}
                )

        split(self.head, "head", lr)
        if not self.frozen:
            split(self.encoder, "encoder", lr * self.encoder_lr_ratio)
        return groups

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must hold: the head, plus the encoder when it is fine-tuned."""
        sd = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        if not self.frozen:
            sd.update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items()})
        return sd

    def load_trainable_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        head = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
        self.head.load_state_dict(head, strict=True)
        enc = {k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")}
        if not self.frozen:
            self.encoder.load_state_dict(enc, strict=True)
        elif enc:
            raise ConfigError("a frozen-mode checkpoint must not contain encoder weights")


__all__ = ["EncoderWithHead", "Mode", "pad_tokens"]
