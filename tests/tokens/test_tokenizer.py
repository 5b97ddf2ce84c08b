"""Tests for zooprobe.tokens: exact round trips, token geometry, unknown tensors, normalization, batching."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from zooprobe.tokens import (
    NormalizationStats,
    TokenizedModel,
    TokenizerConfig,
    TokenizerError,
    WeightTokenizer,
    collate,
    detokenize,
    iter_windows,
    module_kinds_from_model,
)

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def assert_identical(actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """Same names in the same order, same shapes and dtypes, bit-identical values (so -0.0 counts)."""
    assert list(actual) == list(expected)
    for name, want in expected.items():
        got = actual[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        assert torch.equal(got, want), name
        if want.dtype in _INT_VIEW:
            assert torch.equal(got.view(_INT_VIEW[want.dtype]), want.view(_INT_VIEW[want.dtype])), name


def randomize(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """State dict of `model` with every float entry random (incl. BN running stats) and counters set."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            values = torch.randn(tensor.shape, generator=gen) * 3
            if name.endswith("running_var"):
                values = values.abs() + 0.1
            out[name] = values.to(tensor.dtype)
        else:
            out[name] = torch.randint(0, 10_000, tensor.shape, generator=gen, dtype=tensor.dtype)
    return out


def mlp_state_dict(
    sizes: list[int], seed: int, scale: float = 1.0, shift: float = 0.0
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        sd[f"body.{i}.weight"] = torch.randn(fan_out, fan_in, generator=gen) * scale * (i + 1) + shift
        sd[f"body.{i}.bias"] = torch.randn(fan_out, generator=gen) * 0.1 * scale - shift
    return sd


# ------------------------------------------------------------------------------------------------------
# random architectures


@st.composite
def modules(draw: st.DrawFn) -> nn.Module:
    kind = draw(
        st.sampled_from(
            ["linear", "conv1d", "conv2d", "conv3d", "convt2d", "bn1d", "bn2d", "ln", "gn", "emb"]
        )
    )
    small = st.integers(1, 6)
    bias = draw(st.booleans())
    module: nn.Module
    if kind == "linear":
        module = nn.Linear(draw(small), draw(small), bias=bias)
    elif kind == "conv1d":
        module = nn.Conv1d(draw(small), draw(small), draw(st.integers(1, 3)), bias=bias)
    elif kind == "conv2d":
        module = nn.Conv2d(draw(small), draw(small), draw(st.integers(1, 3)), bias=bias)
    elif kind == "conv3d":
        module = nn.Conv3d(draw(small), draw(small), 2, bias=bias)
    elif kind == "convt2d":
        module = nn.ConvTranspose2d(draw(small), draw(small), draw(st.integers(1, 3)), bias=bias)
    elif kind in ("bn1d", "bn2d"):
        cls = nn.BatchNorm1d if kind == "bn1d" else nn.BatchNorm2d
        module = cls(draw(small), affine=draw(st.booleans()), track_running_stats=draw(st.booleans()))
    elif kind == "ln":
        module = nn.LayerNorm(draw(small), elementwise_affine=draw(st.booleans()), bias=bias)
    elif kind == "gn":
        groups = draw(st.integers(1, 3))
        module = nn.GroupNorm(groups, groups * draw(st.integers(1, 3)))
    else:
        module = nn.Embedding(draw(st.integers(1, 12)), draw(small))
    return module.to(draw(st.sampled_from(FLOAT_DTYPES)))


@st.composite
def architectures(draw: st.DrawFn) -> nn.Module:
    layers = draw(st.lists(modules(), min_size=1, max_size=6))
    model: nn.Module = nn.Sequential(*layers)
    if draw(st.booleans()):  # deeper prefixes such as "body.0.1.weight"
        model = nn.ModuleDict({"body": nn.Sequential(model), "head": nn.Linear(3, 2)})
    return model


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=architectures(),
    seed=st.integers(0, 2**31 - 1),
    token_size=st.sampled_from([1, 3, 4, 32]),
    hints=st.booleans(),
)
def test_round_trip_is_exact_for_random_architectures(
    model: nn.Module, seed: int, token_size: int, hints: bool
) -> None:
    sd = randomize(model, seed)
    tok = WeightTokenizer(TokenizerConfig(token_size=token_size))
    tm = tok.tokenize(sd, module_kinds=module_kinds_from_model(model) if hints else None)
    assert tm.tokens.shape[1] == token_size
    assert not tm.skipped
    # padding is zero, every token has a real entry, and the mask covers exactly the parameters
    assert torch.all(tm.tokens[~tm.mask] == 0)
    assert bool(tm.mask.any(dim=1).all())
    tokenized_names = {m["name"] for layer in tm.layout["layers"] for m in layer["members"]}
    assert int(tm.mask.sum()) == sum(sd[n].numel() for n in tokenized_names)
    assert set(tm.passthrough) == {n for n in sd if n.endswith("num_batches_tracked")}
    assert tokenized_names | set(tm.passthrough) == set(sd)
    assert_identical(tok.detokenize(tm), sd)
    # the layout alone (as JSON) is enough to invert
    again = TokenizedModel(tm.tokens, tm.mask, tm.positions, json.loads(json.dumps(tm.layout)))
    assert_identical(detokenize(again), sd)


