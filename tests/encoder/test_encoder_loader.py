"""Tests for saving/loading encoders, encoding, provenance, the default encoder, the bench and the CLI."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from zooprobe import api, load_zoo
from zooprobe.api import load_encoder, pretrain_encoder
from zooprobe.bench.encoder import bench_encoder, format_report
from zooprobe.encoder import EncoderConfig, EncoderConfigError, WeightEncoder
from zooprobe.encoder import encoder_loader as encoder_io
from zooprobe.encoder.encoder_loader import (
    EncoderFormatError,
    EncoderWeightsError,
    LoadedEncoder,
    Preprocessing,
    model_window,
    save_encoder,
)
from zooprobe.errors import ConfigError, ZooprobeError
from zooprobe.tokens import TokenizerConfig, TokenizerError, WeightTokenizer, collate, iter_windows
from zooprobe.training.pretrain import PretrainConfig


@pytest.fixture(scope="module")
def pretrained(tiny_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("encoder") / "tiny"
    return pretrain_encoder(PretrainConfig(preset="tiny"), tiny_zoo, out, progress=False)


def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(
        folder, dst, ignore=shutil.ignore_patterns("tensorboard", "train.log", "last", "*.safetensors.tmp")
    )
    return dst


def _state_dicts(zoo_root: Path) -> list[dict[str, torch.Tensor]]:
    zoo = load_zoo(zoo_root).final()
    return [zoo.state_dict(i) for i in range(len(zoo))]


# ---------------------------------------------------------------------------------------------- round trip
def test_load_encode_and_save_round_trip(pretrained: Path, tiny_zoo: Path, tmp_path: Path) -> None:
    enc = load_encoder(pretrained)
    assert not enc.encoder.training
    sds = _state_dicts(tiny_zoo)
    emb = enc.encode(sds, batch_size=3)
    assert emb.shape == (len(sds), enc.latent_dim) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all()
    assert torch.equal(emb, enc.encode(sds, batch_size=3))  # deterministic
    assert torch.allclose(emb, enc.encode(sds, batch_size=16), atol=1e-5)  # batching barely matters
    assert torch.equal(enc.encode(load_zoo(tiny_zoo).final(), batch_size=3), emb)  # a Zoo works too

    again = save_encoder(
        enc.encoder,
        enc.tokenizer,
        enc.provenance,
        tmp_path / "again",
        preprocessing=enc.preprocessing,
        summarizer=enc.summarizer,
    )
    reloaded = load_encoder(again)
    assert torch.equal(reloaded.encode(sds, batch_size=3), emb)
    assert reloaded.provenance["model_ids"] == enc.provenance["model_ids"]
    assert reloaded.tokenizer.to_dict() == enc.tokenizer.to_dict()
    assert reloaded.summarizer == enc.summarizer


def test_summary_tokens_are_attached_saved_and_differentiable(pretrained: Path, tiny_zoo: Path) -> None:
    enc = load_encoder(pretrained)
    assert enc.config.summary_tokens and enc.summarizer is not None and enc.summarizer.fitted
    config = json.loads((pretrained / "config.json").read_text())
    assert config["format_version"] == encoder_io.FORMAT_VERSION == 2
    assert config["summaries"]["features"][:2] == ["member0.mean", "member0.std"]
    sds = _state_dicts(tiny_zoo)
    tms = [enc.tokenize(sd) for sd in sds[:3]]
    assert all(tm.summaries is not None and tm.summaries.shape == (tm.num_layers, 32) for tm in tms)
    # zoo-level statistics of raw weights: scaling a model's weights moves its summaries
    scaled = enc.tokenize({k: v * 2 if v.is_floating_point() else v for k, v in sds[0].items()})
    assert scaled.summaries is not None and not torch.allclose(scaled.summaries, tms[0].summaries)
    # embed is the differentiable forward path and agrees with encode
    enc.encoder.train()
    emb = enc.embed(tms, batch_size=2, token_outputs=True)
    assert emb.pooled.requires_grad and emb.tokens is not None
    emb.pooled.sum().backward()
    assert enc.encoder.summary_embed is not None and enc.encoder.summary_embed.weight.grad is not None
    enc.encoder.zero_grad(set_to_none=True)
    enc.encoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(enc.embed(tms).pooled, enc.encode(sds[:3]), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="summary tokens"):
        LoadedEncoder(enc.encoder, enc.tokenizer, enc.preprocessing)
    with pytest.raises(ConfigError, match="summary tokens"):
        save_encoder(enc.encoder, enc.tokenizer, {}, pretrained / "unused", preprocessing=enc.preprocessing)


def test_in_memory_encoder_round_trip_is_exact(tiny_zoo: Path, tmp_path: Path) -> None:
    sds = _state_dicts(tiny_zoo)
    tok = WeightTokenizer(TokenizerConfig(token_size=8))
    tok.fit_normalization(sds[:8])
    torch.manual_seed(0)
    config = EncoderConfig(
        token_size=8, d_model=16, n_layers=1, n_heads=2, d_ff=32, latent_dim=8, max_global_pos=64
    )
    mem = LoadedEncoder(WeightEncoder(config), tok, Preprocessing(window=48), {"note": "in memory"})
    folder = save_encoder(
        mem.encoder, mem.tokenizer, mem.provenance, tmp_path / "enc", preprocessing=mem.preprocessing
    )
    loaded = load_encoder(folder)
    assert loaded.preprocessing == mem.preprocessing
    assert torch.equal(loaded.encode(sds, batch_size=4), mem.encode(sds, batch_size=4))


def test_windowed_encoding(pretrained: Path, tiny_zoo: Path) -> None:
    enc = load_encoder(pretrained)
    sds = _state_dicts(tiny_zoo)
    window = enc.preprocessing.window
    short = min(sds, key=lambda sd: enc.tokenize(sd).num_tokens)
    long = max(sds, key=lambda sd: enc.tokenize(sd).num_tokens)
    tm = enc.tokenize(long)
    assert tm.num_tokens > window  # the tiny zoo's CNNs need several windows
    with torch.no_grad():
        short_tm = enc.tokenize(short)
        batch = collate([short_tm])
        plain = enc.encoder(
            batch["tokens"],
            batch["mask"],
            batch["positions"],
            batch["attention_mask"],
            **enc.encoder.summary_inputs(short_tm, 1, enc.device),  # every window reads all summaries
        ).pooled
        assert torch.equal(enc.encode([short])[0], plain[0])
        pooled, counts = [], []
        for w in iter_windows(tm, window):
            w = model_window(w)
            assert int(w.positions[:, 0].min()) == 0  # global index counted from the window's start
            batch = collate([w])
            extra = enc.encoder.summary_inputs(tm, 1, enc.device)
            out = enc.encoder(
                batch["tokens"], batch["mask"], batch["positions"], batch["attention_mask"], **extra
            )
            pooled.append(out.pooled[0])
            counts.append(float(batch["attention_mask"].sum()))
        expected = sum(p * c for p, c in zip(pooled, counts, strict=True)) / sum(counts)
    stats: dict = {}
    got = enc.encode([long], stats=stats)[0]
    assert torch.allclose(got, expected, atol=1e-5)
    assert stats["n_windows"] == -(-tm.num_tokens // window) and stats["n_tokens"] == tm.num_tokens


def test_unknown_layer_names_and_huge_layers_encode(pretrained: Path) -> None:
    enc = load_encoder(pretrained)
    big = {
        "features.0.weight": torch.randn(64, 3, 5, 5),  # 64 x 75 -> in-layer indices beyond the table wrap
        "features.0.bias": torch.randn(64),
        "classifier.weight": torch.randn(10, 64 * 4),
        "classifier.bias": torch.randn(10),
    }
    emb = enc.encode([big])
    assert emb.shape == (1, enc.latent_dim) and torch.isfinite(emb).all()
    with pytest.raises(ZooprobeError, match="state dict 1"):
        enc.encode([big, {"x.weight": torch.full((3, 3), float("nan"))}])


# ---------------------------------------------------------------------------------------------- provenance
def test_provenance_lists_exactly_the_train_split(pretrained: Path, tiny_zoo: Path) -> None:
    enc = load_encoder(pretrained)
    meta = load_zoo(tiny_zoo).final().metadata()
    train_ids = meta.loc[meta["split"] == "train", "model_id"].tolist()
    prov = enc.provenance
    assert prov["model_ids"] == train_ids
    assert enc.model_ids == train_ids
    assert set(prov["validation_model_ids"]) == set(meta.loc[meta["split"] == "validation", "model_id"])
    assert not set(prov["model_ids"]) & set(meta.loc[meta["split"] == "test", "model_id"])
    assert prov["zoo_source"] == str(tiny_zoo)
    assert len(prov["zoo_fingerprint"]) == 64
    assert prov["pretrain_config"]["preset"] == "tiny"
    assert prov["best_epoch"] in (1, 2)


def test_model_card(pretrained: Path) -> None:
    text = (pretrained / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["library_name"] == "zooprobe"
    assert "weight-space-learning" in header["tags"]
    assert "datasets" not in header  # a local zoo is not a Hub dataset
    for needle in ("## How to load", "## Training data", "## Limitations", "load_encoder("):
        assert needle in text
    config = json.loads((pretrained / "config.json").read_text())
    config["provenance"]["zoo_source"] = "someone/some-zoo"
    header = yaml.safe_load(encoder_io.model_card(config).split("---")[1])
    assert header["datasets"] == ["someone/some-zoo"]


# ---------------------------------------------------------------------------------------------- strict load
def _edit_config(folder: Path, edit) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_strict_load_errors(pretrained: Path, tmp_path: Path) -> None:
    folder = _copy(pretrained, tmp_path)
    weights = load_file(str(folder / "model.safetensors"))

    def fresh() -> Path:
        shutil.rmtree(folder)
        return _copy(pretrained, tmp_path)

    _edit_config(folder, lambda d: d.update(format_version=99))
    with pytest.raises(EncoderFormatError, match="format_version 99"):
        load_encoder(folder)

    folder = fresh()
    _edit_config(folder, lambda d: d.pop("tokenizer"))
    with pytest.raises(EncoderFormatError, match=r"missing field\(s\) \['tokenizer'\]"):
        load_encoder(folder)

    folder = fresh()
    _edit_config(folder, lambda d: d.pop("summaries"))
    with pytest.raises(EncoderFormatError, match=r"missing field\(s\) \['summaries'\]"):
        load_encoder(folder)

    folder = fresh()
    _edit_config(folder, lambda d: d.update(summaries=None))
    with pytest.raises(EncoderFormatError, match="no fitted LayerSummarizer"):
        load_encoder(folder)

    folder = fresh()
    _edit_config(folder, lambda d: d["summaries"].update(clip="wide"))
    with pytest.raises(TokenizerError, match="clip"):
        load_encoder(folder)

    folder = fresh()
    _edit_config(folder, lambda d: d["encoder"].pop("d_ff"))
    with pytest.raises(EncoderConfigError, match="d_ff"):
        load_encoder(folder)

    folder = fresh()
    _edit_config(folder, lambda d: d["encoder"].update(d_model=48))  # tampered: weights no longer fit
    with pytest.raises(EncoderWeightsError, match=r"mismatched tensor\(s\) .*token_embed.weight"):
        load_encoder(folder)

    folder = fresh()
    _edit_config(folder, lambda d: d["preprocessing"].update(windw=3))
    with pytest.raises(EncoderConfigError, match="windw"):
        load_encoder(folder)

    folder = fresh()
    missing = {k: v for k, v in weights.items() if k != "norm.weight"}
    save_file(missing, str(folder / "model.safetensors"))
    with pytest.raises(EncoderWeightsError, match=r"missing tensor\(s\) \['norm.weight'\]"):
        load_encoder(folder)

    save_file({**weights, "extra.weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    with pytest.raises(EncoderWeightsError, match=r"unexpected tensor\(s\) \['extra.weight'\]"):
        load_encoder(folder)

    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(EncoderWeightsError, match="not a readable safetensors"):
        load_encoder(folder)

    (folder / "model.safetensors").unlink()
    with pytest.raises(EncoderFormatError, match=r"no model\.safetensors"):
        load_encoder(folder)

    with pytest.raises(EncoderFormatError, match=r"no config\.json"):
        load_encoder(tmp_path)
    with pytest.raises(ZooprobeError, match="no such folder"):
        load_encoder(tmp_path / "does-not-exist")


# ---------------------------------------------------------------------------------------------- default
def test_v2_and_v3_are_pretrained_once_into_the_cache(
    tiny_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZOOPROBE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(api, "DEFAULT_ENCODER_ZOO", str(tiny_zoo))
    monkeypatch.setattr(api, "DEFAULT_ENCODER_PRESET", "tiny")
    calls = []
    real = api.pretrain

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "pretrain", counting)
    first = load_encoder("v2", progress=False)
    assert len(calls) == 1
    assert first.source is not None and first.source.parent == tmp_path / "cache" / "encoders"
    assert not list(first.source.parent.glob(".building-*"))
    start = time.perf_counter()
    second = load_encoder("v2", progress=False)
    assert time.perf_counter() - start < 5 and len(calls) == 1
    assert second.source == first.source
    sds = _state_dicts(tiny_zoo)[:3]
    assert torch.equal(first.encode(sds), second.encode(sds))
    # "default" is the shipped foundation encoder (nothing pretrained); v3 the neuron encoder, pretrained once
    assert load_encoder("default", progress=False).source != first.source and len(calls) == 1
    v3 = load_encoder("v3", progress=False)
    assert len(calls) == 2 and type(v3).__name__ == "LoadedNeuronEncoder"
    assert v3.source is not None and v3.source.parent == first.source.parent and v3.source != first.source
    assert load_encoder("v3", progress=False).source == v3.source and len(calls) == 2
    assert v3.encode(sds).shape == (3, v3.latent_dim)


# ---------------------------------------------------------------------------------------------- bench + CLI
def test_bench_and_cli(pretrained: Path, tiny_zoo: Path, tmp_path: Path) -> None:
    result = bench_encoder(tiny_zoo, pretrained, resnet=False, progress=False)
    assert result["models_per_s"] > 0 and result["matmul_gflops"] > 0 and result["encoder_gflops"] > 0
    assert result["n_train"] > 0 and result["n_test"] > 0
    assert "r2_encoder" in result and "r2_weight_stats" in result
    assert {"gbm_r2_encoder", "gbm_r2_weight_stats", "gbm_r2_encoder_plus_stats"} <= set(result)
    report = "\n".join(format_report(result))
    assert "LightGBM R²" in report and "strongest statistics baseline" in report
    assert any("ridge R²" in line for line in format_report(result))
    # the forward's own kernels at its shapes, and the stored reference (another zoo here: not comparable)
    assert result["attention_gflops"] > 0 and result["qkv_gflops"] > 0
    assert "its kernels alone" in report and "not comparable here" in report
    same = dict(result, reference=dict(result["reference"], comparable=True))
    ratio = result["models_per_s"] / result["reference"]["models_per_s"]
    assert f"{ratio:.2f}x" in "\n".join(format_report(same))

    from jsonargparse import ArgumentParser
    from rich.console import Console

    import zooprobe.cli  # noqa: F401  (parsing settings)
    from zooprobe.cli.encoder import add_encoder_commands, run_encoder_command

    root = ArgumentParser(prog="zooprobe")
    add_encoder_commands(root.add_subcommands(dest="command"))
    console = Console(file=open(tmp_path / "out.txt", "w"), width=200)  # noqa: SIM115
    out = tmp_path / "cli-encoder"
    args = ["encoder", "pretrain", "--preset", "tiny", "--epochs", "1", "--zoo", str(tiny_zoo)]
    cfg = root.parse_args([*args, "--output", str(out), "--progress", "false"])
    assert run_encoder_command(cfg.encoder, console) == 0
    assert load_encoder(out).provenance["pretrain_config"]["epochs"] == 1
    cfg = root.parse_args(
        ["encoder", "bench", "--zoo", str(tiny_zoo), "--encoder", str(out), "--resnet", "false",
         "--json", str(tmp_path / "b.json"), "--progress", "false",
         "--compare", "foundation", "--repeats", "2"]
    )  # fmt: skip
    assert run_encoder_command(cfg.encoder, console) == 0
    console.file.close()
    written = json.loads((tmp_path / "b.json").read_text())
    assert written["n_models"] == result["n_models"]
    # --compare: both encoders timed on the same models, best and median of 2 runs, side by side
    speed = written["speed"]
    assert [r["encoder"] for r in speed] == [str(out), "foundation"]
    assert [r["architecture"] for r in speed] == ["tokens", "layers"]
    for r in speed:
        assert r["n_models"] == result["n_models"] and len(r["seconds"]) == 2
        assert r["models_per_s_best"] >= r["models_per_s_median"] > 0
        assert r["ms_per_model_best"] == pytest.approx(1000 / r["models_per_s_best"])
    text = (tmp_path / "out.txt").read_text()
    assert "encoder written to" in text and "speed, side by side" in text
    assert any(line.strip().startswith("foundation") and "layers" in line for line in text.splitlines())


# ---------------------------------------------------------------------------------------------- batched
def test_tokenize_many_equals_tokenizing_each_model(pretrained: Path, tiny_zoo: Path, head_zoo: Path) -> None:
    """Models of one architecture are tokenized together (the fast path of `encode`); every output equals
    tokenizing that model alone, bit for bit: tokens, masks, positions, summaries, layouts (passthrough
    values such as BatchNorm's num_batches_tracked are each model's own)."""
    enc = load_encoder(pretrained)
    sds = _state_dicts(tiny_zoo) + _state_dicts(head_zoo)
    assert len({tuple((k, tuple(v.shape)) for k, v in sd.items()) for sd in sds}) >= 3  # mixed architectures
    bn = next(sd for sd in sds if any(k.endswith("num_batches_tracked") for k in sd))
    twin = {k: (v + 7 if k.endswith("num_batches_tracked") else v * 1.5) for k, v in bn.items()}
    sds = [*sds, twin, bn]
    many = enc.tokenize_many(sds)
    for sd, got in zip(sds, many, strict=True):
        want = enc.tokenize(sd)
        assert torch.equal(got.tokens, want.tokens) and torch.equal(got.mask, want.mask)
        assert torch.equal(got.positions, want.positions)
        assert got.summaries is not None and want.summaries is not None
        assert torch.equal(got.summaries, want.summaries)
        assert got.layout == want.layout
    assert many[-2].passthrough_values() != many[-1].passthrough_values()
    alone = torch.cat([enc.encode([sd]) for sd in sds])  # batches differ in padding only
    torch.testing.assert_close(enc.encode(sds, batch_size=4), alone, atol=1e-5, rtol=0)


def test_tokenize_many_names_the_bad_model(pretrained: Path, tiny_zoo: Path) -> None:
    enc = load_encoder(pretrained)
    sds = _state_dicts(tiny_zoo)[:6]
    bad = dict(sds[4])
    name = next(k for k, v in bad.items() if v.is_floating_point())
    bad[name] = bad[name].clone()
    bad[name].view(-1)[0] = float("nan")
    sds[4] = bad
    with pytest.raises(ZooprobeError, match=rf"state dict 4: tensor '{name}'.*non-finite"):
        enc.encode(sds)
    with pytest.raises(ZooprobeError, match=r"item 2 is a str"):
        enc.encode([sds[0], sds[1], "weights.pt"])


def test_value_stats_rows_is_numpy_quantile() -> None:
    import numpy as np

    from zooprobe.tokens.statistics import value_stats, value_stats_rows

    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 3, 4, 5, 8, 97, 1000):
        for x in (rng.standard_normal((4, n)), rng.integers(-2, 3, (4, n)).astype(float)):
            want = np.stack(
                [
                    np.r_[r.mean(), r.std(), np.quantile(r, (0, 0.25, 0.5, 0.75, 1))] if n else np.zeros(7)
                    for r in x
                ]
            )
            assert np.array_equal(value_stats_rows(x), want)
            assert np.array_equal(np.stack([value_stats(r) for r in x]), want)
            # float32 (sorted in float32), bfloat16 and float16 tensors: the quantiles of their exact values
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                t = torch.from_numpy(x).to(dtype)
                exact = t.double().numpy()
                want = np.stack(
                    [
                        np.r_[r.mean(), r.std(), np.quantile(r, (0, 0.25, 0.5, 0.75, 1))]
                        if n
                        else np.zeros(7)
                        for r in exact
                    ]
                )
                assert np.array_equal(value_stats_rows(t), want), dtype


def test_encode_chunks_are_bounded_by_models_and_bytes() -> None:
    sd = {"w": torch.zeros(256, 256)}  # 256 KiB
    chunks = list(encoder_io.encode_chunks(iter([sd] * 10), max_models=4, max_bytes=1 << 30))
    assert [len(c) for c in chunks] == [4, 4, 2]
    chunks = list(encoder_io.encode_chunks(iter([sd] * 10), max_models=100, max_bytes=600 * 1024))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]


def test_frozen_blocks_are_computed_once_and_reused(pretrained: Path, tiny_zoo: Path) -> None:
    """Fine-tuning only the top blocks: the frozen blocks' output is kept on each tokenized model and
    reused while their weights are unchanged; results equal the full forward; gradients reach the top only."""
    import dataclasses

    tiny = load_encoder(pretrained)
    torch.manual_seed(0)
    two_blocks = WeightEncoder(dataclasses.replace(tiny.config, n_layers=2)).eval()
    enc = LoadedEncoder(two_blocks, tiny.tokenizer, tiny.preprocessing, summarizer=tiny.summarizer)
    n_blocks = len(enc.encoder.blocks)
    tms = enc.tokenize_many(_state_dicts(tiny_zoo))
    assert any(tm.num_tokens > enc.preprocessing.window for tm in tms)  # models of several windows
    with torch.no_grad():
        full = enc.embed(tms, batch_size=4).pooled
        unfrozen = enc.embed(tms, batch_size=4, frozen_blocks=1).pooled  # bottom still trainable: no caching
    assert all(tm.prefix_states is None for tm in tms)
    torch.testing.assert_close(unfrozen, full, atol=0, rtol=0)
    for p in enc.encoder.prefix_parameters(1):
        p.requires_grad_(False)
    calls = {"n": 0}
    block0 = enc.encoder.blocks[0]
    hook = block0.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    with torch.no_grad():
        first = enc.embed(tms, batch_size=4, frozen_blocks=1).pooled
        after_first = calls["n"]
        again = enc.embed(tms[::-1], batch_size=3, frozen_blocks=1).pooled.flip(0)  # other batches, reused
    assert after_first > 0 and calls["n"] == after_first  # the bottom block ran once per window, then never
    torch.testing.assert_close(first, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, full, atol=1e-5, rtol=0)
    # new weights in a frozen block (a checkpoint loaded into it): the kept outputs are stale and recomputed
    with torch.no_grad():
        block0.ff2.weight.mul_(1.5)
        changed = enc.embed(tms, batch_size=4, frozen_blocks=1).pooled
        reference = enc.embed(tms, batch_size=4).pooled
    assert calls["n"] > after_first
    torch.testing.assert_close(changed, reference, atol=1e-5, rtol=0)
    assert not torch.allclose(changed, full, atol=1e-4)
    hook.remove()
    # gradients: the top block trains, the frozen one is not even differentiated
    enc.encoder.train()
    enc.embed(tms[:5], batch_size=2, frozen_blocks=1).pooled.sum().backward()
    assert enc.encoder.blocks[n_blocks - 1].qkv.weight.grad is not None
    assert block0.qkv.weight.grad is None
