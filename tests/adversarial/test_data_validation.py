"""Wrong data must never be accepted silently (issue 12, "Data safety and input validation").

Out-of-range metadata on import, models copied between splits, zoo files that disagree with their manifest,
unusable targets, nonsense training options, run and encoder folders whose files are not what they claim:
each is a clear error (exit code 2, one line saying what and where and what to do) or, where the data can
still be used, a warning that is also recorded where the user looks later. The hostile inputs are generated
here; the user's files are byte-identical afterwards.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from harness import assert_unchanged, run_cli, snapshot
from safetensors.torch import save_file

from files import write_csv
from zooprobe.api import load_zoo
from zooprobe.zoo.schema import FIELD_BY_NAME, range_violations
from zooprobe.zoo.store import find_split_leaks, split_leaks

TRAIN_FAST = ("--optim.epochs", "1", "--optim.batch_size", "16", "--progress", "false")


# ---------------------------------------------------------------------------------------------- helpers
def _checkpoints(folder: Path, n: int = 3) -> list[str]:
    """`n` tiny, distinct safetensors checkpoints in `folder`; their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        torch.manual_seed(i)
        layer = torch.nn.Linear(3, 2)
        name = f"m{i}.safetensors"
        save_file({k: v.detach().contiguous() for k, v in layer.state_dict().items()}, str(folder / name))
        names.append(name)
    return names


def _text(printed: str) -> str:
    """Printed text with the terminal's line wrapping undone."""
    return " ".join(printed.split())


def _import_inputs(tmp_path: Path, accuracies: list[object]) -> tuple[Path, Path]:
    """A checkpoint folder and a metadata CSV giving each checkpoint a test accuracy."""
    folder = tmp_path / "ckpts"
    names = _checkpoints(folder, len(accuracies))
    rows = [{"file": n, "test_accuracy": a} for n, a in zip(names, accuracies, strict=True)]
    return folder, write_csv(tmp_path / "meta.csv", rows)


def _model_zoos(root: Path, test_accs: list[float], lr: float = 1e-3) -> Path:
    """The Model Zoos layout (params.json, result.json, checkpoint_000001/checkpoints) for a few runs."""
    for m, acc in enumerate(test_accs):
        run = root / f"run_{m:03d}"
        (run / "checkpoint_000001").mkdir(parents=True)
        params = {"model::nlin": "relu", "optim::optimizer": "adam", "optim::lr": lr, "seed": m}
        (run / "params.json").write_text(json.dumps(params))
        result = {"training_iteration": 1, "test_acc": acc, "train_acc": 0.5, "test_loss": 1.0}
        (run / "result.json").write_text(json.dumps(result) + "\n")
        torch.manual_seed(m)
        torch.save(torch.nn.Linear(3, 2).state_dict(), run / "checkpoint_000001" / "checkpoints")
    return root


