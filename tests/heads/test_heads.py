"""Heads, targets, EncoderWithHead and the representation cache, on a real tiny zoo and encoder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from zooprobe import load_zoo
from zooprobe.api import load_encoder
from zooprobe.errors import InvalidInputError
from zooprobe.heads.encoder_with_head import EncoderWithHead
from zooprobe.heads.prediction_heads import HeadConfig, build_head
from zooprobe.heads.targets import build_task_spec, count_missing, target_arrays
from zooprobe.representations.cache import RepresentationCache, compute_representations
from zooprobe.symmetry import canonical_state_dicts


def _meta(head_zoo: Path) -> pd.DataFrame:
    return load_zoo(head_zoo).final().split("train").metadata()


def test_targets_come_from_the_data(head_zoo: Path) -> None:
    meta = _meta(head_zoo)
    patterns = build_task_spec("patterns", meta)
    assert set(patterns.names) == {
        "has_conv_layers",
        "has_batch_norm",
        "has_layer_norm",
        "has_dropout",
        "has_residual",
    }
    assert all(t.kind == "binary" for t in patterns.targets)

    hp = build_task_spec("hyperparameters", meta)
    kinds = {t.name: t.kind for t in hp.targets}
    assert kinds["learning_rate"] == kinds["weight_decay"] == "continuous"
    assert kinds["optimizer"] == kinds["activation"] == kinds["init"] == kinds["family"] == "categorical"
    lr = next(t for t in hp.targets if t.name == "learning_rate")
    assert lr.log10
    # standardized log10 learning rate of the train split: mean 0, std 1
    y = target_arrays(hp, meta).values["learning_rate"]
    assert abs(y.mean()) < 1e-9 and abs(y.std() - 1) < 1e-9
    np.testing.assert_allclose(lr.from_model_space(y), np.log10(meta["learning_rate"].to_numpy()))
    opt = next(t for t in hp.targets if t.name == "optimizer")
    assert set(opt.classes) == set(meta["optimizer"])


def test_zero_weight_decay_maps_to_the_documented_floor() -> None:
    meta = pd.DataFrame({"weight_decay": [0.0, 1e-4, 1e-3], "optimizer": ["sgd", "adam", "sgd"]})
    spec = build_task_spec("hyperparameters", meta, ["weight_decay"])
    t = spec.targets[0]
    assert t.log_floor == 1e-7
    np.testing.assert_allclose(t.to_metric_space(np.array([0.0, 1e-4])), [-7.0, -4.0])


def test_integer_columns_are_not_silently_regression() -> None:
    meta = pd.DataFrame({"batch_size": [32, 64, 128, 64], "has_x": [True, False, True, True]})
    spec = build_task_spec("hyperparameters", meta, ["batch_size"])
    assert spec.targets[0].kind == "categorical"
    assert spec.targets[0].classes == ("32", "64", "128")


def test_missing_targets_are_masked_not_filled(head_zoo: Path) -> None:
    meta = _meta(head_zoo).reset_index(drop=True)
    spec = build_task_spec("hyperparameters", meta, ["learning_rate", "optimizer"])
    broken = meta.copy()
    broken.loc[[0, 3], "learning_rate"] = np.nan
    broken.loc[[1, 3], "optimizer"] = None
    broken.loc[5, "optimizer"] = "lion"  # a class the head never saw: missing, not a wrong class
    arrays = target_arrays(spec, broken)
    assert count_missing(spec, arrays) == {"learning_rate": 2, "optimizer": 3}
    assert np.isnan(arrays.values["learning_rate"][[0, 3]]).all()
    assert (arrays.values["optimizer"][[1, 3, 5]] == -1).all()

    torch.manual_seed(0)
    head = build_head(spec, HeadConfig(hidden_sizes=[8], dropout=0.0), 6)
    x = torch.randn(len(meta), 6)
    out = head({"pooled": x})
    targets = {
        "learning_rate": torch.tensor(arrays.values["learning_rate"], dtype=torch.float32),
        "optimizer": torch.tensor(arrays.values["optimizer"]),
    }
    loss, parts = head.loss(out, targets)
    keep_lr = ~np.isnan(arrays.values["learning_rate"])
    keep_opt = arrays.values["optimizer"] >= 0
    expected_lr = torch.nn.functional.mse_loss(
        out["learning_rate"][keep_lr], targets["learning_rate"][keep_lr]
    )
    expected_opt = torch.nn.functional.cross_entropy(
        out["optimizer"][keep_opt], targets["optimizer"][keep_opt]
    )
    assert torch.allclose(parts["learning_rate"], expected_lr)
    assert torch.allclose(parts["optimizer"], expected_opt)
    assert torch.allclose(loss, (expected_lr + expected_opt) / 2)
    assert math.isfinite(loss.item())


def test_unknown_target_and_empty_task_errors(head_zoo: Path) -> None:
    meta = _meta(head_zoo)
    with pytest.raises(InvalidInputError, match="not zoo fields"):
        build_task_spec("accuracy", meta, ["test_acc"])
    with pytest.raises(InvalidInputError, match="no boolean has_"):
        build_task_spec("patterns", meta.drop(columns=[c for c in meta.columns if c.startswith("has_")]))


def _model(head_encoder: Path, head_zoo: Path, mode: str, **kwargs: object) -> EncoderWithHead:
    enc = load_encoder(head_encoder)
    spec = build_task_spec("accuracy", _meta(head_zoo))
    torch.manual_seed(0)
    head = build_head(spec, HeadConfig(hidden_sizes=[16]), enc.latent_dim)
    return EncoderWithHead(enc, head, mode, **kwargs)  # type: ignore[arg-type]


def _step(model: EncoderWithHead, head_zoo: Path) -> dict[str, torch.Tensor]:
    zoo = load_zoo(head_zoo).final().split("train")
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    tms = [model.loaded.tokenize(zoo.state_dict(i)) for i in range(8)]
    y = torch.tensor(zoo.metadata()["test_accuracy"].to_numpy()[:8], dtype=torch.float32)
    opt = torch.optim.AdamW(model.param_groups(1e-2, 0.0))
    model.train()
    out = model(tokenized=tms)
    loss = ((out["test_accuracy"] - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return before


def test_frozen_mode_never_changes_the_encoder(head_encoder: Path, head_zoo: Path) -> None:
    model = _model(head_encoder, head_zoo, "frozen")
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert [g["name"] for g in model.param_groups(1e-3, 0.1)] == ["head", "head_no_decay"]
    before = _step(model, head_zoo)
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.encoder.training  # frozen encoder stays in eval mode even in model.train()


def test_finetune_trains_the_encoder_at_a_fraction_of_the_lr(head_encoder: Path, head_zoo: Path) -> None:
    model = _model(head_encoder, head_zoo, "finetune")
    groups = {g["name"]: g["lr"] for g in model.param_groups(1e-2, 0.1)}
    assert groups["head"] == pytest.approx(1e-2) and groups["encoder"] == pytest.approx(1e-3)
    before = _step(model, head_zoo)
    after = model.encoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("blocks.0.") for k in changed) and any(
        k.startswith("token_embed") for k in changed
    )
    assert not any(k.startswith("dec_") for k in changed)  # the reconstruction decoder is not trained


def test_finetune_top_layers_only(head_encoder: Path, head_zoo: Path) -> None:
    model = _model(head_encoder, head_zoo, "finetune", unfreeze_top_layers=1)
    n_blocks = len(model.encoder.blocks)
    before = _step(model, head_zoo)
    after = model.encoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith(f"blocks.{n_blocks - 1}.") for k in changed)
    assert not any(k.startswith(("token_embed", "positions")) for k in changed)
    if n_blocks > 1:
        assert not any(k.startswith("blocks.0.") for k in changed)


def test_attention_pooling_ignores_padding(head_encoder: Path, head_zoo: Path) -> None:
    enc = load_encoder(head_encoder)
    spec = build_task_spec("patterns", _meta(head_zoo))
    torch.manual_seed(0)
    head = build_head(spec, HeadConfig(pooling="attention", dropout=0.0), enc.latent_dim).eval()
    zoo = load_zoo(head_zoo).final()
    reps = compute_representations(enc, zoo.select([0, 1, 2]), token_outputs=True, progress=False)
    assert reps.tokens is not None
    from zooprobe.heads.encoder_with_head import pad_tokens

    tokens, mask = pad_tokens(reps.tokens)
    alone = head({"tokens": tokens[:1, : int(mask[0].sum())], "token_mask": mask[:1, : int(mask[0].sum())]})
    padded = head(
        {
            "tokens": torch.cat([tokens[:1], torch.full((1, 7, tokens.shape[-1]), 9.0)], dim=1),
            "token_mask": torch.cat([mask[:1], torch.zeros(1, 7, dtype=torch.bool)], dim=1),
        }
    )
    for name in spec.names:
        assert torch.allclose(alone[name], padded[name], atol=1e-5)


def test_representation_cache_hits_misses_and_repairs(
    head_encoder: Path, head_zoo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    enc = load_encoder(head_encoder)
    zoo = load_zoo(head_zoo).final().split("validation")
    cache = RepresentationCache(tmp_path / "reps")
    stats: dict[str, object] = {}
    first = cache.get(enc, zoo, progress=False, stats=stats)
    assert stats["hit"] is False
    # the cache encodes every model in its canonical form (`zooprobe.symmetry.canonical_form`)
    assert torch.equal(first.pooled, enc.encode(list(canonical_state_dicts(zoo.state_dicts()))))
    second = cache.get(enc, zoo, progress=False, stats=stats)
    assert stats["hit"] is True and torch.equal(first.pooled, second.pooled)

    # another selection of models is another entry
    cache.get(enc, zoo.select([0, 1]), progress=False, stats=stats)
    assert stats["hit"] is False

    # changed encoder weights: a miss, and different representations
    with torch.no_grad():
        enc.encoder.token_embed.weight.mul_(1.5)
    changed = cache.get(enc, zoo, progress=False, stats=stats)
    assert stats["hit"] is False and not torch.equal(changed.pooled, first.pooled)

    # a corrupt entry is detected, reported and rebuilt
    path = Path(str(stats["path"]))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        repaired = cache.get(enc, zoo, progress=False, stats=stats)
    assert stats["hit"] is False and "corrupt" in caplog.text
    assert torch.equal(repaired.pooled, changed.pooled)
    assert cache.get(enc, zoo, progress=False, stats=stats) is not None and stats["hit"] is True
