"""`zooprobe bench --reference literature`: the published Small CNN Zoo numbers, with sources, beside a
bench's own results, here on an imported (synthetic) Small CNN Zoo with the statistics-only methods; and the
import benchmark at a small size."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zooprobe.bench.compare import CompareResult, compare
from zooprobe.bench.imports import bench_cnnzoo_import, write_synthetic_cnnzoo
from zooprobe.bench.literature import PUBLISHED, SOURCES, check_reference, literature_table
from zooprobe.errors import ConfigError
from zooprobe.zoo.flat import import_cnnzoo

PUBLISHED_NUMBERS = ("0.993", "0.984", "0.92-0.935", "0.915", "0.843", "0.934", "0.931", "about 0.93-0.94")


def test_every_published_number_has_a_source() -> None:
    assert {p.source for p in PUBLISHED} <= set(SOURCES)
    shown = "\n".join(literature_table({}, "zoo"))
    for number in PUBLISHED_NUMBERS:
        assert f"| {number} |" in shown, number
    for source in SOURCES.values():
        assert source.short in shown and source.url in shown
    assert "did not run the accuracy task" in shown
    with pytest.raises(ConfigError, match="--reference must be one of literature"):
        check_reference("papers")


def test_table_shows_the_bench_results_beside_the_published_ones() -> None:
    result = CompareResult(zoo="zoos/cifar10", encoder="-", n_models={"test": 15000})
    result.metrics = {
        "accuracy": {
            "_rows": {"r2": math.nan, "kendall_tau": math.nan},
            "stats+gbm": {"r2": 0.9712, "kendall_tau": 0.8891, "mae": 0.02},
            "floor": {"r2": -0.001, "kendall_tau": math.nan, "mae": 0.1},
        }
    }
    result.seconds = {"accuracy": {"stats+gbm": 1.0, "floor": 0.0}}
    assert not any("published numbers" in line for line in result.table())
    result.reference = "literature"
    table = "\n".join(result.table())
    assert (
        "| **zooprobe stats+gbm** (this bench) | `zoos/cifar10` (test split, 15000 models) | 0.889 | 0.971 |"
        in (table)
    )
    assert "same kind of predictor as weight statistics + GBM" in table
    assert (
        "| **zooprobe floor** (this bench) | `zoos/cifar10` (test split, 15000 models) | undefined |" in table
    )


@pytest.fixture(scope="module")
def cnn_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cnnzoo")
    write_synthetic_cnnzoo(root / "raw", n_runs=60)
    import_cnnzoo(root / "raw", root / "zoo", progress=False)
    return root / "zoo"


def test_bench_runs_on_an_imported_small_cnn_zoo(cnn_zoo: Path, tmp_path: Path) -> None:
    result = compare(
        str(cnn_zoo),
        "unused: no encoder method runs",
        tmp_path / "bench",
        tasks=("accuracy",),
        methods=("stats+gbm", "floor"),
        progress=False,
        reference="literature",
    )
    assert set(result.metrics["accuracy"]) >= {"stats+gbm", "floor"}
    md = (tmp_path / "bench" / "bench.md").read_text()
    assert "published numbers on the Small CNN Zoo" in md and "**zooprobe stats+gbm** (this bench)" in md
    assert "Zhou et al. 2023" in md and "0.915" in md


def test_command_line_reference_option(cnn_zoo: Path, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "zooprobe", "bench", "--zoo", str(cnn_zoo), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )

    r = run("--reference", "papers", "--output", str(tmp_path / "x"))
    assert r.returncode == 2 and "--reference must be one of literature" in r.stderr
    r = run(
        "--tasks", "[accuracy]", "--methods", "[stats+gbm, floor]", "--reference", "literature",
        "--output", str(tmp_path / "bench"), "--progress", "false",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "| NFN | SVHN-GS | 0.931 |" in r.stdout and "**zooprobe stats+gbm** (this bench)" in r.stdout


def test_import_benchmark_measures_and_cleans_up(tmp_path: Path) -> None:
    result = bench_cnnzoo_import(n_runs=40, steps=(0, 86), workdir=tmp_path, bench=False)
    assert result.n_checkpoints == 80 and result.import_s > 0 and result.peak_rss_mib > 50
    assert "import-cnnzoo" in result.command and "peak RSS" in "\n".join(result.lines())
    assert list(tmp_path.iterdir()) == []  # the synthetic zoo and its import are deleted