def test_special_values_survive_bit_exactly() -> None:
    for dtype in FLOAT_DTYPES:
        info = torch.finfo(dtype)
        values = [-0.0, 0.0, info.tiny, info.tiny / 4, -info.max, info.max, -info.eps, 1.0]
        weight = torch.tensor(values, dtype=torch.float64).reshape(2, 4).to(dtype)
        sd = {"fc.weight": weight, "fc.bias": torch.tensor([-0.0, 2.5]).to(dtype)}
        tok = WeightTokenizer(TokenizerConfig(token_size=3))
        assert_identical(tok.detokenize(tok.tokenize(sd)), sd)


# ------------------------------------------------------------------------------------------------------
# geometry


def test_linear_token_geometry() -> None:
    layer = nn.Linear(5, 3)
    sd = layer.state_dict()
    tm = WeightTokenizer(TokenizerConfig(token_size=4)).tokenize(sd)
    assert tm.tokens.shape == (6, 4)
    assert tm.mask.sum(dim=1).tolist() == [4, 2] * 3
    assert int(tm.mask.sum()) == 18
    assert tm.positions.tolist() == [[i, 0, i] for i in range(6)]
    w, b = sd["weight"], sd["bias"]
    assert torch.equal(tm.tokens[0], w[0, :4])
    assert torch.equal(tm.tokens[1], torch.stack([w[0, 4], b[0], torch.tensor(0.0), torch.tensor(0.0)]))
    assert tm.mask[1].tolist() == [True, True, False, False]
    assert tm.layout["layers"][0]["kind"] == "linear"


def test_positions_across_layers_and_columns_of_batchnorm() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 2), nn.BatchNorm2d(3), nn.Linear(4, 2, bias=False))
    sd = randomize(model, 0)
    tm = WeightTokenizer(TokenizerConfig(token_size=4)).tokenize(sd)
    # conv: 3 rows x (8 + 1) cols -> 3 tokens per row; bn: 3 rows x 4 cols -> 1; linear: 2 rows x 4 -> 1
    assert [layer["num_tokens"] for layer in tm.layout["layers"]] == [9, 3, 2]
    assert tm.positions[:, 0].tolist() == list(range(14))
    assert tm.positions[:, 1].tolist() == [0] * 9 + [1] * 3 + [2] * 2
    assert tm.positions[:, 2].tolist() == list(range(9)) + list(range(3)) + list(range(2))
    bn_tokens = tm.tokens[9:12]
    expected = torch.stack([sd[f"1.{r}"] for r in ("weight", "bias", "running_mean", "running_var")], dim=1)
    assert torch.equal(bn_tokens, expected)
    assert tm.passthrough == ("1.num_batches_tracked",)
    assert tm.passthrough_values()["1.num_batches_tracked"].item() == sd["1.num_batches_tracked"].item()


def test_conv_transpose_rows_are_output_channels() -> None:
    layer = nn.ConvTranspose2d(2, 5, 3)
    sd = randomize(layer, 1)
    tm = WeightTokenizer(TokenizerConfig(token_size=32)).tokenize(sd)
    info = tm.layout["layers"][0]
    assert (info["kind"], info["rows"], info["cols"]) == ("conv_transpose", 5, 2 * 9 + 1)
    assert torch.equal(tm.tokens[0, :18], sd["weight"][:, 0].reshape(-1))
    assert_identical(detokenize(tm), sd)


