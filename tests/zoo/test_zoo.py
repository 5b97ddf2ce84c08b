"""Generating, storing and loading zoos, as a user would: real builds, real files."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import zooprobe.zoo.build as build_mod
from zooprobe import (
    ConfigError,
    InvalidInputError,
    ZooConfig,
    ZooFormatError,
    build_zoo,
    load_zoo,
    merge_zoo,
)
from zooprobe.zoo.data import load_task
from zooprobe.zoo.schema import FIELDS
from zooprobe.zoo.space import ACTIVATIONS, INITS, OPTIMIZERS, sample_cohort
from zooprobe.zoo.store import decode_weights, encode_weights

TINY = ZooConfig(preset="tiny", n_models=8)
REPO = Path(__file__).resolve().parents[2]


def _rows(root: Path) -> dict[str, tuple[dict, bytes]]:
    """model_id -> (metadata without timing, weights bytes) of every row of a zoo folder."""
    out = {}
    for f in sorted((root / "data").glob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            w = r.pop("weights")
            r.pop("train_time_s")
            out[r["model_id"]] = (r, w)
    return out


def test_tiny_zoo_is_a_complete_loadable_dataset(tiny_zoo: Path) -> None:
    zoo = load_zoo(tiny_zoo)
    meta = zoo.metadata()
    assert len(zoo) == 16 and set(meta["split"]) <= {"train", "validation", "test"}
    assert meta["model_id"].is_unique
    assert meta["has_conv_layers"].dtype == bool and meta["test_accuracy"].dtype == np.float32
    np.testing.assert_allclose(
        meta["generalization_gap"], meta["train_accuracy"] - meta["test_accuracy"], atol=1e-6
    )
    # manifest: generator config and library versions
    manifest = json.loads((tiny_zoo / "zooprobe_manifest.json").read_text())
    assert manifest["generator_config"]["preset"] == "tiny" and "torch" in manifest["library_versions"]
    assert manifest["tasks"]["digits"]["n_train"] > 0 and manifest["tasks"]["digits"]["fingerprint"]
    # dataset card: YAML header with configs, every field documented in the body
    card = (tiny_zoo / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["configs"][0]["data_files"][0]["path"].startswith("data/")
    for f in FIELDS:
        assert f"`{f.name}`" in card


def test_stored_weights_reproduce_stored_accuracy(tiny_zoo: Path) -> None:
    zoo = load_zoo(tiny_zoo)
    for i in (0, 5, len(zoo) - 1):
        model = zoo.model(i)
        row = zoo.metadata().iloc[i]
        data = load_task(row["dataset"])
        with torch.no_grad():
            acc = (model(data.x_test).argmax(-1) == data.y_test).float().mean().item()
        assert acc == pytest.approx(float(row["test_accuracy"]), abs=1e-6)
        assert sum(v.numel() for v in model.parameters()) == row["num_params"]


def test_selection_by_metadata(tiny_zoo: Path) -> None:
    zoo = load_zoo(tiny_zoo)
    sub = zoo.filter(dataset="digits", has_conv_layers=False)
    meta = sub.metadata()
    assert len(sub) > 0 and set(meta["dataset"]) == {"digits"} and not meta["has_conv_layers"].any()
    train = zoo.split("train")
    assert set(train.metadata()["split"]) == {"train"}
    picked = zoo.select([3, 1])
    assert list(picked.metadata()["model_id"]) == [
        zoo.metadata()["model_id"][3],
        zoo.metadata()["model_id"][1],
    ]
    assert picked.state_dict(0).keys() == zoo.state_dict(3).keys()
    with pytest.raises(KeyError, match="unknown field"):
        zoo.filter(colour="red")


def test_folder_loads_with_hugging_face_datasets(tiny_zoo: Path, tmp_path: Path) -> None:
    import datasets
    from safetensors.torch import load

    ds = datasets.load_dataset(str(tiny_zoo), cache_dir=str(tmp_path / "hf"))
    zoo = load_zoo(tiny_zoo)
    assert {k: len(v) for k, v in ds.items()} == zoo.metadata()["split"].value_counts().to_dict()
    row = ds["train"][0]
    sd = load(row["weights"])
    ref = zoo.filter(model_id=row["model_id"]).state_dict(0)
    assert all(torch.equal(sd[k], ref[k]) for k in ref)


def test_build_is_deterministic(tmp_path: Path) -> None:
    build_zoo(TINY, tmp_path / "a", progress=False)
    build_zoo(TINY, tmp_path / "b", progress=False)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")


def test_interrupted_build_resumes_without_retraining(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = build_mod._train

    def flaky(specs, cfg, batched, on_epoch=None):
        calls.append(specs[0].cohort)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(specs, cfg, batched, on_epoch)

    monkeypatch.setattr(build_mod, "_train", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_zoo(TINY, tmp_path / "z", progress=False)
    assert not (tmp_path / "z" / "zooprobe_manifest.json").exists()
    assert [p.name for p in (tmp_path / "z" / ".parts").iterdir()] == [
        "cohort-000000.parquet"
    ]  # no temp files
    report = build_zoo(TINY, tmp_path / "z", progress=False)
    assert report.finalized and report.cohorts_skipped == 1 and report.cohorts_built == 1
    assert calls == [0, 1, 1]
    monkeypatch.setattr(build_mod, "_train", real)
    build_zoo(TINY, tmp_path / "ref", progress=False)
    assert _rows(tmp_path / "z") == _rows(tmp_path / "ref")


def test_shards_merge_into_the_same_zoo(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, n_models=12)
    r0 = build_zoo(cfg, tmp_path / "s0", shard="0/2", progress=False)
    r1 = build_zoo(cfg, tmp_path / "s1", shard="1/2", progress=False)
    assert not r0.finalized and not r1.finalized and r0.cohorts_built == 2 and r1.cohorts_built == 1
    merge_zoo(tmp_path / "merged", [tmp_path / "s0", tmp_path / "s1"])
    build_zoo(cfg, tmp_path / "full", progress=False)
    assert _rows(tmp_path / "merged") == _rows(tmp_path / "full")


def test_worker_processes_build_the_same_zoo_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = dataclasses.replace(TINY, n_models=12)  # 3 cohorts over 2 workers
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # 1 thread per worker, as in this process:
    report = build_zoo(cfg, tmp_path / "w", workers=2, progress=False)
    assert report.finalized and report.workers == 2 and report.cohorts_built == 3
    assert "by 2 worker processes" in report.summary()
    monkeypatch.undo()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same threads per process give the same bits
    try:
        build_zoo(cfg, tmp_path / "one", workers=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert _rows(tmp_path / "w") == _rows(tmp_path / "one")
    # a resumed build hands only the missing cohorts to its workers
    (tmp_path / "w2").mkdir()
    build_zoo(cfg, tmp_path / "w2", shard="0/3", progress=False)
    report = build_zoo(cfg, tmp_path / "w2", workers=2, progress=False)
    assert report.finalized and report.cohorts_skipped == 1 and report.cohorts_built == 2
    assert _rows(tmp_path / "w2").keys() == _rows(tmp_path / "one").keys()


def test_torchrun_processes_share_a_build_and_process_0_merges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`torchrun --nproc_per_node=2 -m zooprobe zoo build`: each process builds its shard into the shared
    folder, process 0 merges once both are done and alone reports; the zoo equals a one-process build."""
    out = tmp_path / "tr"
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    build = [
        "zoo",
        "build",
        "--preset",
        "tiny",
        "--n_models",
        "12",
        "--output",
        str(out),
        "--progress",
        "false",
    ]
    r = subprocess.run(
        [*torchrun, "-m", "zooprobe", *build],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("zoo written to") == 1 and "process 0 of 2 under torchrun" in r.stdout, r.stdout
    assert not (out / ".parts").exists()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same threads per process give the same bits
    try:
        build_zoo(dataclasses.replace(TINY, n_models=12), tmp_path / "one", workers=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert _rows(out) == _rows(tmp_path / "one")
    # torchrun shares the cohorts out itself: an explicit shard is refused before the folder is touched
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="drop --shard"):
        build_zoo(TINY, tmp_path / "both", shard="0/2", progress=False)
    assert not (tmp_path / "both").exists()


def test_a_failing_worker_job_raises_with_the_workers_traceback(tmp_path: Path) -> None:
    from zooprobe.errors import ZooprobeError
    from zooprobe.zoo.workers import CohortWorkers, resolve_workers

    cfg = TINY.resolved()
    with CohortWorkers(1, 1, cfg.to_dict()) as pool:
        answers = list(pool.run([{"op": "train", "cohort": 0, "batched": True}]))
        assert answers[0]["cohort"] == 0 and len(answers[0]["test_accuracy"]) == 4
        (tmp_path / "a-file").write_text("not a folder")
        bad = tmp_path / "a-file" / "cohort-000001.parquet"
        with pytest.raises(ZooprobeError, match=r"(?s)worker process failed.*a-file"):
            list(pool.run([{"op": "build", "cohort": 1, "part": str(bad), "batched": True}]))
    # automatic: one process for small builds, never more workers than cohorts
    assert resolve_workers(None, 4, 16) == 1 and resolve_workers(0, 40, 100) == 1
    assert resolve_workers(8, 3, 1000) == 3 and resolve_workers(2, 8, 256) == 2
    with pytest.raises(ConfigError, match="workers"):
        resolve_workers(-1, 3, 12)
    with pytest.raises(ConfigError, match="workers"):  # refused before the output folder is touched
        build_zoo(TINY, tmp_path / "negative", workers=-1, progress=False)
    with pytest.raises(InvalidInputError, match="row_group_size"):  # not only after training, at the merge
        build_zoo(TINY, tmp_path / "negative", row_group_size=0, progress=False)
    assert not (tmp_path / "negative").exists()


def test_refuses_mixing_configurations(tmp_path: Path) -> None:
    build_zoo(TINY, tmp_path / "z", shard="0/2", progress=False)
    with pytest.raises(ConfigError, match=r"different configuration.*n_models"):
        build_zoo(dataclasses.replace(TINY, n_models=12), tmp_path / "z", progress=False)
    with pytest.raises(ConfigError, match="shard"):
        build_zoo(TINY, tmp_path / "y", shard="3/2", progress=False)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"optimizers.*lbfgs"):
        ZooConfig(preset="tiny", optimizers=["lbfgs"]).resolved()
    with pytest.raises(ConfigError, match="split_fractions"):
        ZooConfig(preset="tiny", split_fractions=(0.5, 0.1, 0.1)).resolved()
    with pytest.raises(ConfigError, match="unknown preset"):
        ZooConfig(preset="huge").resolved()  # type: ignore[arg-type]


