"""Importers: real checkpoint files and metadata in tmp_path, read back with `load_zoo` and `datasets`.

The state dicts are tiny (a few dozen numbers) so the whole file runs in seconds; what matters is that the
weights come back bit for bit, that metadata get their schema types, and that every kind of bad input is
refused with a message naming file, row and field, or skipped and reported with ``skip_invalid``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from files import write_csv
from zooprobe.api import load_zoo
from zooprobe.errors import ConfigError, InvalidInputError
from zooprobe.zoo.importers import ImportReport, import_checkpoint_folder, import_model_zoos
from zooprobe.zoo.store import count_params

UNPICKLED: list[str] = []


class Opaque:
    """A custom class: a checkpoint holding one can only be loaded by unpickling arbitrary objects."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        UNPICKLED.append("Opaque")  # proves the object was (or was not) rebuilt
        self.__dict__.update(state)


def tiny_state_dict(seed: int, conv: bool) -> dict[str, torch.Tensor]:
    """A distinct small state dict: Conv2d + BatchNorm2d + Linear, or a two-layer MLP."""
    torch.manual_seed(seed)
    if conv:
        model: nn.Module = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    else:
        model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in sd.items():
        if k.endswith(("running_mean", "running_var")):
            v.uniform_(0.5, 1.5)
        if k.endswith("num_batches_tracked"):
            v.fill_(seed + 1)
    return sd


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def assert_same_state_dict(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert torch.equal(got[k], want[k]), k


@pytest.fixture
def checkpoint_folder(tmp_path: Path) -> tuple[Path, dict[str, dict[str, torch.Tensor]]]:
    """8 checkpoints: 3 safetensors recording their tensor order, 3 plain safetensors, 2 torch files.

    Safetensors keeps no insertion order of its own (its writer sorts the header), so a plain safetensors
    file comes back in natural module order, weight/bias/running stats inside a module
    (`zooprobe.core.checkpoints`): for these models that is their own order, so every expected dict is ``sd``.
    """
    folder = tmp_path / "ckpts"
    (folder / "sub").mkdir(parents=True)
    expected: dict[str, dict[str, torch.Tensor]] = {}
    for i in range(6):
        sd = tiny_state_dict(i, conv=i % 2 == 0)
        if i == 1:
            sd = {k: v.half() for k, v in sd.items()}  # dtypes other than float32 survive
        name = f"m{i}.safetensors" if i != 5 else "sub/m5.safetensors"
        if i < 3:
            save_file(sd, folder / name, metadata={"order": json.dumps(list(sd))})
        else:
            save_file(sd, folder / name)
            assert list(load_file(folder / name)) != list(sd)  # the file's own order is not the model's
        expected[name] = sd
    sd6 = tiny_state_dict(6, conv=True)
    torch.save(sd6, folder / "m6.pt")
    expected["m6.pt"] = sd6
    sd7 = tiny_state_dict(7, conv=False)
    torch.save({"state_dict": sd7, "epoch": 4, "hyper": {"lr": 0.1}}, folder / "m7.pth")  # unwrapped
    expected["m7.pth"] = sd7
    return folder, expected


CSV_SPLITS = ["train", "Train", "val", "valid", "validation", "test", "train", "TEST"]
CSV_SPLIT_NAMES = ["train", "train", "validation", "validation", "validation", "test", "train", "test"]


def folder_rows(files: list[str]) -> list[dict[str, Any]]:
    rows = []
    for i, name in enumerate(files):
        rows.append(
            {
                "file": name,
                "split": CSV_SPLITS[i],
                "test_accuracy": f"{0.5 + i / 20:.2f}",
                "has_batch_norm": ["true", "FALSE", "1", "0", "yes", "No", "True", "false"][i],
                "epochs": "" if i == 4 else str(i + 1),
                "optimizer": "adam" if i % 2 else "sgd",
                "lr_schedule": "cosine" if i % 3 else "constant",
                "width_mult": str(0.25 * (i + 1)),
                "n_blocks": str(i % 3),
                "augmented": "true" if i % 2 else "false",
                "notes": "first" if i == 0 else "",
                "run_code": f"00{i}",
            }
        )
    return rows


def test_folder_csv_roundtrip_types_and_splits(
    tmp_path: Path, checkpoint_folder: tuple[Path, dict[str, dict[str, torch.Tensor]]]
) -> None:
    folder, expected = checkpoint_folder
    files = list(expected)
    meta_path = write_csv(tmp_path / "meta.csv", folder_rows(files))
    out = tmp_path / "zoo"

    report = import_checkpoint_folder(folder, meta_path, out)

    assert isinstance(report, ImportReport)
    assert (report.imported, report.runs, report.skipped) == (8, 8, [])
    assert "Imported 8" in report.summary() and "Skipped 0" in report.summary()
    zoo = load_zoo(out)
    assert len(zoo) == 8
    assert zoo.manifest["kind"] == "import" and zoo.manifest["importer"] == "checkpoint_folder"
    meta = zoo.metadata()
    for i in range(len(zoo)):
        name = meta["file"].iloc[i]
        assert_same_state_dict(zoo.state_dict(i), expected[name])
        assert meta["model_id"].iloc[i] == Path(name).stem
        assert meta["num_params"].iloc[i] == count_params(expected[name])
        assert meta["split"].iloc[i] == CSV_SPLIT_NAMES[files.index(name)]
    by_file = meta.set_index("file").loc[files]  # in input order
    # known fields get their schema types, extras an inferred one; missing values stay missing
    assert str(meta["test_accuracy"].dtype) == "float32"
    assert by_file.loc["m3.safetensors", "test_accuracy"] == pytest.approx(0.65)
    assert meta["has_batch_norm"].dtype == bool
    assert by_file["has_batch_norm"].tolist() == [True, False, True, False, True, False, True, False]
    assert pd.isna(by_file.loc["m4.safetensors", "epochs"]) and by_file.loc["m6.pt", "epochs"] == 7
    assert meta["is_final"].dtype == bool and meta["is_final"].all()
    assert meta["augmented"].dtype == bool
    assert str(meta["n_blocks"].dtype) == "int64" and str(meta["width_mult"].dtype) == "float64"
    assert by_file["run_code"].tolist()[:2] == ["000", "001"]  # leading zeros: an id, kept as text
    assert by_file["notes"].iloc[0] == "first" and by_file["notes"].iloc[1:].isna().all()
    assert pd.isna(meta["dataset"]).all()  # known fields absent from the input are not invented
    card = (out / "README.md").read_text()
    assert "`lr_schedule`" in card and "Imported from column `lr_schedule` of `meta.csv`" in card

    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    assert {s: ds[s].num_rows for s in ds} == meta["split"].value_counts().to_dict()
    row = ds["train"][0]
    assert isinstance(row["has_batch_norm"], bool) and isinstance(row["n_blocks"], int)


def test_folder_jsonl_runs_and_deterministic_split(
    tmp_path: Path, checkpoint_folder: tuple[Path, dict[str, dict[str, torch.Tensor]]]
) -> None:
    folder, expected = checkpoint_folder
    rows = [
        {
            "file": name,
            "run": f"run{i // 2}",
            "checkpoint_epoch": i % 2 + 1,
            "test_accuracy": 0.5 + i / 20,
            "has_batch_norm": bool(i % 2),
            "tag": None if i == 3 else f"t{i}",
        }
        for i, name in enumerate(expected)
    ]
    meta_path = write_jsonl(tmp_path / "meta.jsonl", rows)

    first = import_checkpoint_folder(folder, meta_path, tmp_path / "a", id_column="run", seed=3)
    import_checkpoint_folder(folder, meta_path, tmp_path / "b", id_column="run", seed=3)
    subset = write_jsonl(tmp_path / "subset.jsonl", rows[:4])
    import_checkpoint_folder(folder, subset, tmp_path / "c", id_column="run", seed=3)

    assert (first.imported, first.runs) == (8, 4)
    meta_a = load_zoo(tmp_path / "a").metadata()
    meta_b = load_zoo(tmp_path / "b").metadata()
    meta_c = load_zoo(tmp_path / "c").metadata()
    split_a = meta_a.groupby("model_id")["split"].agg(set)
    assert all(len(s) == 1 for s in split_a)  # every run in one split
    assert split_a.to_dict() == meta_b.groupby("model_id")["split"].agg(set).to_dict()
    for run, split in meta_c.groupby("model_id")["split"].agg(set).items():
        assert split == split_a[run]  # a run's split does not depend on the other runs
    assert sorted(meta_a["model_id"].unique()) == ["run0", "run1", "run2", "run3"]
    assert (meta_a["is_final"] == (meta_a["checkpoint_epoch"] == 2)).all()
    assert meta_a["has_batch_norm"].dtype == bool and str(meta_a["checkpoint_epoch"].dtype) == "int32"
    tags = meta_a.set_index("file").loc[list(expected), "tag"]
    assert pd.isna(tags.iloc[3])
    assert tags.drop(tags.index[3]).tolist() == ["t0", "t1", "t2", "t4", "t5", "t6", "t7"]


def test_pickled_object_is_refused_without_unpickling(tmp_path: Path) -> None:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    torch.save({"w": torch.ones(1), "obj": Opaque()}, folder / "evil.pt")
    meta = write_csv(tmp_path / "meta.csv", [{"file": "evil.pt"}])
    UNPICKLED.clear()
    with pytest.raises(InvalidInputError, match="refused for safety") as err:
        import_checkpoint_folder(folder, meta, tmp_path / "zoo")
    assert "evil.pt" in str(err.value) and "Opaque" in str(err.value)
    assert UNPICKLED == []
    assert not (tmp_path / "zoo").exists()


def test_mistyped_field_error_and_skip(
    tmp_path: Path, checkpoint_folder: tuple[Path, dict[str, dict[str, torch.Tensor]]]
) -> None:
    folder, expected = checkpoint_folder
    rows = [{"file": name, "test_accuracy": "0.5"} for name in list(expected)[:4]]
    rows[2]["test_accuracy"] = "abc"
    meta = write_csv(tmp_path / "meta.csv", rows)

    with pytest.raises(InvalidInputError) as err:
        import_checkpoint_folder(folder, meta, tmp_path / "zoo")
    message = str(err.value)
    assert str(meta) in message and "row 3 (line 4)" in message and "'test_accuracy'" in message
    assert not (tmp_path / "zoo").exists()  # nothing half-written

    report = import_checkpoint_folder(folder, meta, tmp_path / "zoo", skip_invalid=True)
    assert report.imported == 3 and len(report.skipped) == 1
    where, reason = report.skipped[0]
    assert "row 3" in where and "test_accuracy" in reason and "'abc' is not a number" in reason
    assert "Skipped 1" in report.summary() and "test_accuracy" in report.summary()
    zoo = load_zoo(tmp_path / "zoo")
    assert len(zoo) == 3 and zoo.manifest["skipped"] == 1


def test_bad_checkpoints_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    good = tiny_state_dict(0, conv=False)
    save_file(good, folder / "good.safetensors")
    nan = tiny_state_dict(1, conv=False)
    nan["2.weight"][0, 0] = float("nan")
    save_file(nan, folder / "nan.safetensors")
    save_file(good, folder / "cut.safetensors")
    data = (folder / "cut.safetensors").read_bytes()
    (folder / "cut.safetensors").write_bytes(data[: len(data) - 7])
    torch.save({"w": torch.ones(2), "step": 3}, folder / "notflat.pt")

    def run(name: str, **kw: Any) -> ImportReport:
        meta = write_csv(tmp_path / f"{name}.csv", [{"file": "good.safetensors"}, {"file": name}])
        return import_checkpoint_folder(folder, meta, tmp_path / f"zoo-{name}", **kw)

    with pytest.raises(InvalidInputError, match=r"nan\.safetensors.*'2\.weight'.*non-finite"):
        run("nan.safetensors")
    with pytest.raises(InvalidInputError, match=r"cut\.safetensors: not a valid safetensors file"):
        run("cut.safetensors")
    with pytest.raises(InvalidInputError, match=r"ghost\.safetensors: checkpoint file not found"):
        run("ghost.safetensors")
    with pytest.raises(InvalidInputError, match=r"notflat\.pt: entry 'step' is a int, not a tensor"):
        run("notflat.pt")
    with pytest.raises(InvalidInputError, match="must be relative to the checkpoint folder"):
        run("../outside.pt")
    report = run("cut.safetensors", skip_invalid=True)
    assert report.imported == 1 and "cut.safetensors" in report.skipped[0][1]
    assert not any(p.name.startswith(".zoo") for p in tmp_path.iterdir())  # no temporary folders left


def test_bad_metadata(tmp_path: Path) -> None:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for name in ("a", "b"):
        save_file(tiny_state_dict(0, conv=False), folder / f"{name}.safetensors")
    out = tmp_path / "zoo"
    header_only = tmp_path / "empty.csv"
    header_only.write_text("file,test_accuracy\n")
    with pytest.raises(InvalidInputError, match="no data rows"):
        import_checkpoint_folder(folder, header_only, out)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InvalidInputError, match="no data rows"):
        import_checkpoint_folder(folder, tmp_path / "empty.jsonl", out)
    (tmp_path / "meta.txt").write_text("file\na.safetensors\n")
    with pytest.raises(InvalidInputError, match=r"\.csv or \.jsonl"):
        import_checkpoint_folder(folder, tmp_path / "meta.txt", out)
    with pytest.raises(InvalidInputError, match="metadata file not found"):
        import_checkpoint_folder(folder, tmp_path / "missing.csv", out)
    with pytest.raises(InvalidInputError, match="no 'path' column"):
        meta = write_csv(tmp_path / "m.csv", [{"file": "a.safetensors"}])
        import_checkpoint_folder(folder, meta, out, file_column="path")
    dup_rows = [{"file": "a.safetensors", "id": "x"}, {"file": "b.safetensors", "id": "x"}]
    dup = write_csv(tmp_path / "dup.csv", dup_rows)
    with pytest.raises(InvalidInputError, match=r"row 2 .*model_id 'x' is also in row 1"):
        import_checkpoint_folder(folder, dup, out, id_column="id")
    bad_split = write_csv(tmp_path / "split.csv", [{"file": "a.safetensors", "split": "holdout"}])
    with pytest.raises(InvalidInputError, match=r"row 1 .*split 'holdout'"):
        import_checkpoint_folder(folder, bad_split, out)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"file": "a.safetensors"}\n{"file": \n')
    with pytest.raises(InvalidInputError, match=r"row 2 \(line 2\): not valid JSON"):
        import_checkpoint_folder(folder, broken, out)
    with pytest.raises(InvalidInputError, match="no valid checkpoint"):
        import_checkpoint_folder(folder, bad_split, out, skip_invalid=True)
    with pytest.raises(ConfigError, match="split_fractions"):
        import_checkpoint_folder(folder, header_only, out, split_fractions=(0.5, 0.5, 0.5))
    assert not out.exists()


def test_output_must_be_new_unless_overwriting_a_zoo(tmp_path: Path) -> None:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    save_file(tiny_state_dict(0, conv=False), folder / "a.safetensors")
    meta = write_csv(tmp_path / "meta.csv", [{"file": "a.safetensors", "split": "test"}])
    with pytest.raises(InvalidInputError, match="not written by zooprobe"):
        import_checkpoint_folder(folder, meta, folder, overwrite=True)  # never into the source folder
    out = tmp_path / "zoo"
    import_checkpoint_folder(folder, meta, out)
    with pytest.raises(InvalidInputError, match="choose a new folder"):
        import_checkpoint_folder(folder, meta, out)
    write_csv(meta, [{"file": "a.safetensors", "split": "train"}])
    import_checkpoint_folder(folder, meta, out, overwrite=True)
    assert load_zoo(out).metadata()["split"].tolist() == ["train"]


# ---------------------------------------------------------------------------------------------- Model Zoos
def make_model_zoos(root: Path, n_models: int = 4) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
    """Model Zoos layout: one directory per run, params.json, result.json (3 epochs), checkpoint dirs."""
    weights: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    for m in range(n_models):
        run = root / f"NN_tune_trainable_{m:05d}_seed={m}"
        run.mkdir(parents=True)
        params = {
            "model::type": "CNN",
            "model::nlin": ["tanh", "relu", "sigmoid", "gelu"][m],
            "model::dropout": [0, 0.5][m % 2],
            "model::init_type": "kaiming_uniform",
            "model::channels_in": 1,
            "model::use_bias": True,
            "optim::optimizer": ["Adam", "sgd"][m % 2],
            "optim::lr": 1e-3,
            "optim::wd": 1e-4,
            "optim::momentum": 0.9,
            "seed": m,
            "training::batchsize": 32,
            "training::epochs_train": 3,
            "dataset::dump": "/data/mnist.pt",
        }
        (run / "params.json").write_text(json.dumps(params))
        lines = []
        base = tiny_state_dict(100 + m, conv=True)
        for epoch in (1, 2, 3):
            result = {
                "training_iteration": epoch,
                "test_acc": 0.1 * epoch + m / 100,
                "train_acc": 0.12 * epoch + m / 100,
                "test_loss": 2.0 / epoch,
                "train_loss": 1.8 / epoch,
                "time_this_iter_s": 0.3,
            }
            if m == 0:
                result["val_acc"] = 0.11 * epoch
            lines.append(json.dumps(result))
            sd = {k: v + epoch if v.is_floating_point() else v for k, v in base.items()}
            ckpt = run / (f"checkpoint_{epoch}" if m == 3 else f"checkpoint_{epoch:06d}")
            ckpt.mkdir()
            torch.save(sd, ckpt / "checkpoints")
            weights[(run.name, epoch)] = sd
        (run / "result.json").write_text("\n".join(lines) + "\n")
    return weights


def test_model_zoos_last_and_all(tmp_path: Path) -> None:
    root = tmp_path / "tune_zoo_mnist"
    weights = make_model_zoos(root)
    (root / "experiment_state.json").write_text("{}")  # files next to the run directories are ignored

    report = import_model_zoos(root, tmp_path / "last")
    assert (report.imported, report.runs, report.skipped) == (4, 4, [])
    zoo = load_zoo(tmp_path / "last")
    meta = zoo.metadata()
    assert (meta["checkpoint_epoch"] == 3).all() and meta["is_final"].all()
    for i in range(len(zoo)):
        assert_same_state_dict(zoo.state_dict(i), weights[(meta["model_id"].iloc[i], 3)])
    by_run = meta.set_index("model_id")
    row = by_run.loc["NN_tune_trainable_00001_seed=1"]
    assert (row["family"], row["activation"], row["optimizer"]) == ("cnn", "relu", "sgd")
    assert row["init"] == "kaiming_uniform"
    assert row["dropout"] == pytest.approx(0.5) and row["has_dropout"] and bool(row["has_conv_layers"])
    assert row["learning_rate"] == pytest.approx(1e-3) and row["weight_decay"] == pytest.approx(1e-4)
    assert row["momentum"] == pytest.approx(0.9)
    assert (row["batch_size"], row["epochs"], row["seed"]) == (32, 3, 1)
    assert row["test_accuracy"] == pytest.approx(0.31) and row["train_accuracy"] == pytest.approx(0.37)
    assert row["generalization_gap"] == pytest.approx(0.06, abs=1e-6)
    assert row["test_loss"] == pytest.approx(2 / 3) and pd.isna(row["val_accuracy"])
    assert row["num_params"] == count_params(weights[("NN_tune_trainable_00001_seed=1", 3)])
    assert (row["model__channels_in"], row["model__use_bias"]) == (1, True)
    assert row["dataset__dump"] == "/data/mnist.pt"
    assert str(meta["model__channels_in"].dtype) == "int64" and meta["model__use_bias"].dtype == bool
    first_run = by_run.loc["NN_tune_trainable_00000_seed=0"]
    assert first_run["val_accuracy"] == pytest.approx(0.33)
    assert first_run["optimizer"] == "adam" and not first_run["has_dropout"]  # "Adam" lower-cased
    card = (tmp_path / "last" / "README.md").read_text()
    assert "Imported from params.json key `model::channels_in`" in card

    report = import_model_zoos(root, tmp_path / "all", epochs="all")
    assert (report.imported, report.runs) == (12, 4)
    zoo = load_zoo(tmp_path / "all")
    meta = zoo.metadata()
    assert sorted(meta["checkpoint_epoch"].tolist()) == [1] * 4 + [2] * 4 + [3] * 4
    assert (meta["is_final"] == (meta["checkpoint_epoch"] == 3)).all()
    assert (meta.groupby("model_id")["split"].nunique() == 1).all()
    for i in range(len(zoo)):
        key = (meta["model_id"].iloc[i], int(meta["checkpoint_epoch"].iloc[i]))
        assert_same_state_dict(zoo.state_dict(i), weights[key])

    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(str(tmp_path / "all"), cache_dir=str(tmp_path / "hf"))
    assert {s: ds[s].num_rows for s in ds} == meta["split"].value_counts().to_dict()


def test_model_zoos_bad_inputs(tmp_path: Path) -> None:
    root = tmp_path / "zoo_src"
    make_model_zoos(root, n_models=3)
    runs = sorted(p for p in root.iterdir())
    result = runs[1] / "result.json"
    lines = result.read_text().splitlines()
    lines[1] = lines[1][:20]  # a truncated line
    result.write_text("\n".join(lines) + "\n")
    (runs[2] / "params.json").unlink()

    with pytest.raises(InvalidInputError, match=r"result\.json line 2: not valid JSON") as err:
        import_model_zoos(root, tmp_path / "out")
    assert str(result) in str(err.value)
    report = import_model_zoos(root, tmp_path / "out", skip_invalid=True)
    assert report.imported == 1 and len(report.skipped) == 2
    reasons = " ".join(reason for _, reason in report.skipped)
    assert "line 2" in reasons and "params.json not found" in reasons
    assert "Skipped 2" in report.summary()

    nan_root = tmp_path / "nan_src"
    weights = make_model_zoos(nan_root, n_models=1)
    (run_dir,) = list(nan_root.iterdir())
    sd = dict(weights[(run_dir.name, 3)])
    sd["3.weight"] = sd["3.weight"].clone()
    sd["3.weight"][0, 0] = float("inf")
    torch.save(sd, run_dir / "checkpoint_000003" / "checkpoints")
    with pytest.raises(InvalidInputError, match=r"checkpoint_000003/checkpoints: tensor '3\.weight' has non"):
        import_model_zoos(nan_root, tmp_path / "nan_out")
    with pytest.raises(ConfigError, match="epochs"):
        import_model_zoos(nan_root, tmp_path / "nan_out", epochs="first")  # type: ignore[arg-type]