def test_attention_and_recurrent_weight_pairs_are_recognised() -> None:
    for model in (nn.TransformerEncoderLayer(8, 2, 16), nn.LSTM(3, 4, num_layers=2)):
        sd = randomize(model, 2)
        tm = WeightTokenizer().tokenize(sd)  # unknown="error": everything must be recognised
        assert_identical(detokenize(tm), sd)
    labels = [layer["label"] for layer in tm.layout["layers"]]
    assert labels[:2] == ["weight_ih_l0", "weight_hh_l0"]
    assert [m["name"] for m in tm.layout["layers"][0]["members"]] == ["weight_ih_l0", "bias_ih_l0"]


def test_kinds_from_hints_and_from_names() -> None:
    model = nn.ModuleDict(
        {
            "emb": nn.Embedding(4, 3),
            "fc": nn.Linear(3, 3, bias=False),
            "norm": nn.BatchNorm1d(3, track_running_stats=False),
            "ln": nn.LayerNorm(3),
        }
    )
    sd = randomize(model, 3)
    tok = WeightTokenizer()

    def kinds(tm: TokenizedModel) -> dict[str, str]:
        return {m["name"]: m["kind"] for layer in tm.layout["layers"] for m in layer["members"]}

    hinted = kinds(tok.tokenize(sd, module_kinds=module_kinds_from_model(model)))
    assert hinted == {
        "emb.weight": "embedding.weight",
        "fc.weight": "linear.weight",
        "norm.weight": "bn.weight",
        "norm.bias": "bn.bias",
        "ln.weight": "ln.weight",
        "ln.bias": "ln.bias",
    }
    guessed = kinds(tok.tokenize(sd))
    assert guessed["emb.weight"] == "embedding.weight"  # "emb" in the module name
    assert guessed["norm.weight"] == "ln.weight"  # no running stats and no "bn" in the name: a guess
    with pytest.raises(TokenizerError, match="module_kinds"):
        tok.tokenize(sd, module_kinds={"fc": "dense"})


# ------------------------------------------------------------------------------------------------------
# unknown tensors, scalars, non-finite values, dtypes


def _with_extras() -> dict[str, torch.Tensor]:
    sd = dict(nn.Linear(3, 2).state_dict())
    sd["pos_embedding"] = torch.randn(1, 5, 4)
    sd["temperature"] = torch.tensor(0.25)
    sd["index"] = torch.arange(4)
    return sd


def test_unknown_tensor_errors_by_default_naming_it() -> None:
    with pytest.raises(TokenizerError, match=r"'pos_embedding' \(shape \(1, 5, 4\)"):
        WeightTokenizer().tokenize(_with_extras())


def test_unknown_scalar_and_integer_buffer_error_by_default() -> None:
    sd = dict(nn.Linear(3, 2).state_dict())
    with pytest.raises(TokenizerError, match=r"'temperature'.*scalar"):
        WeightTokenizer().tokenize({**sd, "temperature": torch.tensor(0.25)})
    with pytest.raises(TokenizerError, match=r"'index'.*non-float"):
        WeightTokenizer().tokenize({**sd, "index": torch.arange(3)})


def test_unknown_skip_reports_and_keeps_the_rest_exact() -> None:
    sd = _with_extras()
    tm = WeightTokenizer(TokenizerConfig(unknown="skip")).tokenize(sd)
    assert tm.skipped == ("pos_embedding",)
    assert tm.layout["skipped"][0]["name"] == "pos_embedding"
    assert tm.passthrough == ("temperature", "index")
    expected = {k: v for k, v in sd.items() if k != "pos_embedding"}
    assert_identical(detokenize(tm), expected)


