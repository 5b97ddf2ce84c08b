"""The foundation encoder shipped inside the package: its files, loading it by name, what it encodes."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest
import torch

from zooprobe.api import load_encoder
from zooprobe.encoder.auto import load_encoder as load_encoder_folder
from zooprobe.encoder.base import EncoderFormatError
from zooprobe.encoder.layer_loader import LoadedLayerEncoder
from zooprobe.encoder.registry import SUMS_FILE, check_sums
from zooprobe.symmetry import Architecture, widen
from zooprobe.zoo.models import SubjectModel
from zooprobe.zoo.space import ArchSpec

SHIPPED = Path(__file__).resolve().parents[2] / "src" / "zooprobe" / "encoder" / "pretrained" / "foundation"


def _mlp() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = SubjectModel(ArchSpec("digits", "mlp", 2, 16, False, False, (64,), 10), "relu")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_shipped_files_match_their_sha256sums_and_stay_small() -> None:
    lines = (SHIPPED / SUMS_FILE).read_text().splitlines()
    named = {line.split("  ")[1]: line.split("  ")[0] for line in lines}
    assert set(named) == {"README.md", "config.json", "model.safetensors"}
    for name, digest in named.items():
        assert hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest() == digest, name
    assert sum((SHIPPED / n).stat().st_size for n in named) < 20 * 2**20  # the package-data budget


def test_load_by_name_from_an_empty_cache_builds_nothing(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("ZOOPROBE_CACHE", str(cache))
    encoder = load_encoder("foundation")
    assert isinstance(encoder, LoadedLayerEncoder)
    assert encoder.provenance["corpus_sha256"]  # the card's corpus, from the committed manifest
    assert not cache.exists() or not any(cache.rglob("*"))  # nothing built, pretrained or downloaded
    plain, wide = _mlp(), widen(_mlp(), Architecture("relu"), 2)
    reps = encoder.encode([plain, wide])
    assert reps.shape == (2, encoder.latent_dim) and torch.isfinite(reps).all()
    torch.testing.assert_close(reps[0], reps[1], atol=1e-4, rtol=1e-4)  # widening: same representation


def test_default_is_the_shipped_foundation_encoder_and_pretrains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zooprobe.api as api

    cache = tmp_path / "cache"
    monkeypatch.setenv("ZOOPROBE_CACHE", str(cache))

    def no_pretraining(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_encoder('default') pretrained an encoder")

    monkeypatch.setattr(api, "pretrain", no_pretraining)
    start = time.perf_counter()
    encoder = load_encoder("default")
    assert time.perf_counter() - start <= 5  # issue 25: at most 5 s from an empty cache
    assert isinstance(encoder, LoadedLayerEncoder) and encoder.source == SHIPPED
    assert encoder.fingerprint() == load_encoder("foundation").fingerprint()
    assert not (cache / "encoders").exists()  # no pretraining folder (nor anything else) in the cache
    assert not cache.exists() or not any(cache.rglob("*"))
    assert "foundation" in api.list_encoders()["default"]


def test_a_changed_shipped_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "foundation"
    shutil.copytree(SHIPPED, copy)
    check_sums(copy)  # the intact copy passes
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(EncoderFormatError, match="sha256 does not match"):
        check_sums(copy)


def test_a_saved_layer_encoder_loads_back_identical(tmp_path: Path) -> None:
    encoder = load_encoder_folder(SHIPPED)
    saved = encoder.save_pretrained(tmp_path / "copy")
    again = load_encoder_folder(saved)
    assert isinstance(again, LoadedLayerEncoder)
    assert again.fingerprint() == encoder.fingerprint()
    assert "foundation" in (saved / "README.md").read_text()
