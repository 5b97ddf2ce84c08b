"""``zooprobe predict``: checkpoint files in, a head's predictions out; unsafe or unreadable files refused."""

from __future__ import annotations

import json
import os
import pickle
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from trained_heads import TrainedHeads
from zooprobe.api import load_head, load_zoo
from zooprobe.cli import main
from zooprobe.errors import InvalidInputError
from zooprobe.heads.head_loader import LoadedHead
from zooprobe.inference import format_predictions, load_checkpoint, predict_files
from zooprobe.inference.assess import _load


class Payload:
    """A pickled object whose unpickling would create `marker` (what an attacker's checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def heads(trained_heads: TrainedHeads) -> dict[str, Path]:
    """Run folders of a hyperparameters head (continuous log10 + categorical) and a patterns head (the
    session's shared runs, tests/conftest.py)."""
    return {task: trained_heads[task] for task in ("hyperparameters", "patterns")}


@pytest.fixture(scope="module")
def loaded(heads: dict[str, Path]) -> dict[str, LoadedHead]:
    return {task: load_head(run) for task, run in heads.items()}


@pytest.fixture(scope="module")
def state_dicts(head_zoo: Path) -> list[dict[str, torch.Tensor]]:
    """Three zoo models, MLPs and CNNs among them (so layer order and BatchNorm columns matter)."""
    zoo = load_zoo(head_zoo)
    sds = [zoo.state_dict(i) for i in range(3)]
    assert len({tuple(sd) for sd in sds}) > 1  # different architectures
    return sds


def _save_safetensors(sd: dict[str, torch.Tensor], path: Path) -> Path:
    save_file(sd, str(path), metadata={"order": json.dumps(list(sd))})
    return path


def _assert_same(head: LoadedHead, results: list[dict[str, Any]], expected: dict[str, np.ndarray]) -> None:
    for i, result in enumerate(results):
        assert set(result["targets"]) == set(head.spec.names)
        for t in head.spec.targets:
            got = result["targets"][t.name]
            assert got["kind"] == t.kind
            want = expected[t.name][i]
            if t.kind == "binary":
                np.testing.assert_allclose(got["probability"], want, rtol=1e-5, atol=1e-6)
                assert got["predicted"] == (got["probability"] >= 0.5)
            elif t.kind == "categorical":
                probs = [got["probabilities"][c] for c in t.classes]
                np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)
                assert got["predicted"] == t.classes[int(np.argmax(want))]
                assert got["probability"] == pytest.approx(float(np.max(want)), rel=1e-5, abs=1e-6)
            else:
                np.testing.assert_allclose(got["predicted"], want, rtol=1e-5, atol=1e-6)
                assert got["log10"] == t.log10
                if t.log10:
                    assert got["value"] == pytest.approx(10 ** got["predicted"], rel=1e-9)
                else:
                    assert "value" not in got


def test_files_give_the_same_predictions_as_loaded_head(
    loaded: dict[str, LoadedHead], state_dicts: list[dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    sd0, sd1, sd2 = state_dicts
    files = [
        _save_safetensors(sd0, tmp_path / "a.safetensors"),
        tmp_path / "b.pt",
        tmp_path / "c.ckpt",
    ]
    torch.save(sd1, files[1])
    optimizer = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1}]}
    torch.save({"state_dict": sd2, "epoch": 7, "optimizer_states": [optimizer]}, files[2])
    for sd, path in zip(state_dicts, files, strict=True):
        read = load_checkpoint(path)
        assert list(read) == list(sd)  # order kept: it decides the layer positions the encoder sees
        assert all(torch.equal(read[k], sd[k]) for k in sd)
    assert any("'state_dict' entry" in n for n in predict_files(loaded["patterns"], files[2:])[0]["notes"])
    for head in loaded.values():
        results = predict_files(head, files, show_unpredictable=True)  # 1-epoch heads: values shown anyway
        assert [r["file"] for r in results] == [str(f) for f in files]
        _assert_same(head, results, head.predict(state_dicts))
        lines = format_predictions(results)
        assert all(any(str(f) == line for line in lines) for f in files)
        assert all(any(line.strip().startswith(n) for line in lines) for n in head.spec.names)
    hp = predict_files(loaded["hyperparameters"], files[:1], show_unpredictable=True)[0]["targets"]
    assert hp["learning_rate"]["log10"] and 0 < hp["learning_rate"]["value"] < 1