def test_unknown_rows_tokenizes_dim_zero() -> None:
    sd = _with_extras()
    tm = WeightTokenizer(TokenizerConfig(unknown="rows", token_size=8)).tokenize(sd)
    info = tm.layout["layers"][-1]
    assert (info["label"], info["kind"], info["rows"], info["cols"]) == ("pos_embedding", "unknown", 1, 20)
    assert not tm.skipped
    assert_identical(detokenize(tm), sd)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_error_naming_the_tensor(bad: float) -> None:
    sd = dict(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)).state_dict())
    sd["1.bias"] = sd["1.bias"].clone()
    sd["1.bias"][1] = bad
    with pytest.raises(TokenizerError, match=r"'1\.bias'.*non-finite"):
        WeightTokenizer().tokenize(sd)
    with pytest.raises(TokenizerError, match=r"'1\.bias'"):
        WeightTokenizer().fit_normalization([sd])


def test_float64_is_refused_unless_cast() -> None:
    sd = {k: v.double() for k, v in nn.Linear(3, 2).state_dict().items()}
    with pytest.raises(TokenizerError, match="'weight' is float64"):
        WeightTokenizer().tokenize(sd)
    tok = WeightTokenizer(TokenizerConfig(cast_float64=True))
    out = tok.detokenize(tok.tokenize(sd))
    assert all(out[k].dtype == torch.float64 for k in sd)
    assert all(torch.allclose(out[k], sd[k], rtol=1e-6, atol=0) for k in sd)


def test_non_tensor_entries_and_empty_state_dicts() -> None:
    with pytest.raises(TokenizerError, match="'w' is a list"):
        WeightTokenizer().tokenize({"w": [1.0, 2.0]})  # type: ignore[dict-item]
    tm = WeightTokenizer().tokenize({})
    assert tm.tokens.shape == (0, 32)
    assert detokenize(tm) == {}


# ------------------------------------------------------------------------------------------------------
# configuration


def test_tokenizer_config_round_trip_and_validation() -> None:
    cfg = TokenizerConfig(token_size=16, unknown="rows", cast_float64=True, norm_min_count=5, norm_eps=1e-6)
    assert TokenizerConfig.from_json(cfg.to_json()) == cfg
    assert TokenizerConfig.from_dict(cfg.to_dict()) == cfg
    good = cfg.to_dict()
    with pytest.raises(TokenizerError, match=r"unknown field.*'tokensize'"):
        TokenizerConfig.from_dict({**good, "tokensize": 8})
    missing = dict(good)
    del missing["unknown"]
    with pytest.raises(TokenizerError, match=r"missing field.*'unknown'"):
        TokenizerConfig.from_dict(missing)
    with pytest.raises(TokenizerError, match=r"TokenizerConfig\.token_size: expected an int"):
        TokenizerConfig.from_dict({**good, "token_size": "32"})
    with pytest.raises(TokenizerError, match=r"TokenizerConfig\.token_size: expected an int"):
        TokenizerConfig(token_size=True)
    with pytest.raises(TokenizerError, match=r"TokenizerConfig\.unknown: expected one of"):
        TokenizerConfig(unknown="drop")  # type: ignore[arg-type]
    with pytest.raises(TokenizerError, match=r"TokenizerConfig\.token_size: must be >= 1"):
        TokenizerConfig(token_size=0)
    with pytest.raises(TokenizerError, match="invalid JSON"):
        TokenizerConfig.from_json("{")


# ------------------------------------------------------------------------------------------------------
# normalization


def _zoo() -> list[dict[str, torch.Tensor]]:
    zoo = [mlp_state_dict([6, 5, 4], seed=s, scale=1 + s, shift=0.5 * s) for s in range(4)]
    for s, sd in enumerate(zoo):  # a BN layer too, so its 4 columns get 4 statistics
        bn = randomize(nn.BatchNorm1d(4), 10 + s)
        sd.update({f"norm.{k}": v for k, v in bn.items()})
    return zoo


def test_normalization_standardizes_the_fitting_zoo_per_kind() -> None:
    zoo = _zoo()
    tok = WeightTokenizer(TokenizerConfig(token_size=4))
    tok.fit_normalization(iter(zoo))  # a one-shot iterator: fitting is a single streaming pass
    tms = [tok.tokenize(sd, normalize=True) for sd in zoo]
    per_kind: dict[str, list[torch.Tensor]] = {}
    for tm in tms:
        assert tm.normalized
        for layer in tm.layout["layers"]:
            for member in layer["members"]:
                per_kind.setdefault(member["kind"], []).append(tm.values_of(member["name"]).flatten())
    assert set(per_kind) == {
        "linear.weight",
        "bias",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
    }
    for kind, chunks in per_kind.items():
        values = torch.cat(chunks).double()
        assert abs(values.mean().item()) < 1e-5, kind
        assert abs(values.std(correction=0).item() - 1) < 1e-5, kind
    bn_keys = [m["norm"]["key"] for m in tms[0].layout["layers"][-1]["members"]]
    assert len(set(bn_keys)) == 4
    assert tok.stats is not None
    assert {m["norm"]["mean"] for m in tms[0].layout["layers"][-1]["members"]} == {
        tok.stats.moments[k].mean for k in bn_keys
    }


