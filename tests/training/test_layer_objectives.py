"""The foundation encoder's two objectives in the one engine: ``layers`` (supervised pretraining, the
recipe of benchmarks/foundation/pretrain_transfer.py) and ``adapt`` (test-time adaptation on weights only,
`zooprobe.adapt_encoder`). The kill -9 case of ``encoder adapt`` is in
tests/adversarial/test_kill_resume.py."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

import zooprobe.training.objectives.targets as targets_module
from zooprobe import AdaptConfig, adapt_encoder
from zooprobe.api import load_encoder, load_zoo, pretrain_encoder
from zooprobe.encoder.layer_loader import LoadedLayerEncoder
from zooprobe.errors import ConfigError
from zooprobe.training.pretrain import PretrainConfig, training_history
from zooprobe.zoo.store import Zoo

FAST = {"epochs": 2, "batch_size": 8}  # about 16 models: 2 steps an epoch


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


# ---------------------------------------------------------------------------------------------- layers
def test_layers_objective_pretrains_a_layer_encoder_and_resumes_bit_identically(
    tiny_zoo: Path, tmp_path: Path
) -> None:
    cfg = PretrainConfig(architecture="layers", preset="tiny", epochs=3)
    full = pretrain_encoder(cfg, tiny_zoo, tmp_path / "full", progress=False)
    enc = load_encoder(full)
    assert isinstance(enc, LoadedLayerEncoder)
    names = {t.name for t in enc.targets}
    assert {"test_accuracy", "log10_learning_rate"} <= names  # the metadata targets of the train split
    config = json.loads((full / "config.json").read_text())
    assert config["provenance"]["objective"] == "supervised multi-task"
    assert config["provenance"]["finished"] is True
    zoo = load_zoo(tiny_zoo)
    reps = enc.encode(zoo)
    assert reps.shape == (len(zoo), enc.latent_dim) and torch.isfinite(reps).all()

    class Interrupted(Exception):
        pass

    def stop(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        pretrain_encoder(cfg, tiny_zoo, tmp_path / "resumed", progress=False, on_epoch_end=stop)
    resumed = pretrain_encoder(cfg, tiny_zoo, tmp_path / "resumed", progress=False)
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in training_history(full)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in training_history(resumed)]


def test_layers_config_refuses_token_options_and_weight_noise() -> None:
    with pytest.raises(ConfigError, match="window"):
        PretrainConfig(architecture="layers", window=64).resolved()
    with pytest.raises(ConfigError, match="noise_sigma"):
        PretrainConfig(architecture="layers", noise_sigma=0.1).resolved()
    assert PretrainConfig(architecture="layers", preset="bench").resolved().d_model == 128


# ---------------------------------------------------------------------------------------------- adapt
ALLOWED = {"split", "is_final", "model_id", "_file", "_row"}
"""The only metadata columns adaptation may read (weights' location, split, final flag, run id)."""


class _Guarded(pd.DataFrame):
    """A metadata table that raises when a label column (anything but `ALLOWED`) is read."""

    @property
    def _constructor(self) -> type:
        return _Guarded

    def __getitem__(self, key: object) -> object:
        keys = [key] if isinstance(key, str) else list(key) if isinstance(key, list | tuple) else []
        read = [k for k in keys if isinstance(k, str) and k not in ALLOWED]
        if read:
            raise AssertionError(f"adaptation read the label column(s) {read}")
        return super().__getitem__(key)


def _label_guarded(source: Path) -> Zoo:
    zoo = load_zoo(source)
    return zoo._view(_Guarded(zoo._meta))


@pytest.fixture(scope="module")
def adapted(tiny_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped foundation encoder adapted to the tiny zoo (2 epochs, a few seconds)."""
    out = tmp_path_factory.mktemp("adapt") / "enc"
    return adapt_encoder(AdaptConfig(zoo=str(tiny_zoo), **FAST), out, progress=False)


def test_the_guard_catches_a_label_read(tiny_zoo: Path) -> None:
    """The guard below is real: reading a label column of the guarded zoo raises."""
    zoo = _label_guarded(tiny_zoo)
    with pytest.raises(AssertionError, match="test_accuracy"):
        zoo.metadata()["test_accuracy"]
    with pytest.raises(AssertionError, match="learning_rate"):
        zoo.split("train").metadata()[["model_id", "learning_rate"]]


def test_adapt_never_reads_labels(
    tiny_zoo: Path, adapted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every label column raises when read, and the target builders raise when called: adaptation still
    runs, and gives the very encoder the unguarded zoo gave."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("adaptation built metadata targets")

    monkeypatch.setattr(targets_module, "metadata_targets", refuse)
    monkeypatch.setattr(targets_module, "target_tensors", refuse)
    from zooprobe.training.adapt import adapt

    cfg = AdaptConfig(zoo=str(tiny_zoo), **FAST)
    out = adapt(cfg, load_encoder("foundation"), _label_guarded(tiny_zoo), tmp_path / "enc", progress=False)
    a, b = _weights(adapted), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adapted_folder_loads_differs_from_the_source_but_stays_close(tiny_zoo: Path, adapted: Path) -> None:
    source, new = load_encoder("foundation"), load_encoder(adapted)
    assert isinstance(new, LoadedLayerEncoder) and new.latent_dim == source.latent_dim
    zoo = load_zoo(tiny_zoo)
    a, b = source.encode(zoo), new.encode(zoo)
    assert not torch.equal(a, b)  # adaptation changed the representation
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1)
    assert float(cosine.min()) > 0.9, cosine  # ... but the anchor kept it near the source's
    sa, sb = _weights_of(source), _weights_of(new)
    assert all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith("heads."))  # heads kept as they are
    prov = new.provenance
    assert prov["adapted"] is True and prov["finished"] is True
    assert prov["source_encoder"] == "foundation" and prov["source_fingerprint"] == source.fingerprint()
    assert prov["zoo_fingerprint"] == zoo.fingerprint()
    assert prov["objective"].startswith("adapt:") and prov["labels_read"].startswith("none")
    assert "**adapted**" in (adapted / "README.md").read_text()
    saved = yaml.safe_load((adapted / "adapt_config.yaml").read_text())
    assert AdaptConfig.from_dict(saved) == AdaptConfig(zoo=str(tiny_zoo), **FAST)


def _weights_of(encoder: LoadedLayerEncoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in encoder.encoder.state_dict().items()}


def test_adapt_refuses_bad_input_clearly(tiny_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="zoo is not set"):
        adapt_encoder(AdaptConfig(), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="kind 'layers'"):
        cfg = AdaptConfig(zoo=str(tiny_zoo), encoder=str(head_encoder))
        adapt_encoder(cfg, tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / "config.json").exists()


def test_supervised_targets_include_the_training_length_where_a_zoo_records_it() -> None:
    """A corpus with ``train_samples_range`` gives the supervised objectives log10 steps and training-set
    size to learn (a learning rate in the weights is confounded with them); other zoos give neither."""
    meta = pd.DataFrame(
        {
            "learning_rate": [1e-3, 1e-2, 1e-1],
            "steps": [10, 100, 1000],
            "train_samples": [256, 512, 2048],
            "optimizer": ["adam", "sgd", "adam"],
        }
    )
    specs = {t.name: t for t in targets_module.metadata_targets(meta)}
    assert {"log10_learning_rate", "log10_steps", "log10_train_samples"} <= set(specs)
    assert specs["log10_steps"].mean == pytest.approx(2.0)
    values = targets_module.target_tensors(meta, list(specs.values()))
    assert torch.allclose(values["log10_steps"], torch.tensor([-1.0, 0.0, 1.0]) / (2 / 3) ** 0.5, atol=1e-5)
    unrecorded = meta.assign(steps=float("nan"), train_samples=float("nan"))
    names = {t.name for t in targets_module.metadata_targets(unrecorded)}
    assert "log10_steps" not in names and "log10_train_samples" not in names