def test_bench_preset_is_diverse_and_flags_are_independent() -> None:
    """Sampling only (no training): every discrete value is well represented, no flag fixes another."""
    cfg = ZooConfig(preset="bench").resolved()
    specs = [s for k in range(cfg.n_cohorts) for s in sample_cohort(cfg, k)]
    assert len(specs) >= 2000
    for field, values in (
        ("optimizer", cfg.optimizers),
        ("activation", cfg.activations),
        ("init", cfg.inits),
    ):
        assert set(values) <= set({"optimizer": OPTIMIZERS, "activation": ACTIVATIONS, "init": INITS}[field])
        counts = {v: sum(getattr(s, field) == v for s in specs) for v in values}  # type: ignore[union-attr]
        assert min(counts.values()) >= len(specs) / len(values) / 2, counts
    flags = {
        "conv": [s.arch.has_conv_layers for s in specs],
        "bn": [s.arch.has_batch_norm for s in specs],
        "ln": [s.arch.has_layer_norm for s in specs],
        "dropout": [s.has_dropout for s in specs],
        "residual": [s.has_residual for s in specs],
    }
    names = list(flags)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            combos = {(x, y) for x, y in zip(flags[a], flags[b], strict=True)}
            assert len(combos) == 4, (a, b, combos)
    lrs = np.log10([s.learning_rate for s in specs])
    assert lrs.max() - lrs.min() > 3


