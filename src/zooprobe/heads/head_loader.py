"""Loading a trained head (with its encoder) and predicting properties of state dicts.

A head folder (``RUN_DIR/head``, or a Hub model repo of one) holds ``config.json`` and
``model.safetensors`` (`save_head` writes both; the trainer saves the best epoch's). `load_head_folder`
reads the config strictly, checks that the given encoder is the exact one the head was trained on
(fingerprint of weights, tokenizer and preprocessing), rebuilds the head and loads the weights with
``strict=True``: a mismatched checkpoint is an error, never random weights. A fine-tuned head carries its
encoder's fine-tuned weights, which replace the base ones. `zooprobe.load_head` resolves run folders and
Hub repo ids and loads the encoder the config names (``encoder.source`` at ``encoder.revision``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zooprobe.core.config import check_record
from zooprobe.core.device import resolve_device
from zooprobe.core.files import atomic_write_json, read_json
from zooprobe.core.tensorfile import read_state, save_state
from zooprobe.encoder.encoder_loader import LoadedEncoder
from zooprobe.errors import ConfigError, InvalidInputError, ZooFormatError
from zooprobe.heads.encoder_with_head import EncoderWithHead
from zooprobe.heads.prediction_heads import HeadConfig, build_head
from zooprobe.heads.targets import TaskSpec
from zooprobe.tokens.statistics import featurize

HEAD_FORMAT = 1
REQUIRED = ("format_version", "library_name", "task", "head", "mode", "encoder")


class HeadFormatError(ZooFormatError):
    """A folder does not hold a loadable zooprobe head, or its weights do not match its config."""


@dataclass
class LoadedHead:
    """A trained head and its encoder, ready to predict (eval mode)."""

    model: EncoderWithHead
    config: dict[str, Any]
    source: Path

    @property
    def spec(self) -> TaskSpec:
        return self.model.head.spec

    @torch.no_grad()
    def predict(
        self, state_dicts: Iterable[Mapping[str, torch.Tensor]], batch_size: int = 64
    ) -> dict[str, np.ndarray]:
        """Predictions for each state dict: probabilities (binary [N], discrete [N, C]) or values in metric
        space (continuous [N]; log10 for log targets)."""
        self.model.eval()
        sds = list(state_dicts)
        raw: dict[str, list[np.ndarray]] = {t.name: [] for t in self.spec.targets}
        for s in range(0, len(sds), batch_size):
            chunk = sds[s : s + batch_size]
            tms = [self.model.loaded.tokenize_checked(sd, s + j) for j, sd in enumerate(chunk)]
            extra = {}
            if self.model.head.config.statistics:
                feats = featurize(chunk)
                extra["stats"] = torch.as_tensor(feats, dtype=torch.float32, device=self.model.loaded.device)
            out = self.model(tokenized=tms, extra=extra)
            for k, v in out.items():
                raw[k].append(v.float().cpu().numpy())
        return self.model.head.predict({k: np.concatenate(v) for k, v in raw.items()})


def head_folder(source: str | Path) -> Path:
    """A run folder's ``head/`` subfolder, or the folder itself if it holds a head config."""
    path = Path(source)
    if (path / "head" / "config.json").is_file():
        return path / "head"
    return path


def read_head_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise HeadFormatError(f"{folder}: no config.json, so this is not a zooprobe head (or a run folder)")
    data = dict(
        check_record(
            read_json(path, "head config", HeadFormatError),
            str(path),
            HeadFormatError,
            fields=REQUIRED,
            version=HEAD_FORMAT,
        )
    )
    if data["library_name"] != "zooprobe" or data.get("model_type") != "zooprobe-head":
        raise HeadFormatError(f"{path}: not a zooprobe head (library_name/model_type)")
    return data


def load_head_folder(
    folder: str | Path,
    encoder: LoadedEncoder,
    *,
    device: str = "cpu",
    check_encoder: bool = True,
) -> LoadedHead:
    """Load the head in `folder` (a head folder, or a run folder's ``head/``) on top of `encoder`.

    `zooprobe.load_head` takes run folders and Hub repo ids and loads the encoder the head names. With
    ``check_encoder`` the encoder must be the exact one the head was trained with (fingerprint).
    """
    folder = head_folder(Path(folder))
    config = read_head_config(folder)
    enc_info = config["encoder"]
    if check_encoder and encoder.fingerprint() != enc_info.get("fingerprint"):
        raise HeadFormatError(
            f"{folder}: the encoder {enc_info['source']!r} (revision {enc_info.get('revision')}) is not "
            "the one this head was trained with (its weights, tokenizer or preprocessing differ); pass the "
            "original encoder, or check_encoder=False at your own risk"
        )
    spec = TaskSpec.from_dict(config["task"])
    head = build_head(spec, HeadConfig.from_dict(config["head"]), encoder.latent_dim)
    model = EncoderWithHead(encoder, head, config["mode"])
    path = folder / "model.safetensors"
    if not path.is_file():
        raise HeadFormatError(f"{folder}: no model.safetensors (the head's weights)")
    try:
        tensors, _ = read_state(path, what="head checkpoint", require_meta=False)
    except InvalidInputError as e:
        raise HeadFormatError(str(e)) from e
    try:
        model.load_trainable_state_dict(tensors)
    except (RuntimeError, ConfigError) as e:
        raise HeadFormatError(f"{path} does not match the head described in config.json: {e}") from e
    model.to(resolve_device(device)).eval()
    return LoadedHead(model, config, folder)


def save_head(
    model: EncoderWithHead,
    config: dict[str, Any],
    folder: str | Path,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a head folder (`load_head_folder` reads it back): ``config.json`` (`config`, as the trainer's
    `head_config` builds it) and ``model.safetensors`` (the trainable weights: the head, plus the encoder's
    when fine-tuned; `meta` such as the epoch goes into its header). Both are written atomically, the
    weights first."""
    folder = Path(folder)
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise ConfigError(f"save_head: the head config lacks {missing}")
    folder.mkdir(parents=True, exist_ok=True)
    save_state(folder / "model.safetensors", model.trainable_state_dict(), meta or {})
    atomic_write_json(folder / "config.json", config)
    return folder


__all__ = [
    "HEAD_FORMAT",
    "HeadFormatError",
    "LoadedHead",
    "head_folder",
    "load_head_folder",
    "read_head_config",
    "save_head",
]