def test_normalization_statistics_match_a_full_pass() -> None:
    zoo = _zoo()
    tok = WeightTokenizer()
    stats = tok.fit_normalization(zoo)
    weights = torch.cat([sd["body.1.weight"].flatten() for sd in zoo]).double()
    moments = stats.moments["name:linear.weight:body.1.weight"]
    assert moments.count == weights.numel()
    assert moments.mean == pytest.approx(weights.mean().item(), rel=1e-12, abs=1e-12)
    assert moments.std == pytest.approx(weights.std(correction=0).item(), rel=1e-12)
    # partial_fit over the same models gives the same statistics
    incremental = WeightTokenizer()
    for sd in zoo:
        incremental.partial_fit(sd)
    assert incremental.stats is not None
    for key, m in stats.moments.items():
        other = incremental.stats.moments[key]
        assert other.count == m.count
        assert other.mean == pytest.approx(m.mean, rel=1e-12, abs=1e-12)
        assert other.m2 == pytest.approx(m.m2, rel=1e-12)


def test_unseen_layers_fall_back_to_kind_then_global() -> None:
    tok = WeightTokenizer()
    tok.fit_normalization(_zoo())
    sd = mlp_state_dict([6, 5, 4], seed=99)
    sd["extra.weight"] = torch.randn(3, 4)  # unseen name, seen kind
    sd["extra.bias"] = torch.randn(3)
    sd["token_emb.weight"] = torch.randn(7, 2)  # unseen kind (embedding)
    tm = tok.tokenize(sd, normalize=True)
    keys = {m["name"]: m["norm"]["key"] for layer in tm.layout["layers"] for m in layer["members"]}
    assert keys["body.0.weight"] == "name:linear.weight:body.0.weight"
    assert keys["extra.weight"] == "kind:linear.weight"
    assert keys["extra.bias"] == "kind:bias"
    assert keys["token_emb.weight"] == "global"


def test_degenerate_statistics_fall_back() -> None:
    # freshly initialised BN: running_var is exactly 1 everywhere -> std 0 at name and kind level
    zoo = [dict(nn.BatchNorm1d(3).state_dict()) for _ in range(2)]
    tok = WeightTokenizer()
    tok.fit_normalization(zoo)
    tm = tok.tokenize(zoo[0], normalize=True)
    keys = {m["role"]: m["norm"]["key"] for m in tm.layout["layers"][0]["members"]}
    assert keys["running_var"] == "global"
    assert torch.isfinite(tm.tokens).all()


def test_normalized_round_trip_and_tokenizer_json() -> None:
    zoo = _zoo()
    tok = WeightTokenizer(TokenizerConfig(token_size=4))
    tok.fit_normalization(zoo)
    restored = WeightTokenizer.from_json(tok.to_json())
    assert restored.to_dict() == tok.to_dict()
    assert restored.stats == tok.stats
    for sd in zoo:
        a = tok.tokenize(sd, normalize=True)
        b = restored.tokenize(sd, normalize=True)
        assert torch.equal(a.tokens, b.tokens)
        out = restored.detokenize(a)
        assert list(out) == list(sd)
        for name, want in sd.items():
            assert out[name].dtype == want.dtype
            if want.is_floating_point():
                assert torch.allclose(out[name], want, rtol=1e-5, atol=1e-5), name
            else:
                assert torch.equal(out[name], want)
        raw = tok.tokenize(sd)
        assert not raw.normalized
        assert_identical(tok.detokenize(raw), sd)