def test_weights_codec_is_exact_and_refuses_non_finite() -> None:
    sd = {"z.weight": torch.randn(3, 2), "a.bias": torch.randn(3).half(), "n": torch.tensor(7)}
    back = decode_weights(encode_weights(sd))
    assert list(back) == list(sd) and all(
        torch.equal(back[k], sd[k]) and back[k].dtype == sd[k].dtype for k in sd
    )
    sd["z.weight"][0, 0] = float("nan")
    with pytest.raises(InvalidInputError, match=r"z\.weight.*non-finite"):
        encode_weights(sd, where="model 7")
    with pytest.raises(InvalidInputError, match="safetensors"):
        decode_weights(b"garbage!")


def test_damaged_zoo_folders_get_clear_errors(tiny_zoo: Path, tmp_path: Path) -> None:
    import shutil

    z = tmp_path / "z"
    shutil.copytree(tiny_zoo, z)
    with pytest.raises(ZooFormatError, match="no data"):
        load_zoo(tmp_path / "z" / "data")  # a folder without data/ inside
    manifest = json.loads((z / "zooprobe_manifest.json").read_text())
    (z / "zooprobe_manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ZooFormatError, match="format version 99"):
        load_zoo(z)
    (z / "zooprobe_manifest.json").write_text(json.dumps(manifest))
    victim = sorted((z / "data").glob("train-*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(ZooFormatError, match=victim.name):
        load_zoo(z)
    with pytest.raises(Exception, match="no such folder"):
        load_zoo("./does/not/exist")


def test_intermediate_checkpoints_stay_with_their_run(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, min_epochs=2, max_epochs=2, checkpoint_epochs=[1])
    build_zoo(cfg, tmp_path / "z", progress=False)
    meta = load_zoo(tmp_path / "z").metadata()
    assert len(meta) == 2 * cfg.n_models
    assert sorted(meta["checkpoint_epoch"].unique()) == [1, 2]
    assert (meta.groupby("model_id")["split"].nunique() == 1).all()
    assert (meta.groupby("model_id")["is_final"].sum() == 1).all()
    final = load_zoo(tmp_path / "z").final().metadata()
    assert len(final) == cfg.n_models and (final["checkpoint_epoch"] == 2).all()


def test_bench_trains_the_same_runs_both_ways() -> None:
    from zooprobe.bench.zoo import bench_zoo

    result = bench_zoo(ZooConfig(preset="tiny"), n_models=4, progress=False)
    assert set(result.batched_acc) == set(result.sequential_acc) and len(result.batched_acc) == 4
    diffs = [abs(result.batched_acc[k] - result.sequential_acc[k]) for k in result.batched_acc]
    assert float(np.median(diffs)) < 0.02  # same init, data order and updates: same models up to rounding
    assert result.ratio > 0 and any("speed-up" in line for line in result.lines())
    assert result.workers == 1 and any("one process" in line for line in result.lines())