def test_safetensors_without_recorded_order(
    state_dicts: list[dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    sd = state_dicts[0]
    save_file(sd, str(tmp_path / "plain.safetensors"))  # safetensors keeps no order of its own
    read = load_checkpoint(tmp_path / "plain.safetensors")
    assert set(read) == set(sd)
    prefixes = [k.rpartition(".")[0] for k in read]
    assert prefixes == sorted(prefixes, key=lambda p: [int(x) if x.isdigit() else x for x in p.split(".")])
    for prefix in set(prefixes):  # inside a module: weight, bias, running stats (PyTorch's own order)
        leaves = [k.rpartition(".")[2] for k in read if k.rpartition(".")[0] == prefix]
        expected = [x for x in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
        assert [x for x in leaves if x in expected] == [x for x in expected if x in leaves]


def test_pickled_objects_are_refused_and_never_run(tmp_path: Path) -> None:
    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(Payload(live)))  # our own payload, to prove it is live when unpickled
    assert live.is_dir()

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "extra": Payload(marker)}, path)
    with pytest.raises(InvalidInputError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "refused for safety" in message and "weights_only=True" in message
    assert "safetensors" in message and "save_file(model.state_dict()" in message  # how to convert
    assert "posix.mkdir" in message  # torch names the blocked global
    assert not marker.exists()  # nothing ran

    module = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), module)  # a whole pickled nn.Module
    with pytest.raises(InvalidInputError, match=r"refused for safety.*torch\.nn\.modules\.linear\.Linear"):
        load_checkpoint(module)