def test_normalize_without_fit_and_bad_tokenizer_dicts() -> None:
    with pytest.raises(TokenizerError, match="fit_normalization"):
        WeightTokenizer().tokenize(nn.Linear(2, 2).state_dict(), normalize=True)
    with pytest.raises(TokenizerError, match="no state dicts"):
        WeightTokenizer().fit_normalization([])
    good = WeightTokenizer().to_dict()
    with pytest.raises(TokenizerError, match="format_version"):
        WeightTokenizer.from_dict({**good, "format_version": 99})
    with pytest.raises(TokenizerError, match="expected fields"):
        WeightTokenizer.from_dict({**good, "stats": None})
    with pytest.raises(TokenizerError, match=r"TokenizerConfig\.norm_eps"):
        WeightTokenizer.from_dict({**good, "config": {**good["config"], "norm_eps": "small"}})
    with pytest.raises(TokenizerError, match="entry 'global'"):
        WeightTokenizer.from_dict({**good, "normalization": {"global": [1, "x", 0.0]}})
    with pytest.raises(TokenizerError, match="token_size 4"):
        WeightTokenizer(TokenizerConfig(token_size=8)).detokenize(
            WeightTokenizer(TokenizerConfig(token_size=4)).tokenize(nn.Linear(2, 2).state_dict())
        )
    assert NormalizationStats.from_dict({}) == NormalizationStats()


# ------------------------------------------------------------------------------------------------------
# windows, batching, persistence


def test_iter_windows_covers_the_sequence() -> None:
    tm = WeightTokenizer(TokenizerConfig(token_size=4)).tokenize(mlp_state_dict([9, 7, 5], seed=0))
    n = tm.num_tokens
    windows = list(iter_windows(tm, window=8))
    assert [(w.start, w.stop) for w in windows] == [(s, min(s + 8, n)) for s in range(0, n, 8)]
    assert torch.equal(torch.cat([w.tokens for w in windows]), tm.tokens)
    overlapping = list(iter_windows(tm, window=8, overlap=3))
    assert [w.start for w in overlapping[:3]] == [0, 5, 10]
    assert overlapping[-1].stop == n
    assert all(w.num_tokens <= 8 for w in overlapping)
    assert torch.equal(overlapping[1].positions, tm.positions[5:13])
    with pytest.raises(TokenizerError, match="overlap"):
        list(iter_windows(tm, window=4, overlap=4))
    with pytest.raises(TokenizerError, match="window"):
        list(iter_windows(tm, window=0))


def test_collate_pads_to_the_longest() -> None:
    tok = WeightTokenizer(TokenizerConfig(token_size=4))
    short = tok.tokenize(mlp_state_dict([2, 2], seed=0))
    long = tok.tokenize(mlp_state_dict([5, 3, 2], seed=1))
    batch = collate([short, long])
    length = long.num_tokens
    assert batch["tokens"].shape == (2, length, 4)
    assert batch["mask"].shape == (2, length, 4)
    assert batch["positions"].shape == (2, length, 3)
    assert batch["lengths"].tolist() == [short.num_tokens, length]
    assert batch["attention_mask"].sum(dim=1).tolist() == [short.num_tokens, length]
    assert torch.equal(batch["tokens"][0, : short.num_tokens], short.tokens)
    assert batch["tokens"][0, short.num_tokens :].abs().sum() == 0
    assert not batch["mask"][0, short.num_tokens :].any()
    with pytest.raises(TokenizerError, match="empty batch"):
        collate([])
    with pytest.raises(TokenizerError, match="item 1"):
        collate([short, WeightTokenizer(TokenizerConfig(token_size=3)).tokenize(mlp_state_dict([2, 2], 0))])


def test_save_and_load_tokenized_model(tmp_path: Path) -> None:
    sd = randomize(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), 5)
    tm = WeightTokenizer(TokenizerConfig(token_size=4)).tokenize(sd)
    tm.save(tmp_path / "model.safetensors")
    loaded = TokenizedModel.load(tmp_path / "model.safetensors")
    assert torch.equal(loaded.tokens, tm.tokens) and torch.equal(loaded.mask, tm.mask)
    assert torch.equal(loaded.positions, tm.positions)
    assert loaded.layout == tm.layout and loaded.passthrough == tm.passthrough
    assert_identical(detokenize(loaded), sd)


# ------------------------------------------------------------------------------------------------------
# large networks