def _copy_zoo(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _data_file(zoo: Path, split: str) -> Path:
    (path,) = sorted((zoo / "data").glob(f"{split}-*.parquet"))
    return path


def _rewrite(zoo: Path, split: str, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite the split's (single) data file with `change` applied, keeping its row count and schema."""
    path = _data_file(zoo, split)
    table = pq.read_table(path)
    pq.write_table(change(table).cast(table.schema), path)


def _set(table: pa.Table, column: str, values: list[object]) -> pa.Table:
    i = table.schema.get_field_index(column)
    return table.set_column(i, column, pa.array(values, type=table.schema.field(column).type))


@pytest.fixture(scope="module")
def leaky_zoo(head_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`head_zoo` where the first test model's weights are an exact copy of the first train model's."""
    zoo = _copy_zoo(head_zoo, tmp_path_factory.mktemp("leaky") / "zoo")
    weights = pq.read_table(_data_file(zoo, "train")).column("weights")[0].as_py()
    _rewrite(zoo, "test", lambda t: _set(t, "weights", [weights, *t.column("weights").to_pylist()[1:]]))
    return zoo


@pytest.fixture(scope="module")
def odd_targets_zoo(head_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`head_zoo` where has_layer_norm is constant and init empty in train, test_accuracy empty in
    validation."""
    zoo = _copy_zoo(head_zoo, tmp_path_factory.mktemp("odd") / "zoo")

    def train(t: pa.Table) -> pa.Table:
        return _set(_set(t, "has_layer_norm", [False] * t.num_rows), "init", [None] * t.num_rows)

    _rewrite(zoo, "train", train)
    _rewrite(zoo, "validation", lambda t: _set(t, "test_accuracy", [None] * t.num_rows))
    return zoo


@pytest.fixture(scope="module")
def finished_run(head_zoo: Path, head_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch accuracy run on `head_zoo`."""
    from zooprobe.api import train
    from zooprobe.training.config import OptimConfig, TrainConfig

    out = tmp_path_factory.mktemp("runs") / "acc"
    cfg = TrainConfig(
        zoo=str(head_zoo), encoder=str(head_encoder), optim=OptimConfig(epochs=1, batch_size=16)
    )
    train(cfg, out, progress=False)
    return out


# ------------------------------------------------------------------------------- 1. value ranges on import
@pytest.mark.parametrize("value", ["1.5", "-0.2", "250"])
def test_out_of_range_accuracy_in_a_csv_is_an_error(tmp_path: Path, value: str) -> None:
    folder, meta = _import_inputs(tmp_path, ["0.5", value, "0.7"])
    before = snapshot(tmp_path)
    r = run_cli("zoo", "import-folder", folder, "--metadata", meta, "--output", tmp_path / "zoo")
    r.assert_clear_error("meta.csv row 2 (line 3)", "'test_accuracy'", value, "valid range [0, 1]")
    if value == "1.5":
        r.assert_clear_error("--accuracy_percent true")
    assert_unchanged(before, tmp_path)  # and no zoo was written


def test_out_of_range_rows_are_skipped_and_listed_with_skip_invalid(tmp_path: Path) -> None:
    folder, meta = _import_inputs(tmp_path, ["0.5", "1.5", "-0.2"])
    before = snapshot(tmp_path)
    args = ("--metadata", meta, "--output", tmp_path / "zoo", "--skip_invalid", "true")
    r = run_cli("zoo", "import-folder", folder, *args)
    assert r.code == 0 and not r.traceback, r.err
    out = _text(r.out)
    assert "Skipped 2" in out and "1.5 is outside the valid range [0, 1]" in out and "-0.2" in out
    assert load_zoo(tmp_path / "zoo").metadata()["test_accuracy"].tolist() == [0.5]
    assert_unchanged(before, tmp_path, allow_new=True)


def test_percentages_need_the_explicit_flag(tmp_path: Path) -> None:
    folder, meta = _import_inputs(tmp_path, ["93.5", "50", "100"])
    before = snapshot(tmp_path)
    r = run_cli("zoo", "import-folder", folder, "--metadata", meta, "--output", tmp_path / "no")
    r.assert_clear_error("'test_accuracy'", "93.5", "accuracy_percent")
    args = ("--metadata", meta, "--output", tmp_path / "zoo", "--accuracy_percent", "true")
    r = run_cli("zoo", "import-folder", folder, *args)
    assert r.code == 0, r.err
    accs = sorted(load_zoo(tmp_path / "zoo").metadata()["test_accuracy"].tolist())
    assert accs == pytest.approx([0.5, 0.935, 1.0])
    assert json.loads((tmp_path / "zoo" / "zooprobe_manifest.json").read_text())["accuracy_percent"] is True
    assert_unchanged(before, tmp_path, allow_new=True)

    folder2, meta2 = _import_inputs(tmp_path / "b", ["93.5", "250"])
    r = run_cli("zoo", "import-folder", folder2, "--metadata", meta2, "--output", tmp_path / "b" / "zoo",
                "--accuracy_percent", "true")  # fmt: skip
    r.assert_clear_error("row 2", "'test_accuracy'", "250", "not a percentage in [0, 100]")


def test_fractions_under_the_percent_flag_warn(tmp_path: Path) -> None:
    folder, meta = _import_inputs(tmp_path, ["0.5", "0.93"])
    with pytest.warns(UserWarning, match="probably gives fractions"):
        r = run_cli("zoo", "import-folder", folder, "--metadata", meta, "--output", tmp_path / "zoo",
                    "--accuracy_percent", "true")  # fmt: skip
    assert r.code == 0 and "Warning: accuracy_percent=True but every accuracy was at most 1" in _text(r.out)


def test_other_fields_have_ranges_too(tmp_path: Path) -> None:
    folder = tmp_path / "ckpts"
    names = _checkpoints(folder, 1)
    cases = {
        "learning_rate": "0",
        "weight_decay": "-0.001",
        "dropout": "1.5",
        "test_loss": "-3",
        "batch_size": "0",
    }
    for field, value in cases.items():
        meta = write_csv(tmp_path / f"{field}.csv", [{"file": names[0], field: value}])
        r = run_cli("zoo", "import-folder", folder, "--metadata", meta, "--output", tmp_path / f"{field}-zoo")
        r.assert_clear_error(f"{field}.csv row 1", f"'{field}'", value, FIELD_BY_NAME[field].range_text())


def test_model_zoos_result_out_of_range_is_an_error(tmp_path: Path) -> None:
    root = _model_zoos(tmp_path / "mz", [0.5, 7.5, 0.6])
    before = snapshot(root)
    r = run_cli("zoo", "import-modelzoos", root, "--output", tmp_path / "zoo")
    r.assert_clear_error("run_001", "result.json line 1", "'test_acc'", "'test_accuracy'", "7.5", "[0, 1]")
    assert_unchanged(before, root)
    assert not (tmp_path / "zoo").exists()

    r = run_cli("zoo", "import-modelzoos", root, "--output", tmp_path / "skip", "--skip_invalid", "true")
    assert r.code == 0 and "Skipped 1" in r.out and "run_001" in _text(r.out)
    r = run_cli("zoo", "import-modelzoos", root, "--output", tmp_path / "pct", "--accuracy_percent", "true")
    assert r.code == 0, r.err
    accs = sorted(load_zoo(tmp_path / "pct").metadata()["test_accuracy"].tolist())
    assert accs == pytest.approx([0.005, 0.006, 0.075])
    assert_unchanged(before, root)

    bad_lr = _model_zoos(tmp_path / "mz-lr", [0.5], lr=-0.1)
    r = run_cli("zoo", "import-modelzoos", bad_lr, "--output", tmp_path / "lr")
    r.assert_clear_error("run_000", "params.json", "'optim::lr'", "'learning_rate'", "-0.1", "> 0")


def test_generated_zoos_stay_inside_the_declared_ranges(tiny_zoo: Path) -> None:
    from zooprobe.zoo.space import ZooConfig, sample_cohort

    cfg = ZooConfig(preset="bench").resolved()
    for cohort in range(cfg.n_cohorts):
        for spec in sample_cohort(cfg, cohort):
            assert range_violations(spec.metadata()) == [], spec
    for row in load_zoo(tiny_zoo).metadata().to_dict("records"):
        assert range_violations(row) == [], row
    card = (tiny_zoo / "README.md").read_text()
    assert "Accuracy on the task's test split. Valid range: [0, 1]." in card
    assert "Peak learning rate (the constant one without a schedule). Valid range: > 0." in card


# ------------------------------------------------------------------------------- 2. leaks between splits
def test_find_split_leaks() -> None:
    leaks = find_split_leaks(["a", "b", "a", "c", "c"], ["m1", "m2", "m3", "m4", "m5"],
                             ["train", "train", "test", "validation", "validation"])  # fmt: skip
    assert [leak.to_dict() for leak in leaks] == [
        {"hash": "a", "model_ids": ["m1", "m3"], "splits": ["train", "test"]}
    ]  # c: two copies inside one split are no leak


def test_import_warns_about_models_copied_between_splits(tmp_path: Path) -> None:
    folder = tmp_path / "ckpts"
    names = _checkpoints(folder, 3)
    shutil.copy(folder / names[0], folder / "copy_of_m0.safetensors")
    rows = [{"file": n, "split": s} for n, s in zip(names, ["train", "train", "test"], strict=True)]
    meta = write_csv(tmp_path / "meta.csv", [*rows, {"file": "copy_of_m0.safetensors", "split": "test"}])
    before = snapshot(tmp_path)
    with pytest.warns(UserWarning, match="identical weights in more than one split"):
        r = run_cli("zoo", "import-folder", folder, "--metadata", meta, "--output", tmp_path / "zoo")
    assert r.code == 0, r.err
    out = _text(r.out)
    assert (
        "Warning: 1 checkpoint(s) have identical weights" in out
        and "'m0' = 'copy_of_m0' in train/test" in out
    )
    manifest = json.loads((tmp_path / "zoo" / "zooprobe_manifest.json").read_text())
    assert manifest["split_leaks"][0]["model_ids"] == ["m0", "copy_of_m0"]
    assert "allow_split_leaks" in manifest["warnings"][0]
    assert_unchanged(before, tmp_path, allow_new=True)


@pytest.mark.filterwarnings("ignore:.*used to pretrain the encoder")  # the copied train model is one of them
def test_training_refuses_a_zoo_with_models_copied_between_splits(
    leaky_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    meta = load_zoo(leaky_zoo).metadata()
    train_id = meta[meta["split"] == "train"]["model_id"].iloc[0]
    test_id = meta[meta["split"] == "test"]["model_id"].iloc[0]
    assert [leak.model_ids for leak in split_leaks(load_zoo(leaky_zoo).final())] == [(train_id, test_id)]
    before = snapshot(leaky_zoo)
    args = ("--zoo", leaky_zoo, "--encoder", head_encoder, *TRAIN_FAST)
    r = run_cli("train", "--task", "accuracy", "--output", tmp_path / "run", *args)
    r.assert_clear_error("identical weights", train_id, test_id, "--allow_split_leaks true")
    assert not (tmp_path / "run" / "checkpoints").exists()

    with pytest.warns(UserWarning, match="allow_split_leaks=True, so the run is marked"):
        r = run_cli(
            "train",
            "--task",
            "accuracy",
            "--output",
            tmp_path / "ok",
            *args,
            "--allow_split_leaks",
            "true",
            "--allow_overlap",
            "true",
        )
    assert r.code == 0, r.err
    assert_unchanged(before, leaky_zoo)


def test_bench_refuses_a_zoo_with_models_copied_between_splits(
    leaky_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    before = snapshot(leaky_zoo)
    r = run_cli("bench", "--zoo", leaky_zoo, "--encoder", head_encoder, "--output", tmp_path / "bench",
                "--tasks", "[accuracy]", "--methods", "[floor]", "--progress", "false")  # fmt: skip
    r.assert_clear_error("identical weights", "allow_split_leaks")
    assert not (tmp_path / "bench" / "bench.json").exists()
    assert_unchanged(before, leaky_zoo)


# ------------------------------------------------------------------------------- 3. files vs manifest
def test_a_stray_data_file_is_refused(tiny_zoo: Path, tmp_path: Path) -> None:
    zoo = _copy_zoo(tiny_zoo, tmp_path / "zoo")
    shutil.copy(_data_file(zoo, "train"), zoo / "data" / "train-copy.parquet")
    before = snapshot(zoo)
    r = run_cli("zoo", "summary", zoo)
    r.assert_clear_error("stray file data/train-copy.parquet", "train 12, validation 2, test 2 rows")
    assert_unchanged(before, zoo)
    (zoo / "zooprobe_manifest.json").unlink()  # without a manifest the naming rule still applies
    r = run_cli("zoo", "summary", zoo)
    r.assert_clear_error("stray file data/train-copy.parquet")


def test_data_files_must_form_complete_sets_and_match_the_manifest(tiny_zoo: Path, tmp_path: Path) -> None:
    zoo = _copy_zoo(tiny_zoo, tmp_path / "zoo")
    train = _data_file(zoo, "train")
    train.rename(zoo / "data" / "train-00000-of-00002.parquet")
    r = run_cli("zoo", "summary", zoo)
    r.assert_clear_error("data/train-00001-of-00002.parquet is missing")

    (zoo / "data" / "train-00000-of-00002.parquet").rename(train)
    shutil.copy(train, zoo / "data" / "train-00000-of-00002.parquet")  # a leftover of an older write
    r = run_cli("zoo", "summary", zoo)
    r.assert_clear_error("train files of different sets", "of-00001, of-00002")

    (zoo / "data" / "train-00000-of-00002.parquet").unlink()
    pq.write_table(pq.read_table(train).slice(0, 5), train)  # replaced by a file with fewer rows
    r = run_cli("zoo", "summary", zoo)
    r.assert_clear_error("split 'train' has 5 row(s)", "records 12", "train-00000-of-00001.parquet")


def test_zoos_without_a_manifest_keep_loading(tiny_zoo: Path, tmp_path: Path) -> None:
    zoo = _copy_zoo(tiny_zoo, tmp_path / "zoo")
    (zoo / "zooprobe_manifest.json").unlink()
    _data_file(zoo, "train").rename(
        zoo / "data" / "train-00000-of-00001-0123456789abcdef.parquet"
    )  # older Hub
    assert len(load_zoo(zoo)) == 16


# ------------------------------------------------------------------------------------------ 4. targets
def test_a_target_the_task_cannot_predict_lists_the_valid_ones(
    head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    before = snapshot(head_zoo)
    r = run_cli("train", "--task", "accuracy", "--targets", "[optimizer]", "--zoo", head_zoo,
                "--encoder", head_encoder, "--output", tmp_path / "run", *TRAIN_FAST)  # fmt: skip
    r.assert_clear_error(
        "target 'optimizer' cannot be predicted by task 'accuracy'", "valid targets", "test_accuracy"
    )
    r = run_cli("train", "--task", "patterns", "--targets", "[test_accuracy]", "--zoo", head_zoo,
                "--encoder", head_encoder, "--output", tmp_path / "run2", *TRAIN_FAST)  # fmt: skip
    r.assert_clear_error("patterns are boolean columns", "has_conv_layers")
    assert_unchanged(before, head_zoo)


def test_explicit_targets_that_are_constant_or_empty_in_train_are_errors(
    odd_targets_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    before = snapshot(odd_targets_zoo)
    common = ("--zoo", odd_targets_zoo, "--encoder", head_encoder, *TRAIN_FAST)
    r = run_cli(
        "train", "--task", "patterns", "--targets", "[has_layer_norm]", "--output", tmp_path / "a", *common
    )
    r.assert_clear_error("target 'has_layer_norm' has a single value (False)", "drop it from --targets")
    r = run_cli(
        "train", "--task", "hyperparameters", "--targets", "[init]", "--output", tmp_path / "b", *common
    )
    r.assert_clear_error("target 'init' has no values in the train split")
    assert_unchanged(before, odd_targets_zoo)


def test_unusable_default_targets_are_dropped_and_empty_splits_warn(
    odd_targets_zoo: Path, head_encoder: Path
) -> None:
    from zooprobe.api import load_encoder
    from zooprobe.training.config import TrainConfig
    from zooprobe.training.data_loader import prepare_data

    encoder = load_encoder(head_encoder)
    zoo = load_zoo(odd_targets_zoo)
    cfg = TrainConfig(task="patterns", zoo=str(odd_targets_zoo), encoder=str(head_encoder))
    with pytest.warns(UserWarning, match="'has_layer_norm': a single value"):
        data = prepare_data(cfg, encoder, zoo, progress=False)
    assert "has_layer_norm" not in data.spec.names and "has_conv_layers" in data.spec.names
    assert list(data.dropped_targets) == ["has_layer_norm", "has_group_norm"]  # group norm: never in tiny
    assert any("default target(s) left out" in w for w in data.warnings)

    cfg = TrainConfig(task="accuracy", zoo=str(odd_targets_zoo), encoder=str(head_encoder))
    with pytest.warns(UserWarning, match=r"\['test_accuracy'\] have no usable value in the validation split"):
        data = prepare_data(cfg, encoder, zoo, progress=False)
    assert data.missing["validation"]["test_accuracy"] == len(data.splits["validation"])


# ------------------------------------------------------------------------------- 5. options before training
@pytest.mark.parametrize(
    ("weights", "fragment"),
    [
        ("{test_accuracy: -1.0}", "loss_weights['test_accuracy'] is -1.0"),
        ("{test_accuracy: .nan}", "a loss weight must be a finite number >= 0"),
        ("{optimizer: 1.0}", "loss_weights name(s) ['optimizer'] that are not targets of this task"),
        ("{test_accuracy: 0.0}", "every target's weight is 0"),
    ],
)
def test_bad_loss_weights_are_refused(
    head_zoo: Path, head_encoder: Path, tmp_path: Path, weights: str, fragment: str
) -> None:
    r = run_cli("train", "--task", "accuracy", "--loss_weights", weights, "--zoo", head_zoo,
                "--encoder", head_encoder, "--output", tmp_path / "run", *TRAIN_FAST)  # fmt: skip
    r.assert_clear_error(fragment)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_nonsense_monitor_is_refused_before_training(
    head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    from zooprobe.heads.targets import build_task_spec
    from zooprobe.training.evaluator import metric_names

    r = run_cli("train", "--task", "accuracy", "--stop.monitor", "accuracyy", "--zoo", head_zoo,
                "--encoder", head_encoder, "--output", tmp_path / "run", *TRAIN_FAST)  # fmt: skip
    r.assert_clear_error(
        "stop.monitor 'accuracyy' is not a validation metric of task 'accuracy'", "r2, relative_error"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before the first epoch
    spec = build_task_spec("hyperparameters", load_zoo(head_zoo).final().split("train").metadata())
    names = metric_names(spec)
    assert {"loss", "score", "learning_rate/r2", "optimizer/accuracy"} <= set(
        names
    ) and "n_undefined" not in names


# ------------------------------------------------------------------------ 6. files that are not what they say
@pytest.mark.parametrize(
    "text",
    [
        "task: [accuracy\n  zoo: : :\n",
        'task: accuracy\nzoo: !!python/object/apply:os.system ["touch PWNED"]\n',
    ],
    ids=["invalid", "unsafe-tag"],
)
def test_a_run_config_that_is_not_plain_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(text)
    before = snapshot(tmp_path)
    r = run_cli("evaluate", run)
    r.assert_clear_error(f"{run / 'config.yaml'}", "not valid YAML, or uses a tag that is not plain data")
    r = run_cli("train", "--config", run / "config.yaml", "--output", tmp_path / "out")
    assert r.code == 2 and not r.traceback and "config.yaml" in r.err and "not valid YAML" in r.err
    assert not (tmp_path / "PWNED").exists()
    assert_unchanged(before, tmp_path)


def test_evaluate_refuses_an_unfinished_run(finished_run: Path, tmp_path: Path) -> None:
    run = _copy_zoo(finished_run, tmp_path / "run")
    (run / "metrics.json").unlink()
    before = snapshot(run)
    r = run_cli("evaluate", run)
    r.assert_clear_error("is not a finished training run", "missing metrics.json", "--allow_unfinished true")
    with pytest.warns(UserWarning, match="an unfinished run is used to evaluate"):
        r = run_cli("evaluate", run, "--allow_unfinished", "true")
    assert r.code == 0 and "test metrics of" in r.out, r.err
    assert_unchanged(before, run)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda c, m, m2: [c, m, c * 1e-76], "std 1e-38"),
        (lambda c, m, m2: [c, m, c * 1e76], "std 1e+38"),
        (lambda c, m, m2: [c, 1e30, m2], "mean 1e+30"),
    ],
    ids=["std-tiny", "std-huge", "mean-huge"],
)
def test_extreme_normalization_constants_in_an_encoder_folder(
    head_zoo: Path, head_encoder: Path, tmp_path: Path, change: Callable[..., list[float]], fragment: str
) -> None:
    encoder = _copy_zoo(head_encoder, tmp_path / "encoder")
    config = json.loads((encoder / "config.json").read_text())
    stats = config["tokenizer"]["normalization"]
    key = next(k for k in stats if k.startswith("name:"))
    stats[key] = change(*stats[key])
    (encoder / "config.json").write_text(json.dumps(config))
    before = snapshot(encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = run_cli(
            "train", "--zoo", head_zoo, "--encoder", encoder, "--output", tmp_path / "run", *TRAIN_FAST
        )
    r.assert_clear_error(f"{encoder / 'config.json'}", f"tensor key {key!r}", fragment, "restore the file")
    assert_unchanged(before, encoder)
