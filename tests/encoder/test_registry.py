"""The encoder registry: a new encoder kind is one class registered here (in this test file only), and
then loads, saves, encodes and trains a head like the built-in kinds; named pretrained encoders."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from zooprobe.api import list_encoders, load_encoder, load_head, load_zoo, train
from zooprobe.encoder.auto import list_encoders as list_kinds
from zooprobe.encoder.auto import save_encoder
from zooprobe.encoder.base import (
    Embeddings,
    EncoderFormatError,
    WeightSpaceEncoder,
    load_weights,
    write_encoder_folder,
)
from zooprobe.encoder.registry import (
    packaged_folder,
    register_encoder,
    register_pretrained,
    unregister_encoder,
    unregister_pretrained,
)
from zooprobe.errors import ConfigError, ZooprobeError
from zooprobe.heads.prediction_heads import HeadConfig
from zooprobe.training.config import OptimConfig, StopConfig, TrainConfig


# ------------------------------------------------------------------------------------------ a toy kind
@dataclass(frozen=True)
class ToyConfig:
    latent_dim: int = 6

    def to_dict(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToyConfig:
        return cls(int(data["latent_dim"]))


class ToyModule(nn.Module):
    """Per-tensor statistics (mean, std, mean |w|) averaged over the model, then one linear layer."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Linear(3, config.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@dataclass
class ToyInput:
    x: torch.Tensor  # [3]
    num_tokens: int


@dataclass
class ToyEncoder(WeightSpaceEncoder):
    format_version: ClassVar[int] = 97
    config_class: ClassVar[type] = ToyConfig

    encoder: ToyModule
    provenance: dict[str, Any]
    source: Path | None = None

    @property
    def latent_dim(self) -> int:
        return self.encoder.config.latent_dim

    def tokenize(self, state_dict: Mapping[str, torch.Tensor]) -> ToyInput:
        rows = [
            torch.stack([t.float().mean(), t.float().std(unbiased=False), t.float().abs().mean()])
            for t in state_dict.values()
            if t.is_floating_point() and t.numel()
        ]
        x = torch.stack(rows).mean(0) if rows else torch.zeros(3)
        return ToyInput(x, len(rows))

    def embed(
        self,
        tokenized: Sequence[ToyInput],
        batch_size: int = 64,
        token_outputs: bool = False,
        stats: Any = None,
        frozen_blocks: int = 0,
    ) -> Embeddings:
        if token_outputs:
            raise ConfigError("the toy encoder has no per-token latents")
        if not tokenized:
            return Embeddings(torch.empty(0, self.latent_dim, device=self.device))
        return Embeddings(self.encoder(torch.stack([t.x for t in tokenized]).to(self.device)))

    def _fingerprint_meta(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "config": self.encoder.config.to_dict()}

    def save_pretrained(self, folder: str | Path) -> Path:
        fields = {"architecture": self.architecture, "encoder": self.encoder.config.to_dict()}
        return write_encoder_folder(
            folder, self.encoder, self.format_version, fields, self.provenance, self.model_card
        )

    @classmethod
    def from_folder(cls, folder: Path, data: dict[str, Any], device: str = "cpu") -> ToyEncoder:
        module = ToyModule(ToyConfig.from_dict(data["encoder"]))
        load_weights(folder, module)
        return cls(module.to(device).eval(), dict(data["provenance"]), folder)

    @staticmethod
    def model_card(config: Mapping[str, Any]) -> str:
        return f"# toy encoder\n\nlatent_dim {config['encoder']['latent_dim']}\n"


@pytest.fixture
def toy_kind() -> Iterator[type[ToyEncoder]]:
    register_encoder("toy")(ToyEncoder)
    try:
        yield ToyEncoder
    finally:
        unregister_encoder("toy")


@pytest.fixture
def toy_folder(toy_kind: type[ToyEncoder], tmp_path: Path) -> Path:
    torch.manual_seed(0)
    enc = toy_kind(ToyModule(ToyConfig()), {"model_ids": [], "finished": True})
    return save_encoder(enc, tmp_path / "toy")


# ------------------------------------------------------------------------------------------ tests
def test_a_registered_kind_saves_loads_and_trains_a_head(
    toy_folder: Path, head_zoo: Path, tmp_path: Path
) -> None:
    assert "toy" in list_kinds() and {"tokens", "neurons"} <= set(list_kinds())
    config = json.loads((toy_folder / "config.json").read_text())
    assert config["architecture"] == "toy" and config["format_version"] == 97
    enc = load_encoder(toy_folder)  # the loader of any source dispatches on the architecture tag
    assert isinstance(enc, ToyEncoder) and isinstance(enc, WeightSpaceEncoder)
    zoo = load_zoo(head_zoo)
    reps = enc.encode(zoo)
    assert reps.shape == (len(zoo), 6) and torch.isfinite(reps).all()
    assert enc.fingerprint() == load_encoder(toy_folder).fingerprint()

    cfg = TrainConfig(
        zoo=str(head_zoo),
        encoder=str(toy_folder),
        task="accuracy",
        optim=OptimConfig(epochs=3, batch_size=8, lr=3e-3),
        stop=StopConfig(patience=3),
    )
    result = train(cfg, tmp_path / "run", progress=False, encoder=enc)
    assert result.epochs_run == 3 and math.isfinite(result.test["r2"])
    head = load_head(tmp_path / "run")  # its encoder is found again through the registry
    assert isinstance(head.model.loaded, ToyEncoder)
    assert head.model.loaded.fingerprint() == enc.fingerprint()


def test_attention_pooling_is_refused_by_a_kind_without_token_outputs(
    toy_folder: Path, head_zoo: Path, tmp_path: Path
) -> None:
    assert ToyEncoder.token_outputs is False
    cfg = TrainConfig(
        zoo=str(head_zoo),
        encoder=str(toy_folder),
        task="accuracy",
        head=HeadConfig(pooling="attention"),
        optim=OptimConfig(epochs=1, batch_size=8),
    )
    with pytest.raises(ZooprobeError, match="no per-token latents"):
        train(cfg, tmp_path / "run", progress=False, encoder=load_encoder(toy_folder))


def test_an_unregistered_kind_and_taken_names_are_refused(toy_folder: Path) -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_encoder("tokens")(ToyEncoder)
    unregister_encoder("toy")
    with pytest.raises(EncoderFormatError, match=r"format_version 97 is not supported.*reads 2 .* and 3"):
        load_encoder(toy_folder)


def test_named_pretrained_encoders(toy_folder: Path) -> None:
    names = list_encoders()
    assert {"default", "v2", "v3"} <= set(names) and all(isinstance(v, str) and v for v in names.values())
    register_pretrained("toy-small", lambda progress: toy_folder, "a toy encoder")
    register_pretrained("toy-missing", packaged_folder("zooprobe.encoder", "pretrained", "no-such-encoder"))
    try:
        assert list_encoders()["toy-small"] == "a toy encoder"
        assert isinstance(load_encoder("toy-small"), ToyEncoder)
        with pytest.raises(ZooprobeError, match="no-such-encoder is not shipped with this installation"):
            load_encoder("toy-missing")
        with pytest.raises(ConfigError, match="already registered"):
            register_pretrained("toy-small", lambda progress: toy_folder)
    finally:
        unregister_pretrained("toy-small")
        unregister_pretrained("toy-missing")
    assert "toy-small" not in list_encoders()