def resnet18_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with ResNet-18's names and shapes (11.7M parameters), random values, no torchvision."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, out: int, inp: int, k: int) -> None:
        sd[f"{name}.weight"] = torch.randn(out, inp, k, k, generator=gen) * 0.05

    def bn(name: str, c: int) -> None:
        sd[f"{name}.weight"] = torch.rand(c, generator=gen)
        sd[f"{name}.bias"] = torch.randn(c, generator=gen) * 0.1
        sd[f"{name}.running_mean"] = torch.randn(c, generator=gen) * 0.1
        sd[f"{name}.running_var"] = torch.rand(c, generator=gen) + 0.5
        sd[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    channels = 64
    for stage, width in enumerate([64, 128, 256, 512], start=1):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            inp = channels if block == 0 else width
            conv(f"{prefix}.conv1", width, inp, 3)
            bn(f"{prefix}.bn1", width)
            conv(f"{prefix}.conv2", width, width, 3)
            bn(f"{prefix}.bn2", width)
            if block == 0 and inp != width:
                conv(f"{prefix}.downsample.0", width, inp, 1)
                bn(f"{prefix}.downsample.1", width)
        channels = width
    sd["fc.weight"] = torch.randn(1000, 512, generator=gen) * 0.05
    sd["fc.bias"] = torch.zeros(1000)
    return sd


def _tokens_expected(sd: Mapping[str, torch.Tensor], token_size: int) -> Iterator[int]:
    for name, tensor in sd.items():
        if tensor.ndim >= 2:
            has_bias = name.replace("weight", "bias") in sd
            cols = tensor[0].numel() + int(has_bias)
            yield tensor.shape[0] * -(-cols // token_size)
        elif name.endswith("running_var"):
            yield tensor.shape[0]  # one BN token per channel (4 columns)


@pytest.mark.slow
def test_resnet18_sized_state_dict_tokenizes_fast_and_exactly() -> None:
    sd = resnet18_state_dict()
    assert sum(t.numel() for t in sd.values() if t.is_floating_point()) == 11_689_512 + 9_600
    tok = WeightTokenizer()
    start = time.perf_counter()
    tm = tok.tokenize(sd)
    elapsed = time.perf_counter() - start
    assert tm.num_tokens == sum(_tokens_expected(sd, 32))
    assert len(tm.passthrough) == 20
    assert_identical(tok.detokenize(tm), sd)
    tok.fit_normalization([sd])
    normalized = tok.tokenize(sd, normalize=True)
    assert torch.isfinite(normalized.tokens).all()
    windows = list(iter_windows(tm, window=4096))
    assert sum(w.num_tokens for w in windows) == tm.num_tokens
    print(f"tokenized {tm.num_tokens} tokens in {elapsed:.2f} s")
    assert elapsed < 10.0  # generous: the machine is shared; typical is well under a second


# ---------------------------------------------------------------------------------------------- summaries
def _summary_net(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(4, 3))
    return {k: (v * scale if v.is_floating_point() else v) for k, v in net.state_dict().items()}


def test_layer_summaries_are_raw_statistics_of_each_member() -> None:
    from zooprobe.tokens.statistics import value_stats
    from zooprobe.tokens.summary import MEMBER_SLOTS, SUMMARY_DIM, raw_layer_summaries

    sd = _summary_net(0)
    sd["1.running_mean"] = torch.randn(4)
    tok = WeightTokenizer(TokenizerConfig(token_size=4))
    tok.fit_normalization([sd])
    tm = tok.tokenize(sd, normalize=True)  # summaries read the raw state dict, not normalized tokens
    raw = raw_layer_summaries(sd, tm.layout)
    assert raw.shape == (3, SUMMARY_DIM) and raw.dtype == torch.float64
    w = sd["0.weight"].double().numpy().ravel()
    expected = [w.mean(), w.std(), *np.quantile(w, [0, 0.25, 0.5, 0.75, 1])]
    np.testing.assert_allclose(raw[0, :7].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(raw[0, 7:14].numpy(), value_stats(sd["0.bias"]), rtol=1e-12)
    assert torch.equal(raw[0, 14 : 7 * MEMBER_SLOTS], torch.zeros(14))  # conv: weight + bias only
    bn = raw[1]  # weight, bias, running_mean, running_var in layout order
    np.testing.assert_allclose(bn[14:21].numpy(), value_stats(sd["1.running_mean"]), rtol=1e-12)
    assert bn[-1] == 4 and bn[-4] == pytest.approx(np.log1p(16))
    assert raw[2, -3] == pytest.approx(np.log1p(3)) and raw[2, -2] == pytest.approx(np.log1p(5))
    big = value_stats(torch.arange(20_000_001, dtype=torch.float32))  # larger than torch.quantile allows
    assert big[2:] == pytest.approx([0, 5e6, 1e7, 1.5e7, 2e7])
    assert value_stats(torch.empty(0)).tolist() == [0.0] * 7


def test_layer_summarizer_is_zoo_level_strict_and_keeps_scale() -> None:
    from zooprobe.tokens import LayerSummarizer, raw_layer_summaries
    from zooprobe.tokens.summary import SUMMARY_DIM

    tok = WeightTokenizer(TokenizerConfig(token_size=4))
    zoo = [_summary_net(seed) for seed in range(12)]

    def raw(sd: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[str]]:
        layout = tok.tokenize(sd).layout
        return raw_layer_summaries(sd, layout), [layer["kind"] for layer in layout["layers"]]

    summarizer = LayerSummarizer(min_count=4, clip=5.0).fit(raw(sd) for sd in zoo)
    layout = tok.tokenize(zoo[0]).layout
    fitted = torch.stack([summarizer.summarize(sd, layout) for sd in zoo])
    assert fitted.shape == (12, 3, SUMMARY_DIM) and fitted.dtype == torch.float32
    spread = fitted.std(dim=0) > 0
    assert fitted.mean(dim=0)[spread].abs().max() < 1e-4  # standardized over the zoo, per kind
    assert fitted.abs().max() <= 5.0
    # zoo-level, never per model: a model with 3x the weights gets larger summaries (clipped at 5)
    scaled = summarizer.summarize(_summary_net(0, scale=3.0), layout)
    assert scaled[0, 1] > fitted[0, 0, 1] + 1.0  # std of the first conv weight
    again = LayerSummarizer.from_dict(json.loads(json.dumps(summarizer.to_dict())))
    assert again == summarizer
    assert torch.equal(again.summarize(zoo[3], layout), fitted[3])
    good = summarizer.to_dict()
    for bad, match in [
        ({**good, "clip": "x"}, "clip"),
        ({**good, "format_version": 9}, "format_version"),
        ({k: v for k, v in good.items() if k != "moments"}, "expected fields"),
        ({**good, "moments": {"*": [[0.0]]}}, r"moments\['\*'\]"),
        ({**good, "features": good["features"][:-1]}, "features"),
    ]:
        with pytest.raises(TokenizerError, match=match):
            LayerSummarizer.from_dict(bad)
    with pytest.raises(TokenizerError, match="not fitted"):
        LayerSummarizer().summarize(zoo[0], layout)


def test_tokenized_model_carries_summaries_and_still_detokenizes(tmp_path: Path) -> None:
    from zooprobe.tokens import collate_summaries

    sd = _summary_net(1)
    tok = WeightTokenizer(TokenizerConfig(token_size=4))
    tm = tok.tokenize(sd)
    with_s = TokenizedModel(
        tm.tokens, tm.mask, tm.positions, tm.layout, tm.passthrough, tm.skipped, torch.randn(3, 32)
    )
    with pytest.raises(TokenizerError, match="summaries"):
        TokenizedModel(tm.tokens, tm.mask, tm.positions, tm.layout, summaries=torch.randn(2, 32))
    with_s.save(tmp_path / "tm.safetensors")
    loaded = TokenizedModel.load(tmp_path / "tm.safetensors")
    assert loaded.summaries is not None and torch.equal(loaded.summaries, with_s.summaries)
    assert all(torch.equal(a, sd[k]) for k, a in detokenize(loaded).items())
    assert with_s.to("cpu").summaries is not None
    batch = collate_summaries([torch.ones(3, 32), torch.ones(1, 32)])
    assert batch["summaries"].shape == (2, 3, 32)
    assert batch["summary_attention"].tolist() == [[True, True, True], [True, False, False]]
    assert batch["summary_layers"].tolist() == [[0, 1, 2], [0, 0, 0]]
