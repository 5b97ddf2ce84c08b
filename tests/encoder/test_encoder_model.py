"""Tests for zooprobe.encoder.model: shapes, padding invariance, positions, config, training step, windows."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from zooprobe.encoder import EncoderConfig, EncoderConfigError, EncoderOutput, WeightEncoder
from zooprobe.tokens import TokenizedModel, TokenizerConfig, WeightTokenizer, collate

TOKEN_SIZE = 8


def tiny_config(**overrides: object) -> EncoderConfig:
    base: dict[str, object] = {
        "token_size": TOKEN_SIZE,
        "d_model": 16,
        "n_layers": 2,
        "n_heads": 2,
        "d_ff": 32,
        "latent_dim": 8,
        "max_global_pos": 64,
        "max_layers": 8,
        "max_in_layer_pos": 64,
    }
    base.update(overrides)
    return EncoderConfig(**base)  # type: ignore[arg-type]


def tokenized_mlp(sizes: list[int], seed: int) -> TokenizedModel:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    sd = nn.Sequential(*layers).state_dict()
    return WeightTokenizer(TokenizerConfig(token_size=TOKEN_SIZE)).tokenize(sd)


def make_encoder(seed: int = 0, **overrides: object) -> WeightEncoder:
    torch.manual_seed(seed)
    return WeightEncoder(tiny_config(**overrides)).eval()


def run(model: WeightEncoder, batch: dict[str, torch.Tensor]) -> EncoderOutput:
    return model(batch["tokens"], batch["mask"], batch["positions"], batch["attention_mask"])


def pad_batch(batch: dict[str, torch.Tensor], extra: int) -> dict[str, torch.Tensor]:
    """Append `extra` padding positions (with junk token values, which the masks must neutralise)."""
    b, _, t = batch["tokens"].shape
    return {
        "tokens": torch.cat([batch["tokens"], torch.randn(b, extra, t) * 100], dim=1),
        "mask": torch.cat([batch["mask"], torch.zeros(b, extra, t, dtype=torch.bool)], dim=1),
        "positions": torch.cat([batch["positions"], torch.zeros(b, extra, 3, dtype=torch.long)], dim=1),
        "attention_mask": torch.cat(
            [batch["attention_mask"], torch.zeros(b, extra, dtype=torch.bool)], dim=1
        ),
    }


@pytest.mark.parametrize("pooling", ["mean", "cls", "mean+cls"])
def test_output_shapes(pooling: str) -> None:
    model = make_encoder(pooling=pooling)
    batch = collate([tokenized_mlp([4, 6, 3], 0), tokenized_mlp([3, 2], 1)])
    out = run(model, batch)
    length = batch["tokens"].shape[1]
    assert out.token_states.shape == (2, length, 16)
    assert out.latent_tokens.shape == (2, length, 8)
    assert out.pooled.shape == (2, 8)
    short = int(batch["lengths"][1])
    assert out.token_states[1, short:].abs().sum() == 0
    assert out.latent_tokens[1, short:].abs().sum() == 0
    recon = model.decode(out.latent_tokens, batch["positions"], batch["attention_mask"])
    assert recon.shape == (2, length, TOKEN_SIZE)
    assert recon[1, short:].abs().sum() == 0


@pytest.mark.parametrize("pooling", ["mean", "cls", "mean+cls"])
def test_padding_does_not_change_real_outputs(pooling: str) -> None:
    model = make_encoder(pooling=pooling)
    tm = tokenized_mlp([5, 4, 3], 0)
    n = tm.num_tokens
    alone = run(model, collate([tm]))
    padded = run(model, pad_batch(collate([tm]), extra=13))
    torch.testing.assert_close(padded.token_states[:, :n], alone.token_states, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.latent_tokens[:, :n], alone.latent_tokens, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.pooled, alone.pooled, atol=1e-5, rtol=0)
    # batched with a longer model (collate's own padding) gives the same as alone
    batched = run(model, collate([tm, tokenized_mlp([9, 8, 7], 1)]))
    torch.testing.assert_close(batched.pooled[:1], alone.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.token_states[:1, :n], alone.token_states, atol=1e-5, rtol=0)


def test_padded_entries_within_a_token_are_ignored() -> None:
    model = make_encoder()
    batch = collate([tokenized_mlp([5, 3], 0)])  # rows of 6 values: 2 padded entries per token
    junk = dict(batch)
    junk["tokens"] = torch.where(batch["mask"], batch["tokens"], torch.full_like(batch["tokens"], 7.0))
    assert not torch.equal(junk["tokens"], batch["tokens"])
    torch.testing.assert_close(run(model, junk).pooled, run(model, batch).pooled, atol=0, rtol=0)


def test_determinism() -> None:
    batch = collate([tokenized_mlp([4, 6, 3], 0), tokenized_mlp([3, 2], 1)])
    a, b = make_encoder(seed=3), make_encoder(seed=3)
    out_a, out_b = run(a, batch), run(b, batch)
    assert torch.equal(out_a.pooled, out_b.pooled)
    assert torch.equal(run(a, batch).token_states, out_a.token_states)
    assert not torch.equal(run(make_encoder(seed=4), batch).pooled, out_a.pooled)


def test_positions_out_of_range() -> None:
    model = make_encoder(max_layers=2, max_in_layer_pos=4, max_global_pos=16)
    batch = collate([tokenized_mlp([5, 4], 0)])  # 4 rows x 1 token: in-layer positions 0..3
    run(model, batch)
    bad = dict(batch)
    bad["positions"] = batch["positions"].clone()
    bad["positions"][0, 0, 1] = 2
    with pytest.raises(ValueError, match=r"layer index.*max_layers is 2"):
        run(model, bad)
    bad["positions"] = batch["positions"].clone()
    bad["positions"][0, 0, 2] = 4
    with pytest.raises(ValueError, match=r"in-layer index.*max_in_layer_pos is 4"):
        run(model, bad)
    bad["positions"] = batch["positions"].clone()
    bad["positions"][0, 0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        run(model, bad)
    # the global index wraps around instead of failing
    wrapped = dict(batch)
    wrapped["positions"] = batch["positions"].clone()
    wrapped["positions"][..., 0] += 16 * 3
    assert torch.equal(run(model, wrapped).pooled, run(model, batch).pooled)


def test_input_validation() -> None:
    model = make_encoder()
    batch = collate([tokenized_mlp([3, 2], 0)])
    with pytest.raises(ValueError, match=r"EncoderConfig\.token_size"):
        model(batch["tokens"][..., :4], batch["mask"][..., :4], batch["positions"], batch["attention_mask"])
    with pytest.raises(ValueError, match="attention_mask"):
        model(batch["tokens"], batch["mask"], batch["positions"], batch["attention_mask"].float())


def test_config_round_trip_and_validation() -> None:
    cfg = tiny_config(pooling="mean+cls", dropout=0.1, decoder_layers=0)
    assert EncoderConfig.from_json(cfg.to_json()) == cfg
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert EncoderConfig(dropout=0).dropout == 0.0 and isinstance(EncoderConfig(dropout=0).dropout, float)
    good = cfg.to_dict()
    with pytest.raises(EncoderConfigError, match=r"unknown field.*'dmodel'"):
        EncoderConfig.from_dict({**good, "dmodel": 8})
    missing = dict(good)
    del missing["latent_dim"]
    with pytest.raises(EncoderConfigError, match=r"missing field.*'latent_dim'"):
        EncoderConfig.from_dict(missing)
    with pytest.raises(EncoderConfigError, match=r"EncoderConfig\.n_layers: expected an int"):
        EncoderConfig.from_dict({**good, "n_layers": 2.0})
    with pytest.raises(EncoderConfigError, match=r"EncoderConfig\.n_heads: d_model \(10\)"):
        EncoderConfig(d_model=10, n_heads=4)
    with pytest.raises(EncoderConfigError, match=r"EncoderConfig\.pooling"):
        EncoderConfig(pooling="max")  # type: ignore[arg-type]
    with pytest.raises(EncoderConfigError, match=r"EncoderConfig\.dropout"):
        EncoderConfig(dropout=1.0)
    with pytest.raises(EncoderConfigError, match=r"EncoderConfig\.max_layers: must be >= 1"):
        EncoderConfig(max_layers=0)
    with pytest.raises(EncoderConfigError, match="invalid JSON"):
        EncoderConfig.from_json("[")


@pytest.mark.parametrize("pooling", ["mean", "mean+cls"])
def test_forward_backward_on_two_tiny_mlps(pooling: str) -> None:
    torch.manual_seed(0)
    model = WeightEncoder(tiny_config(pooling=pooling, dropout=0.1)).train()
    batch = collate([tokenized_mlp([4, 6, 3], 0), tokenized_mlp([3, 2], 1)])
    out = run(model, batch)
    recon = model.decode(out.latent_tokens, batch["positions"], batch["attention_mask"])
    real = batch["mask"].float()
    loss = ((recon - batch["tokens"]) ** 2 * real).sum() / real.sum() + out.pooled.pow(2).mean()
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    nonzero = [name for name, g in grads.items() if g is not None and g.abs().sum() > 0]
    assert len(nonzero) >= 0.9 * len(grads)
    if pooling == "mean+cls":
        assert model.cls_token is not None and model.cls_token.grad is not None
        assert model.cls_token.grad.abs().sum() > 0


def test_encode_windows() -> None:
    model = make_encoder()
    tm = tokenized_mlp([20, 12, 6], 0)  # 12 rows x 3 tokens + 6 rows x 2 tokens = 48 tokens
    assert tm.num_tokens == 48
    full = run(model, collate([tm])).pooled[0]
    assert torch.equal(model.encode_windows(tm, window=48), full)
    assert torch.equal(model.encode_windows(tm, window=1000), full)
    windowed = model.encode_windows(tm, window=10, batch_windows=2)
    assert windowed.shape == (8,) and torch.isfinite(windowed).all()
    torch.testing.assert_close(
        model.encode_windows(tm, window=10, batch_windows=5), windowed, atol=1e-5, rtol=0
    )
    model.train()
    model.encode_windows(tm, window=10)
    assert model.training
    empty = WeightTokenizer(TokenizerConfig(token_size=TOKEN_SIZE)).tokenize({})
    with pytest.raises(ValueError, match="no tokens"):
        model.encode_windows(empty, window=10)
    with pytest.raises(
        ValueError, match=r"in-layer index\) reaches 35 but EncoderConfig\.max_in_layer_pos is 32"
    ):
        make_encoder(max_in_layer_pos=32).encode_windows(tm, window=10)


def test_flops_per_forward() -> None:
    model = make_encoder(n_layers=1, pooling="mean")
    d, t, f, lat, n = 16, TOKEN_SIZE, 32, 8, 10
    expected = 2 * n * 2 * t * d + (2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d + 4 * n * d * f)
    expected += 2 * n * d * lat + 2 * d * lat
    assert model.flops_per_forward(n, batch=1) == expected
    assert model.flops_per_forward(n, batch=3) == 3 * expected
    assert make_encoder(pooling="cls").flops_per_forward(100) > make_encoder().flops_per_forward(100)


# ---------------------------------------------------------------------------------------------- summaries
def summary_batch(tms: list[TokenizedModel], dim: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """`collate` plus random per-layer summaries (what `LoadedEncoder.tokenize` would attach)."""
    from zooprobe.tokens import collate_summaries

    g = torch.Generator().manual_seed(seed)
    batch = collate(tms)
    batch.update(collate_summaries([torch.randn(tm.num_layers, dim, generator=g) for tm in tms]))
    return batch


def run_s(model: WeightEncoder, batch: dict[str, torch.Tensor], **kw: torch.Tensor) -> EncoderOutput:
    return model(
        batch["tokens"],
        batch["mask"],
        batch["positions"],
        batch["attention_mask"],
        batch["summaries"],
        batch["summary_layers"],
        batch["summary_attention"],
        **kw,
    )


@pytest.mark.parametrize("pooling", ["mean", "cls", "mean+cls"])
def test_summary_tokens_shapes_padding_and_hiding(pooling: str) -> None:
    model = make_encoder(pooling=pooling, summary_tokens=True, summary_dim=6)
    tms = [tokenized_mlp([4, 6, 3], 0), tokenized_mlp([3, 2], 1)]  # 2 and 1 layers
    batch = summary_batch(tms)
    out = run_s(model, batch)
    assert out.pooled.shape == (2, 8) and out.summary_states is not None and out.summary_latents is not None
    assert out.summary_states.shape == (2, 2, 16) and out.summary_latents.shape == (2, 2, 8)
    assert torch.equal(out.summary_states[1, 1], torch.zeros(16))  # padded summary slot
    # each model alone gives the same outputs: padding (tokens and summaries) never leaks
    for i, tm in enumerate(tms):
        single = summary_batch([tm])
        single["summaries"] = batch["summaries"][i : i + 1, : tm.num_layers]
        torch.testing.assert_close(run_s(model, single).pooled[0], out.pooled[i], atol=1e-5, rtol=0)
    # the summaries are read: other values or a hidden summary change the embedding
    other = dict(batch, summaries=batch["summaries"] * 2)
    assert not torch.allclose(run_s(model, other).pooled, out.pooled)
    keep = batch["summary_attention"].clone()
    keep[0, 0] = False
    hidden = run_s(model, batch, summary_keep=keep).pooled
    assert not torch.allclose(hidden[0], out.pooled[0]) and torch.allclose(hidden[1], out.pooled[1])
    with pytest.raises(ValueError, match="summary_tokens"):
        run(model, batch)
    with pytest.raises(ValueError, match=r"EncoderConfig\.summary_dim"):
        run_s(model, dict(batch, summaries=batch["summaries"][..., :4]))


def test_summary_tokens_train_and_window() -> None:
    torch.manual_seed(0)
    model = WeightEncoder(tiny_config(summary_tokens=True, summary_dim=6)).train()
    batch = summary_batch([tokenized_mlp([4, 6, 3], 0), tokenized_mlp([3, 2], 1)])
    out = run_s(model, batch)
    assert model.summary_out is not None and out.summary_latents is not None
    loss = out.pooled.pow(2).mean() + model.summary_out(out.summary_latents).pow(2).mean()
    loss.backward()
    assert model.summary_embed is not None and model.summary_embed.weight.grad is not None
    assert model.summary_embed.weight.grad.abs().sum() > 0
    # encode_windows feeds every window the model's summaries
    tm = tokenized_mlp([20, 12, 6], 0)
    tm.summaries = torch.randn(2, 6)
    model.eval()
    one = summary_batch([tm])
    one["summaries"] = tm.summaries[None]
    assert torch.equal(model.encode_windows(tm, window=48), run_s(model, one).pooled[0])
    assert torch.isfinite(model.encode_windows(tm, window=10)).all()
    assert model.flops_per_forward(10, 1, n_summary=2) > model.flops_per_forward(10, 1)
    with pytest.raises(ValueError, match="no summaries"):
        model.encode_windows(tokenized_mlp([3, 2], 0), window=10)
    cfg = tiny_config(summary_tokens=True, summary_dim=6)
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
