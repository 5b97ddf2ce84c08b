"""The v3 neuron-level encoder: invariance by construction, folder format v3, supervised pretraining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from zooprobe.api import load_encoder, load_zoo, pretrain_encoder, train
from zooprobe.encoder.augment import permutation_plan, permute_neurons
from zooprobe.encoder.config import NeuronEncoderConfig, PretrainTarget
from zooprobe.encoder.encoder_loader import EncoderFormatError
from zooprobe.encoder.neuron_loader import LoadedNeuronEncoder
from zooprobe.encoder.neuron_model import NeuronEncoder
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.tokens.neurons import featurize_batch, neuron_model, stack_groups
from zooprobe.training.config import HeadConfig, TrainConfig
from zooprobe.training.pretrain import PretrainConfig

TARGETS = [
    PretrainTarget("optimizer", "categorical", classes=["adam", "sgd"]),
    PretrainTarget("acc", "continuous"),
]


def _encoder(rounds: int) -> NeuronEncoder:
    torch.manual_seed(0)
    enc = NeuronEncoder(
        NeuronEncoderConfig(d_model=16, latent_dim=8, n_heads=2, message_passing_rounds=rounds), TARGETS
    )
    return enc.eval()


def _represent(enc: NeuronEncoder, sds: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    models = [neuron_model(sd) for sd in sds]
    (idx, stacked), *rest = stack_groups(models)
    assert not rest and idx == list(range(len(sds)))  # same architecture: one group
    with torch.no_grad():
        return enc(featurize_batch(stacked))


def _subject_models(zoo_path: Path) -> list[dict[str, torch.Tensor]]:
    """Real subject models with hidden layers that `permute_neurons` knows (MLPs and CNNs, with and without
    norms, residual connections and dropout)."""
    zoo = load_zoo(zoo_path)
    out = [zoo.state_dict(i) for i in range(len(zoo))]
    return [sd for sd in out if permutation_plan(sd) is not None][:6]


@pytest.mark.parametrize("rounds", [0, 1])
def test_permuting_hidden_neurons_leaves_the_representation_unchanged(tiny_zoo: Path, rounds: int) -> None:
    enc = _encoder(rounds)
    models = _subject_models(tiny_zoo)
    assert len(models) >= 3
    gen = torch.Generator().manual_seed(1)
    for sd in models:
        permuted = permute_neurons(sd, gen)
        changed = [k for k in sd if sd[k].shape == permuted[k].shape and not torch.equal(sd[k], permuted[k])]
        assert changed, "the permutation must actually move weights"
        a, b = _represent(enc, [sd]), _represent(enc, [permuted])
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), (a - b).abs().max()
        # the check can fail: permuting one layer's neurons without the next layer's inputs (and norms)
        # changes the function, and the representation sees it
        first = next(k for k, v in sd.items() if v.ndim >= 2)
        perm = torch.randperm(sd[first].shape[0], generator=gen)
        shuffled = dict(sd)
        shuffled[first] = sd[first][perm]
        assert not torch.allclose(a, _represent(enc, [shuffled]), atol=1e-4)


def test_a_batch_of_mixed_architectures_encodes_each_model_as_alone(tiny_zoo: Path) -> None:
    zoo = load_zoo(tiny_zoo)
    sds = [zoo.state_dict(i) for i in range(len(zoo))]
    enc = LoadedNeuronEncoder(_encoder(0))
    together = enc.encode(sds, batch_size=3)
    alone = torch.cat([enc.encode([sd]) for sd in sds])
    assert together.shape == (len(sds), enc.latent_dim)
    assert enc.latent_dim == 8 + 2 + 1  # latent + optimizer probabilities + accuracy
    assert torch.allclose(together, alone, atol=1e-5)


def test_bad_state_dicts_are_clear_errors() -> None:
    enc = LoadedNeuronEncoder(_encoder(0))
    with pytest.raises(InvalidInputError, match="no main layer"):
        enc.encode([{"bias": torch.zeros(3)}])
    with pytest.raises(InvalidInputError, match="non-finite"):
        enc.encode([{"fc.weight": torch.tensor([[float("nan"), 1.0]])}])
    deep = {f"l{i}.weight": torch.randn(4, 4) for i in range(70)}
    with pytest.raises(InvalidInputError, match="at most 64"):
        enc.encode([deep])
    # an extreme but finite weight does not turn into NaN
    sd = {"a.weight": torch.randn(8, 4), "b.weight": torch.randn(3, 8)}
    sd["a.weight"][0, 0] = 1e20
    assert torch.isfinite(enc.encode([sd])).all()


@pytest.fixture(scope="module")
def neuron_encoder(head_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("encoders") / "neurons"
    return pretrain_encoder(
        PretrainConfig(architecture="neurons", preset="tiny"), head_zoo, out, progress=False
    )


def test_pretrained_folder_is_format_3_and_reloads_identically(neuron_encoder: Path, head_zoo: Path) -> None:
    config = json.loads((neuron_encoder / "config.json").read_text())
    assert config["format_version"] == 3 and config["architecture"] == "neurons"
    names = {t["name"] for t in config["targets"]}
    assert {"test_accuracy", "optimizer", "log10_learning_rate"} <= names
    assert config["provenance"]["finished"] is True
    assert "neuron-level" in (neuron_encoder / "README.md").read_text()
    enc = load_encoder(neuron_encoder)
    assert isinstance(enc, LoadedNeuronEncoder)
    zoo = load_zoo(head_zoo)
    first = enc.encode(zoo)
    again = load_encoder(neuron_encoder).encode(zoo)
    assert first.shape == (len(zoo), enc.latent_dim) and torch.equal(first, again)
    assert enc.fingerprint() == load_encoder(neuron_encoder).fingerprint()


def test_other_format_versions_are_refused_clearly(neuron_encoder: Path, tmp_path: Path) -> None:
    for version in (1, 4):
        folder = tmp_path / f"v{version}"
        shutil.copytree(neuron_encoder, folder)
        config = json.loads((folder / "config.json").read_text())
        config["format_version"] = version
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(EncoderFormatError, match=r"format_version .* not supported.*reads 2 .* and 3"):
            load_encoder(folder)
    broken = tmp_path / "broken"
    shutil.copytree(neuron_encoder, broken)
    config = json.loads((broken / "config.json").read_text())
    config["encoder"]["d_model"] = 32  # weights no longer match the architecture
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderFormatError, match="does not match the architecture"):
        load_encoder(broken)


def test_token_only_options_are_refused_for_the_neuron_architecture() -> None:
    with pytest.raises(ConfigError, match="window only appl"):
        PretrainConfig(architecture="neurons", window=64).resolved()
    with pytest.raises(ConfigError, match="message_passing_rounds only applies"):
        PretrainConfig(message_passing_rounds=1).resolved()
    with pytest.raises(ConfigError, match="validation split picks the best epoch"):
        pretrain_encoder(
            PretrainConfig(architecture="neurons", preset="tiny", splits=["train", "validation"]),
            "builtin:tiny",
            Path("/nonexistent-never-written"),
            progress=False,
        )


def test_interrupted_pretraining_resumes_to_the_same_encoder(
    neuron_encoder: Path, head_zoo: Path, tmp_path: Path
) -> None:
    cfg = PretrainConfig(architecture="neurons", preset="tiny")  # 2 epochs: `neuron_encoder` ran straight
    straight = neuron_encoder
    assert cfg.resolved().epochs > 1  # the kill after epoch 1 below interrupts the run

    class Killed(Exception):
        pass

    def kill_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        pretrain_encoder(cfg, head_zoo, tmp_path / "resumed", progress=False, on_epoch_end=kill_after_first)
    with pytest.warns(UserWarning, match="interrupted"):
        load_encoder(tmp_path / "resumed")  # the interrupted encoder is usable but says so
    resumed = pretrain_encoder(cfg, head_zoo, tmp_path / "resumed", progress=False)
    a, b = load_encoder(straight), load_encoder(resumed)
    assert a.fingerprint() == b.fingerprint()
    assert a.provenance["history"] == b.provenance["history"] or [
        r["val_loss"] for r in a.provenance["history"]
    ] == [r["val_loss"] for r in b.provenance["history"]]


def test_heads_train_on_the_neuron_encoder_frozen_and_finetuned(
    neuron_encoder: Path, head_zoo: Path, tmp_path: Path
) -> None:
    for mode in ("frozen", "finetune"):
        cfg = TrainConfig(
            task="accuracy", zoo=str(head_zoo), encoder=str(neuron_encoder), mode=mode, allow_overlap=True
        )
        cfg.optim.epochs = 2
        # the encoder was pretrained supervised on this zoo's train models: in-sample predictions, warned
        with pytest.warns(UserWarning, match=r"pretrained supervised on \d+ of the \d+ train models"):
            result = train(cfg, tmp_path / mode, progress=False)
        assert result.epochs_run == 2 and set(result.test) >= {"r2", "kendall_tau"}
    attention = TrainConfig(
        task="accuracy",
        zoo=str(head_zoo),
        encoder=str(neuron_encoder),
        allow_overlap=True,
        head=HeadConfig(pooling="attention"),
    )
    with pytest.raises(ConfigError, match="no per-token latents"):
        train(attention, tmp_path / "attention", progress=False)


def test_features_are_computed_once_per_model_and_reused(
    tiny_zoo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fine-tuning embeds the same parsed models every epoch: their features are kept, not recomputed."""
    import zooprobe.encoder.neuron_loader as loader

    calls: list[int] = []
    real = loader.featurize_batch

    def counting(stacked: list, edges: bool = True) -> object:
        calls.append(int(stacked[0].weight.shape[0]))
        return real(stacked, edges=edges)

    monkeypatch.setattr(loader, "featurize_batch", counting)
    enc = LoadedNeuronEncoder(_encoder(0))
    zoo = load_zoo(tiny_zoo)
    models = [enc.tokenize(zoo.state_dict(i)) for i in range(len(zoo))]
    with torch.no_grad():
        first = enc.embed(models, batch_size=4).pooled
        assert sum(calls) == len(models) and all(m.features is not None for m in models)
        again = enc.embed(models[::-1], batch_size=3).pooled.flip(0)  # other batches, cached features
    assert sum(calls) == len(models)  # nothing featurized the second time
    assert torch.allclose(first, again, atol=1e-6)
    assert all(e is None for m in models for e in m.features.edges)  # DeepSets reads no edge channels


def test_a_message_passing_encoder_does_not_reuse_features_without_edges(tiny_zoo: Path) -> None:
    zoo = load_zoo(tiny_zoo)
    models = [neuron_model(zoo.state_dict(i)) for i in range(4)]
    deepsets, mp = LoadedNeuronEncoder(_encoder(0)), LoadedNeuronEncoder(_encoder(1))
    with torch.no_grad():
        deepsets.embed(models)  # keeps features without edge channels
        reused = mp.embed(models).pooled
        fresh = mp.embed([neuron_model(zoo.state_dict(i)) for i in range(4)]).pooled
    assert all(m.features.with_edges for m in models)
    assert torch.allclose(reused, fresh, atol=1e-6)