def test_checkpoint_containers_and_bad_files(
    state_dicts: list[dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    sd = state_dicts[0]
    torch.save({"model_state_dict": {**sd, "_extra_state": None}, "epoch": 3, "loss": 0.5}, tmp_path / "w.pt")
    assert list(load_checkpoint(tmp_path / "w.pt")) == list(sd)  # non-tensor entries of a container dropped
    torch.save({"model": sd}, tmp_path / "m.bin")
    assert list(load_checkpoint(tmp_path / "m.bin")) == list(sd)

    cases: dict[str, tuple[Any, str]] = {
        "nested.pt": ({**sd, "meta": {"a": torch.zeros(1)}}, r"entry 'meta' is a dict, not a tensor"),
        "none.pt": ({**sd, "note": None}, r"entry 'note' is a NoneType, not a tensor"),
        "list.pt": (list(sd.values()), r"holds a list, not a state dict"),
        "empty.pt": ({}, r"empty state dict"),
        "empty_container.ckpt": ({"state_dict": {}, "epoch": 1}, r"\['state_dict'\]: empty state dict"),
        "intkey.pt": ({0: torch.zeros(1)}, r"key 0 is not a string"),
    }
    for name, (obj, pattern) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(InvalidInputError, match=pattern) as info:
            load_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    (tmp_path / "weights.npz").write_bytes(b"")
    for name, pattern in (
        ("bad.safetensors", "not a valid safetensors file"),
        ("bad.pt", "unreadable checkpoint"),
        ("weights.npz", r"unsupported checkpoint type '\.npz'"),
        ("missing.pt", "checkpoint file not found"),
    ):
        with pytest.raises(InvalidInputError, match=pattern):
            load_checkpoint(tmp_path / name)

    double = {k: (v.double() if v.is_floating_point() else v) for k, v in sd.items()}
    torch.save(double, tmp_path / "f64.pt")
    assert torch.float64 in {v.dtype for v in load_checkpoint(tmp_path / "f64.pt").values()}  # read exactly
    converted, notes = _load(tmp_path / "f64.pt")  # what predict_files encodes: float32, with a note
    assert all(v.dtype != torch.float64 for v in converted.values())
    assert any("float64 tensor(s) converted to float32" in n for n in notes)


def test_unrepresentable_networks_name_the_file_and_tensor(
    loaded: dict[str, LoadedHead], state_dicts: list[dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    head = loaded["hyperparameters"]
    sd = state_dicts[0]
    cases = {
        "vit.pt": ({**sd, "pos_embedding": torch.randn(1, 10, 8)}, "pos_embedding"),
        "scalar.safetensors": ({**sd, "gate.scale": torch.tensor(2.0)}, "gate.scale"),
        "nan.pt": ({**sd, "extra.weight": torch.full((4, 4), float("nan"))}, "extra.weight"),
        "deep.pt": ({f"layer{i}.weight": torch.randn(3, 3) for i in range(80)}, "max_layers"),
    }
    for name, (bad, what) in cases.items():
        path = tmp_path / name
        if name.endswith(".safetensors"):
            _save_safetensors(bad, path)
        else:
            torch.save(bad, path)
        with pytest.raises(InvalidInputError) as info:
            predict_files(head, [path])
        assert str(path) in str(info.value) and what in str(info.value), str(info.value)
        assert "cannot be read by the head's encoder" in str(info.value)


def test_cli_predict_json_and_errors(
    heads: dict[str, Path],
    state_dicts: list[dict[str, torch.Tensor]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = [_save_safetensors(sd, tmp_path / f"m{i}.safetensors") for i, sd in enumerate(state_dicts[:2])]
    out = tmp_path / "out" / "predictions.json"
    out.parent.mkdir()  # --json writes into an existing folder only (a missing one is an error)
    args = ["--head", str(heads["hyperparameters"]), "--json", str(out), "--show_unpredictable", "true"]
    assert main(["predict", *args, *map(str, files)]) == 0
    stdout = capsys.readouterr().out
    assert f"predictions written to {out}" in stdout and all(str(f) in stdout for f in files)
    doc = json.loads(out.read_text())
    head_config = json.loads((heads["hyperparameters"] / "head" / "config.json").read_text())
    names = [t["name"] for t in head_config["task"]["targets"]]
    assert doc["task"] == "hyperparameters" and doc["targets"] == names
    assert [p["file"] for p in doc["predictions"]] == [str(f) for f in files]
    for prediction in doc["predictions"]:
        assert set(prediction["targets"]) == set(names)
        for t in head_config["task"]["targets"]:
            entry = prediction["targets"][t["name"]]
            if t["kind"] == "categorical":
                assert set(entry["probabilities"]) == set(t["classes"])
                assert sum(entry["probabilities"].values()) == pytest.approx(1.0)
            else:
                assert np.isfinite(entry["predicted"])

    bad = tmp_path / "vit.pt"
    torch.save({**state_dicts[0], "pos_embedding": torch.randn(1, 4, 4)}, bad)
    assert main(["predict", "--head", str(heads["patterns"]), str(files[0]), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zooprobe: error:") and str(bad) in err and "'pos_embedding'" in err
    assert "Traceback" not in err
    assert main(["predict", "--head", str(heads["patterns"]), str(tmp_path / "nope.pt")]) == 2
    assert "checkpoint file(s) not found" in capsys.readouterr().err
    assert main(["predict", "--head", str(tmp_path), str(files[0])]) == 2
    assert re.search(r"not a zooprobe head", capsys.readouterr().err)


@pytest.mark.slow
def test_resnet18_predict_time_and_memory(
    heads: dict[str, Path], tmp_path: Path, record_property: Any
) -> None:
    """A ResNet-18-shaped checkpoint (11.7M parameters) through `predict_files`: wall time, peak RSS."""
    from zooprobe.bench.encoder import resnet18_state_dict
    from zooprobe.core.memory import process_status_kib, reset_peak_rss

    path = tmp_path / "resnet18.safetensors"
    sd = resnet18_state_dict()
    _save_safetensors(sd, path)
    del sd
    head = load_head(heads["hyperparameters"])

    def status(field: str) -> int:
        kib = process_status_kib(field)
        assert kib is not None, f"no {field} in /proc/self/status"
        return kib

    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", threads)))  # conftest pins the threads
    reset = reset_peak_rss()  # VmHWM back to the current RSS
    before = status("VmRSS")
    start = time.perf_counter()
    try:
        results = predict_files(head, [path])
        seconds = time.perf_counter() - start
        peak = status("VmHWM")
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    assert set(results[0]["targets"]) == set(head.spec.names)
    record_property("resnet18_predict_seconds", seconds)
    record_property("resnet18_peak_rss_mib", peak / 1024)
    record_property("resnet18_rss_before_mib", before / 1024)
    record_property("torch_threads", used_threads)
    print(
        f"\nResNet-18 predict: {seconds:.2f} s, peak RSS {peak / 1024:.0f} MiB "
        f"({(peak - before) / 1024:.0f} MiB above the {before / 1024:.0f} MiB before"
        f"{'' if reset else '; VmHWM not reset: lifetime peak'}), torch threads {used_threads}"
    )


def test_batch_of_files_predicts_each_file_as_alone_with_one_shared_encoder(
    heads: dict[str, Path],
    state_dicts: list[dict[str, torch.Tensor]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Several files and heads at once (`predict_files_by_head`: files read in a thread pool, encoded once
    for both frozen heads) give every file exactly the results it gets alone; --progress reports files/s."""
    from zooprobe.inference import load_heads, predict_files_by_head

    files = [_save_safetensors(sd, tmp_path / f"m{i}.safetensors") for i, sd in enumerate(state_dicts * 2)]
    both = load_heads([heads["hyperparameters"], heads["patterns"]])
    assert both[0].model.loaded is both[1].model.loaded  # the same frozen encoder, loaded once
    together = predict_files_by_head(both, files)
    for i, file in enumerate(files):
        alone = predict_files_by_head(both, [file])
        assert [per_head[0] for per_head in alone] == [per_head[i] for per_head in together]
    assert main(["predict", "--head", str(heads["patterns"]), *map(str, files), "--progress", "true"]) == 0
    assert re.search(r"predict: 6/6 .*files/s", capsys.readouterr().err)
