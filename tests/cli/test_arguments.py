"""Arguments as users type them (issue 14): lists, flags, errors, help in user words, presets, completion,
and a fast ``--help`` (nothing heavy imported before parsing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from zooprobe.cli import build_parser, main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zooprobe", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def _config(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_comma_lists_bare_flags_and_no_forms(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = str(tmp_path / "z")
    assert main(["zoo", "build", "--preset", "tiny", "--output", out, "--optimizers", "adam,sgd",
                 "--overwrite", "--no-batched", "--print_config"]) == 0  # fmt: skip
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optimizers"] == ["adam", "sgd"] and cfg["overwrite"] is True and cfg["batched"] is False
    assert main(["zoo", "build", "--preset", "tiny", "--output", out, "--optimizers", "[adam]",
                 "--overwrite", "false", "--print_config"]) == 0  # fmt: skip
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optimizers"] == ["adam"] and cfg["overwrite"] is False
    cfg = _config(capsys, "bench", "--methods", "frozen,stats+gbm", "--tasks", "accuracy")
    assert cfg["methods"] == ["frozen", "stats+gbm"] and cfg["tasks"] == ["accuracy"]
    cfg = _config(capsys, "train", "--output", out, "--head.hidden_sizes", "64,32", "--augment", "--no-cache")
    assert cfg["head"]["hidden_sizes"] == [64, 32] and cfg["augment"] is True and cfg["cache"] is False


def test_print_config_shows_resolved_preset_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "build", "--preset", "tiny", "--output", "x", "--print_config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["n_models"] == 16 and cfg["cohort_size"] == 4 and cfg["max_train_samples"] == 256
    assert all(value is not None for key, value in cfg.items() if key != "shard" and key != "push_to_hub"
               and key != "token")  # fmt: skip
    assert main(["encoder", "pretrain", "--preset", "tiny", "--output", "e", "--print_config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(cfg["d_model"], int) and isinstance(cfg["epochs"], int) and isinstance(cfg["lr"], float)


def test_merge_takes_positional_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = [str(tmp_path / f"s{i}") for i in range(2)]
    for i, shard in enumerate(shards):
        args = ["zoo", "build", "--preset", "tiny", "--n_models", "8", "--output", shard, "--shard", f"{i}/2"]
        assert main([*args, "--no-progress"]) == 0
    merged = tmp_path / "merged"
    assert main(["zoo", "merge", str(merged), *shards]) == 0
    from zooprobe.zoo.store import Zoo

    assert len(Zoo.open(merged)) == 8
    assert main(["zoo", "merge", "--output", str(tmp_path / "m2"), "--row_group_size", "3", *shards]) == 0
    sizes = []
    for f in (tmp_path / "m2" / "data").glob("*.parquet"):
        meta = pq.ParquetFile(f).metadata
        sizes += [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert max(sizes) == 3 and sum(sizes) == len(Zoo.open(tmp_path / "m2")) == 8


def test_errors_name_the_option_suggest_and_point_to_the_subcommand_help() -> None:
    r = _run("train", "--outptu", "runs/x")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "did you mean --output?" in r.stderr and "zooprobe train --help" in r.stderr
    r = _run("train", "--task", "accuracy")
    assert r.returncode == 2 and "--output" in r.stderr and "train.output" not in r.stderr
    r = _run("zoo", "build", "--preset", "tiny", "--output", "x", "--n_modles", "3")
    assert "did you mean --n_models?" in r.stderr and "zooprobe zoo build --help" in r.stderr
    r = _run("zoo", "build", "--preset", "tiny", "--output", "x", "--n_models", "abc")
    assert r.returncode == 2 and "--n_models" in r.stderr and "zoo.build" not in r.stderr


def _parsers(parser: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    from zooprobe.cli.common import subcommands_of

    found = [(path, parser)]
    for name, sub in subcommands_of(parser).items():
        found += _parsers(sub, (*path, name))
    return found


def test_every_option_has_a_description_and_types_in_user_words() -> None:
    from jsonargparse import ActionConfigFile

    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:  # type: ignore[attr-defined]
            if (
                not action.option_strings
                or isinstance(action, ActionConfigFile)
                or action.help == "==SUPPRESS=="
            ):
                continue
            if action.option_strings[-1].endswith(("CONFIG", "--help", "-h")):
                continue
            if not action.help:
                missing.append(f"zooprobe {' '.join(path)} {action.option_strings[-1]}")
        text = parser.format_help()  # type: ignore[attr-defined]
        assert "<class" not in text and "Path |" not in text, path
    assert not missing, missing
    for args in (["train", "--help"], ["zoo", "merge", "--help"], ["zoo", "build", "--help"]):
        r = _run(*args)
        assert r.returncode == 0 and "<class" not in r.stdout
    r = _run("train", "--help")
    assert "(required, path)" in r.stdout and "(int, default: 64)" in r.stdout
    assert "(float, default: 0.001)" in r.stdout and "--overwrite or --no-overwrite" in r.stdout
    assert "comma-separated list of int" in r.stdout


def test_presets_prints_every_preset_with_values() -> None:
    r = _run("presets")
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    assert set(doc) == {"zoo", "encoder", "encoder-neurons", "head", "demo"}
    assert set(doc["zoo"]) == {"tiny", "small", "demo", "bench", "foundation"}
    assert doc["zoo"]["small"]["n_models"] == 256 and doc["zoo"]["demo"]["n_models"] == 768
    assert {"tiny", "small", "bench"} <= set(doc["encoder"])
    assert doc["head"]["frozen"]["optim"]["batch_size"] == 32 and doc["demo"]["runs"]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_shell_completion_scripts(shell: str) -> None:
    r = _run("--print_completion", f"shtab-{shell}")
    assert r.returncode == 0, r.stderr
    assert "zooprobe" in r.stdout and "train" in r.stdout and "--output" in r.stdout


FAST = [
    ["--help"],
    ["zoo", "--help"],
    ["zoo", "build", "--help"],
    ["zoo", "merge", "--help"],
    ["train", "--help"],
    ["evaluate", "--help"],
    ["bench", "--help"],
    ["bench", "heads", "--help"],
    ["report", "--help"],
    ["predict", "--help"],
    ["push", "--help"],
    ["demo", "--help"],
    ["presets", "--help"],
    ["encoder", "bench", "--help"],
    ["encoder", "pretrain", "--help"],
]


def test_help_imports_nothing_heavy() -> None:
    """Help is fast because torch, pandas, sklearn load only after parsing (configs are torch-free)."""
    code = (
        "import sys\nfrom zooprobe.cli import main\n"
        f"for args in {FAST!r}:\n"
        "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'pandas', 'sklearn', 'numpy') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout[-300:]


def test_bench_methods_mirror_the_benchmark() -> None:
    from zooprobe.bench.compare import METHODS
    from zooprobe.cli.train import METHODS as CLI_METHODS

    assert CLI_METHODS == METHODS


def test_zooprobe_warnings_print_as_one_line_like_errors() -> None:
    from zooprobe.cli.main import _format_warning

    ours = _format_warning(
        "the encoder saw these models", UserWarning, "/x/zooprobe/training/trainer.py", 256
    )
    assert ours == "zooprobe: warning: the encoder saw these models\n"
    theirs = _format_warning("deprecated", DeprecationWarning, "/x/site-packages/lib.py", 3)
    assert "lib.py:3" in theirs and "DeprecationWarning" in theirs
