"""Tests for encoder pretraining: augmentations (function-preserving permutations), loss, buckets, resume."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from zooprobe.api import pretrain_encoder
from zooprobe.encoder.augment import (
    erase_tokens,
    is_permutable,
    noise_state_dict,
    noise_tokens,
    permute_neurons,
)
from zooprobe.errors import ConfigError
from zooprobe.tokens import TokenizerConfig, WeightTokenizer
from zooprobe.training.pretrain import (
    STATE_FILE,
    PretrainConfig,
    length_buckets,
    nt_xent,
    training_history,
)
from zooprobe.zoo.models import SubjectModel
from zooprobe.zoo.space import ArchSpec

# ---------------------------------------------------------------------------------------------- permutations
KINDS = list(
    itertools.product(["mlp", "cnn"], ["digits", "mnist1d"], [False, True], [False, True], [False, True])
)


def _randomized_subject(family: str, task: str, bn: bool, ln: bool, residual: bool) -> SubjectModel:
    shape = (1, 8, 8) if task == "digits" else (1, 40)
    arch = ArchSpec(task, family, 3, 6, bn, ln, shape, 10)
    model = SubjectModel(arch, "tanh", dropout=0.2, residual=residual)
    with torch.no_grad():  # non-trivial values everywhere, BN running statistics included
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                if name.endswith("running_var"):
                    tensor.copy_(torch.rand_like(tensor) + 0.5)
                else:
                    tensor.copy_(torch.randn_like(tensor) * 0.5)
    return model.eval()


@pytest.mark.parametrize(("family", "task", "bn", "ln", "residual"), KINDS)
def test_permutation_preserves_function(family: str, task: str, bn: bool, ln: bool, residual: bool) -> None:
    torch.manual_seed(KINDS.index((family, task, bn, ln, residual)))
    model = _randomized_subject(family, task, bn, ln, residual)
    x = torch.randn(7, *model.arch.input_shape)
    sd = model.state_dict()
    assert is_permutable(sd)
    permuted = permute_neurons(sd, torch.Generator().manual_seed(3))
    assert list(permuted) == list(sd)
    changed = [k for k in sd if not torch.equal(sd[k], permuted[k])]
    assert changed, "the permutation left every tensor unchanged"
    assert any(k.startswith(("layers.1.linear", "blocks.1.conv")) for k in changed)
    other = SubjectModel(model.arch, "tanh", dropout=0.2, residual=residual)
    other.load_state_dict(permuted, strict=True)
    with torch.no_grad():
        assert torch.allclose(model(x), other.eval()(x), atol=1e-5)
    for name in sd:  # same multiset of values in every tensor: a permutation, not new values
        assert torch.equal(sd[name].flatten().sort().values, permuted[name].flatten().sort().values)


def test_unrecognised_state_dicts_are_left_unpermuted() -> None:
    g = torch.Generator().manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).state_dict()
    mlp = _randomized_subject("mlp", "digits", True, False, False).state_dict()
    widths_differ = dict(mlp)
    widths_differ["layers.1.linear.weight"] = torch.randn(5, 6)
    extra = {**mlp, "layers.0.extra": torch.randn(6)}
    renamed = {k.replace("head", "classifier"): v for k, v in mlp.items()}
    for sd in (seq, widths_differ, extra, renamed, {}):
        assert not is_permutable(sd)
        out = permute_neurons(sd, g)
        assert list(out) == list(sd)
        assert all(out[k] is sd[k] for k in sd)


def test_noise_and_erasing() -> None:
    g = torch.Generator().manual_seed(0)
    sd = _randomized_subject("cnn", "digits", True, True, False).state_dict()
    noisy = noise_state_dict(sd, 0.1, g)
    assert torch.equal(noisy["blocks.0.bn.running_var"], sd["blocks.0.bn.running_var"])
    assert torch.equal(noisy["blocks.0.bn.num_batches_tracked"], sd["blocks.0.bn.num_batches_tracked"])
    rel = (noisy["blocks.1.conv.weight"] / sd["blocks.1.conv.weight"] - 1).std()
    assert 0.05 < float(rel) < 0.2
    tokens = torch.randn(50, 8)
    mask = torch.ones(50, 8, dtype=torch.bool)
    mask[-5:, 3:] = False
    tokens = tokens * mask
    nt = noise_tokens(tokens, mask, 0.1, g)
    assert torch.all(nt[~mask] == 0) and not torch.equal(nt, tokens)
    erased = erase_tokens(tokens, mask, 0.3, g)
    zero_rows = (erased == 0).all(dim=1)
    assert 3 <= int(zero_rows.sum()) <= 30
    assert torch.equal(erased[~zero_rows], tokens[~zero_rows])
    with pytest.raises(ValueError, match="ratio"):
        erase_tokens(tokens, mask, 1.5, g)


# ---------------------------------------------------------------------------------------------- pieces
def test_length_buckets_cover_every_model_once_and_reduce_padding() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(10, 500, (203,), generator=g).tolist()
    batches = length_buckets(lengths, 16, g)
    assert len(batches) == math.ceil(203 / 16)
    assert sorted(i for b in batches for i in b) == list(range(203))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    naive = sum(
        len(b) * max(lengths[i] for i in b)
        for b in (list(range(s, min(s + 16, 203))) for s in range(0, 203, 16))
    )
    assert padded < 0.8 * naive


def test_nt_xent() -> None:
    z = torch.randn(6, 8)
    assert float(nt_xent(z, z, 0.1)) < float(nt_xent(z, torch.randn(6, 8), 0.1))
    assert float(nt_xent(z[:1], z[:1], 0.1)) == 0.0  # one model: no negatives, no NaN


def test_config_presets_and_validation() -> None:
    for preset in ("tiny", "small", "bench"):
        cfg = PretrainConfig(preset=preset).resolved()  # type: ignore[arg-type]
        assert cfg.encoder_config().token_size == cfg.token_size
    tiny = PretrainConfig(preset="tiny").resolved()
    assert (tiny.d_model, tiny.n_layers, tiny.epochs) == (32, 1, 2)
    assert PretrainConfig(preset="tiny", epochs=5).resolved().epochs == 5
    from zooprobe.encoder import EncoderConfig

    enc = EncoderConfig(token_size=8, d_model=24, n_layers=1, n_heads=3, d_ff=48, latent_dim=12)
    cfg = PretrainConfig(preset="tiny", encoder=enc).resolved()
    assert cfg.encoder_config() == enc and cfg.token_size == 8
    assert PretrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="mask_ratio"):
        PretrainConfig(preset="tiny", mask_ratio=0.0).resolved()
    with pytest.raises(ConfigError, match="n_heads"):
        PretrainConfig(preset="tiny", n_heads=5).resolved()
    with pytest.raises(ConfigError, match="unknown"):
        PretrainConfig.from_dict({"presett": "tiny"})
    with pytest.raises(ConfigError, match="reconstruction"):
        PretrainConfig(preset="tiny", reconstruction="l1").resolved()  # type: ignore[arg-type]


def test_per_model_reconstruction_loss_runs(tiny_zoo: Path, tmp_path: Path) -> None:
    cfg = PretrainConfig(preset="tiny", epochs=1, reconstruction="per_model")
    history = training_history(pretrain_encoder(cfg, tiny_zoo, tmp_path, progress=False))
    assert math.isfinite(history[0]["train_loss"]) and math.isfinite(history[0]["val_loss"])


# ---------------------------------------------------------------------------------------------- training
def test_pretraining_loss_decreases(tiny_zoo: Path, tmp_path: Path) -> None:
    out = pretrain_encoder(
        PretrainConfig(preset="tiny", epochs=6, lr=5e-3), tiny_zoo, tmp_path, progress=False
    )
    history = training_history(out)
    assert [r["epoch"] for r in history] == list(range(1, 7))
    first, last = history[0], history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert last["val_loss"] < first["val_loss"]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in history)
    for name in ("config.json", "model.safetensors", "README.md", "last/config.json", STATE_FILE):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / STATE_FILE))


def test_resume_after_interruption_matches_uninterrupted_run(tiny_zoo: Path, tmp_path: Path) -> None:
    cfg = PretrainConfig(preset="tiny", epochs=3)
    full = pretrain_encoder(cfg, tiny_zoo, tmp_path / "full", progress=False)

    class Interrupted(Exception):
        pass

    def stop_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        pretrain_encoder(cfg, tiny_zoo, tmp_path / "resumed", progress=False, on_epoch_end=stop_after_first)
    assert [r["epoch"] for r in training_history(tmp_path / "resumed")] == [1]
    resumed = pretrain_encoder(cfg, tiny_zoo, tmp_path / "resumed", progress=False)

    a, b = _state(full), _state(resumed)
    assert a.keys() == b.keys()
    for key in a:  # model, optimizer moments and RNG states, bit for bit
        assert torch.equal(a[key], b[key]), key
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in training_history(full)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in training_history(resumed)]
    wa, wb = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a finished run returns at once; another configuration is refused, resume=False starts over
    assert pretrain_encoder(cfg, tiny_zoo, resumed, progress=False) == resumed
    with pytest.raises(ConfigError, match="different configuration"):
        pretrain_encoder(PretrainConfig(preset="tiny", epochs=4), tiny_zoo, resumed, progress=False)
    pretrain_encoder(PretrainConfig(preset="tiny", epochs=1), tiny_zoo, resumed, resume=False, progress=False)
    assert [r["epoch"] for r in training_history(resumed)] == [1]


def test_permutations_leave_layer_summaries_unchanged() -> None:
    from zooprobe.tokens import raw_layer_summaries

    subject = _randomized_subject("cnn", "digits", True, True, True)
    sd = subject.state_dict()
    tok = WeightTokenizer(TokenizerConfig(token_size=8))
    layout = tok.tokenize(sd).layout
    permuted = permute_neurons(sd, torch.Generator().manual_seed(1))
    assert any(not torch.equal(sd[k], permuted[k]) for k in sd)
    torch.testing.assert_close(raw_layer_summaries(permuted, layout), raw_layer_summaries(sd, layout))


def test_summary_config_validation_and_loss(tiny_zoo: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="summary_dim"):
        PretrainConfig(preset="tiny", summary_dim=16).resolved()
    with pytest.raises(ConfigError, match="summary_mask_ratio"):
        PretrainConfig(preset="tiny", summary_mask_ratio=1.0).resolved()
    cfg = PretrainConfig(preset="tiny", epochs=1)
    history = training_history(pretrain_encoder(cfg, tiny_zoo, tmp_path / "on", progress=False))
    assert history[0]["train_summary_reconstruction"] > 0
    off = PretrainConfig(preset="tiny", epochs=1, summary_tokens=False)
    history = training_history(pretrain_encoder(off, tiny_zoo, tmp_path / "off", progress=False))
    assert history[0]["train_summary_reconstruction"] == 0.0
    assert json.loads((tmp_path / "off" / "config.json").read_text())["summaries"] is None


def test_torch_free_config_agrees_with_the_tokenizer() -> None:
    """`PretrainConfig` lives in a torch-free module (fast --help) and so states SUMMARY_DIM itself."""
    from zooprobe.tokens import SUMMARY_DIM
    from zooprobe.training import pretrain_config

    assert pretrain_config.SUMMARY_DIM == SUMMARY_DIM
    assert all(p["summary_dim"] == SUMMARY_DIM for p in pretrain_config.PRESETS.values())
