"""Representations of a zoo's models under an encoder, computed once and cached on disk.

Frozen head training reads the encoder's outputs many times (every epoch); they depend only on the
encoder's weights, its preprocessing and the models. So they are computed once and stored under
``cache_dir()/representations/<key>.safetensors`` where the key hashes:

- the encoder: every weight tensor (name, dtype, shape, bytes), its `EncoderConfig`, the tokenizer (config
  and normalization statistics), the layer-summary standardization and the preprocessing (window,
  position policy);
- the models: the content hash of each selected checkpoint's stored weights, in order;
- whether per-token latents are stored too (attention-pooling heads need them);
- the version of `zooprobe.symmetry.canonical_form`, the form every model is encoded in (the prediction
  path, `LoadedHead.run`, reads networks in the same form).

A changed encoder or zoo is therefore a different key (a miss). The file carries a checksum of its
tensors; a file that does not parse, fails the checksum or has the wrong shapes is reported, deleted and
recomputed. Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zooprobe.core.files import cache_dir
from zooprobe.core.progress import Progress
from zooprobe.core.tensorfile import open_safetensors, write_safetensors
from zooprobe.encoder.base import WeightSpaceEncoder, encode_chunks
from zooprobe.symmetry import CANONICAL_FORM, canonical_form

CACHE_FORMAT = 1
log = logging.getLogger(__name__)


@dataclass
class Representations:
    """Encoder outputs of N models: pooled [N, D] and optionally per-token latents (one tensor each)."""

    pooled: torch.Tensor
    tokens: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.pooled.shape[0])

    def subset(self, index: Sequence[int]) -> Representations:
        idx = [int(i) for i in index]
        tokens = [self.tokens[i] for i in idx] if self.tokens is not None else None
        return Representations(self.pooled[idx], tokens)


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


ENCODE_CHUNK_BYTES = 128 * 2**20
"""`compute_representations` decodes and tokenizes at most this many bytes of weights (or `chunk` models)
before embedding them: its memory does not grow with the zoo."""


def compute_representations(
    encoder: WeightSpaceEncoder,
    zoo: Any,
    *,
    token_outputs: bool = False,
    batch_size: int = 64,
    chunk: int = 256,  # small enough for the progress bar to move every few seconds
    chunk_bytes: int = ENCODE_CHUNK_BYTES,
    progress: bool = True,
) -> Representations:
    """Encode every row of `zoo` (a `Zoo` view) in its `zooprobe.symmetry.canonical_form` without
    gradients; optionally keep per-token latents.

    Rows are read in order and embedded a chunk at a time: at most `chunk` models and about `chunk_bytes`
    bytes of decoded weights (always at least one model), so only the chunk's models (their weights, then
    their tokens) and the outputs are held, whatever the zoo's size. The result does not depend on the
    chunking."""
    pooled: list[torch.Tensor] = []
    tokens: list[torch.Tensor] = []
    n = len(zoo)
    was_training = encoder.encoder.training
    encoder.encoder.eval()
    try:
        with torch.no_grad(), Progress("encoding models", n, unit="models", enabled=progress) as bar:
            first = 0
            rows = (canonical_form(zoo.state_dict(i)) for i in range(n))  # as `LoadedHead.run` reads them
            for sds in encode_chunks(rows, chunk, chunk_bytes):
                tms = encoder.tokenize_many(sds, first)  # same-architecture models tokenized together
                sds.clear()  # the weights are not needed once tokenized
                emb = encoder.embed(tms, batch_size, token_outputs=token_outputs)
                pooled.append(emb.pooled.float().cpu())
                if emb.tokens is not None:
                    tokens.extend(t.float().cpu() for t in emb.tokens)
                bar.advance(len(tms))
                first += len(tms)
    finally:
        encoder.encoder.train(was_training)
    out = torch.cat(pooled) if pooled else torch.empty(0, encoder.latent_dim)
    return Representations(out, tokens if token_outputs else None)


class RepresentationCache:
    """On-disk cache of `Representations` (see the module docs). ``root`` defaults to the user cache."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "representations"

    def key(self, encoder: WeightSpaceEncoder, zoo: Any, token_outputs: bool) -> str:
        hashes = [zoo.content_hash(i) for i in range(len(zoo))]
        payload = {
            "format": CACHE_FORMAT,
            "encoder": encoder.fingerprint(),
            "models": hashlib.sha256("\n".join(hashes).encode()).hexdigest(),
            "n": len(hashes),
            "token_outputs": token_outputs,
            "canonical_form": CANONICAL_FORM,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def load(self, key: str, n: int, dim: int, token_outputs: bool) -> Representations | None:
        """The cached entry, or None on a miss; a corrupt entry is logged, deleted and reported as a miss."""

        path = self.path(key)
        if not path.exists():
            return None
        try:
            with open_safetensors(path) as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
            if meta.get("checksum") != _checksum(tensors):
                raise ValueError("checksum mismatch")
            pooled = tensors["pooled"]
            if tuple(pooled.shape) != (n, dim):
                raise ValueError(f"pooled has shape {tuple(pooled.shape)}, expected {(n, dim)}")
            reps = Representations(pooled)
            if token_outputs:
                offsets = tensors["offsets"].tolist()
                flat = tensors["tokens"]
                if len(offsets) != n + 1 or offsets[-1] != flat.shape[0]:
                    raise ValueError("token offsets do not match")
                reps.tokens = [flat[offsets[i] : offsets[i + 1]] for i in range(n)]
            return reps
        except Exception as e:  # any unreadable entry is rebuilt, never trusted
            log.warning("representation cache entry %s is corrupt (%s); recomputing it", path.name, e)
            path.unlink(missing_ok=True)
            return None

    def save(self, key: str, reps: Representations) -> Path:

        tensors = {"pooled": reps.pooled.contiguous()}
        if reps.tokens is not None:
            lengths = [int(t.shape[0]) for t in reps.tokens]
            offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int64)
            tensors["tokens"] = torch.cat(reps.tokens).contiguous()
            tensors["offsets"] = offsets
        meta = {"checksum": _checksum(tensors), "format": str(CACHE_FORMAT)}
        path = self.path(key)
        write_safetensors(path, tensors, meta)
        return path

    def get(
        self,
        encoder: WeightSpaceEncoder,
        zoo: Any,
        *,
        token_outputs: bool = False,
        batch_size: int = 64,
        chunk_bytes: int = ENCODE_CHUNK_BYTES,
        progress: bool = True,
        stats: dict[str, Any] | None = None,
    ) -> Representations:
        """Representations of `zoo`'s rows: read from the cache, or computed (`compute_representations`,
        ``chunk_bytes`` at a time) and stored. `stats` (a dict) receives ``hit`` (bool), ``seconds`` and
        ``path``."""
        start = time.perf_counter()
        key = self.key(encoder, zoo, token_outputs)
        reps = self.load(key, len(zoo), encoder.latent_dim, token_outputs)
        hit = reps is not None
        if reps is None:
            reps = compute_representations(
                encoder,
                zoo,
                token_outputs=token_outputs,
                batch_size=batch_size,
                chunk_bytes=chunk_bytes,
                progress=progress,
            )
            self.save(key, reps)
        if stats is not None:
            stats.update({"hit": hit, "seconds": time.perf_counter() - start, "path": str(self.path(key))})
        return reps


__all__ = [
    "ENCODE_CHUNK_BYTES",
    "RepresentationCache",
    "Representations",
    "compute_representations",
]
