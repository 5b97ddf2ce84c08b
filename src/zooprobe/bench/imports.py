"""Import speed and memory at the Small CNN Zoo's scale, on a synthetic zoo in the released file format.

`write_synthetic_cnnzoo` writes random float32 weights in the real layout (`zooprobe.zoo.cnnzoo.KERAS_LAYOUT`,
4,970 values per checkpoint), a chunk of rows at a time into a memory-mapped ``weights.npy``, with
``layout.csv`` and ``metrics.csv.gz`` as the release has them. `bench_cnnzoo_import` writes one (in a child
process), imports it with ``zooprobe zoo import-cnnzoo`` in another child, reports the import's wall time
and peak resident memory, optionally runs ``zooprobe bench`` with the statistics-only methods on the
result, and deletes everything it wrote.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from zooprobe.errors import ZooprobeError
from zooprobe.zoo import cnnzoo

STEPS = (86,)


def write_synthetic_cnnzoo(
    folder: str | Path, n_runs: int, steps: Sequence[int] = STEPS, seed: int = 0, chunk: int = 4096
) -> Path:
    """A Small CNN Zoo folder of ``n_runs`` runs x ``steps`` with random weights (N(0, 0.2)) and random
    hyperparameters and accuracies; rows are run-major, as ``zooprobe`` cannot rely on any order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    position = 0
    with (folder / cnnzoo.LAYOUT_FILE).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["varname", "start_idx", "end_idx", "shape"])
        for name, shape in cnnzoo.KERAS_LAYOUT:
            writer.writerow([name, position, position + math.prod(shape), str(shape)])
            position += math.prod(shape)
    n_rows = n_runs * len(steps)
    rng = np.random.default_rng(seed)
    weights = np.lib.format.open_memmap(
        folder / cnnzoo.WEIGHTS_FILE, mode="w+", dtype=np.float32, shape=(n_rows, position)
    )
    for start in range(0, n_rows, chunk):
        end = min(start + chunk, n_rows)
        weights[start:end] = rng.normal(0.0, 0.2, size=(end - start, position)).astype(np.float32)
    weights.flush()
    del weights
    run = np.repeat(np.arange(n_runs), len(steps))
    test = rng.uniform(0.1, 0.6, size=n_rows)
    metrics = pd.DataFrame(
        {
            "config.activation": np.array(["relu", "tanh"])[run % 2],
            "config.b_init": "zeros",
            "config.dataset": "synthetic",
            "config.dnn_architecture": "cnn",
            "config.dropout": np.array([0.0, 0.05, 0.2, 0.5])[run % 4],
            "config.epochs": max(steps),
            "config.epochs_between_checkpoints": 20,
            "config.init_std": 10 ** rng.uniform(-3, 0, size=n_runs)[run],
            "config.l2reg": 10 ** rng.uniform(-8, -2, size=n_runs)[run],
            "config.learning_rate": 10 ** rng.uniform(-4, -1, size=n_runs)[run],
            "config.num_layers": 3,
            "config.num_units": 16,
            "config.optimizer": np.array(["adam", "sgd", "rmsprop"])[run % 3],
            "config.random_seed": 42,
            "config.train_fraction": np.array([0.1, 0.25, 0.5, 1.0])[run % 4],
            "config.w_init": np.array(["he_normal", "glorot_uniform", "RandomNormal"])[run % 3],
            "modeldir": [f"/synthetic/run_{r:06d}" for r in run],
            "step": np.tile(np.asarray(steps), n_runs),
            "test_accuracy": test,
            "test_loss": rng.uniform(1, 2.3, size=n_rows),
            "train_accuracy": np.minimum(1.0, test + 0.05),
            "train_loss": rng.uniform(1, 2.3, size=n_rows),
        }
    )
    metrics.to_csv(folder / "metrics.csv.gz")
    return folder


@dataclass
class ImportBenchResult:
    n_runs: int
    n_checkpoints: int
    input_bytes: int
    write_s: float
    import_s: float
    peak_rss_mib: float
    zoo_bytes: int
    command: list[str]
    bench_s: float | None = None
    bench_output: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"synthetic Small CNN Zoo: {self.n_runs} runs, {self.n_checkpoints} checkpoints, "
            f"{self.input_bytes / 2**20:.0f} MiB of input (written in {self.write_s:.1f} s)",
            f"import: {self.import_s:.1f} s ({self.n_checkpoints / self.import_s:.0f} checkpoints/s), "
            f"peak RSS {self.peak_rss_mib:.0f} MiB, zoo {self.zoo_bytes / 2**20:.0f} MiB",
            f"command: {' '.join(self.command)}",
        ]
        if self.bench_s is not None:
            out.append(f"zooprobe bench (stats+gbm, floor; accuracy): {self.bench_s:.1f} s")
            out += [f"  {line}" for line in self.bench_output]
        return out


_WRITE = (
    "import sys; from zooprobe.bench.imports import write_synthetic_cnnzoo; "
    "write_synthetic_cnnzoo(sys.argv[1], int(sys.argv[2]), [int(s) for s in sys.argv[3].split(',')])"
)
_MEASURED = (
    "import resource, sys; from zooprobe.cli.main import main; code = main(sys.argv[1:]); "
    "print(f'peak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr); "
    "sys.exit(code)"
)


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    if done.returncode != 0:
        raise ZooprobeError(
            f"{' '.join(command[3:6])} failed (exit {done.returncode}): {done.stderr[-2000:]}"
        )
    return done


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_cnnzoo_import(
    n_runs: int = 30_000,
    steps: Sequence[int] = STEPS,
    workdir: str | Path | None = None,
    bench: bool = True,
    keep: bool = False,
) -> ImportBenchResult:
    """Write a synthetic zoo under ``workdir`` (default: a new temporary folder), import it in a child
    process and measure it (see the module docs); everything written is deleted unless ``keep``.

    The zoo is written by another child, so this process stays small: a child's peak resident memory
    (``ru_maxrss``, which the import reports on exit) starts from its parent's at the moment it is started.
    """
    root = Path(tempfile.mkdtemp(prefix="zooprobe-cnnzoo-bench-", dir=workdir))
    python = [sys.executable, "-c"]
    try:
        start = time.perf_counter()
        source = root / "raw"
        _run([*python, _WRITE, str(source), str(n_runs), ",".join(map(str, steps))])
        write_s = time.perf_counter() - start
        zoo = root / "zoo"
        arguments = ["zoo", "import-cnnzoo", str(source), "--output", str(zoo), "--step", "all"]
        start = time.perf_counter()
        done = _run([*python, _MEASURED, *arguments, "--progress", "false"])
        import_s = time.perf_counter() - start
        peak = int(done.stderr.rsplit("peak_rss_kib=", 1)[1].split()[0])
        result = ImportBenchResult(
            n_runs=n_runs,
            n_checkpoints=n_runs * len(steps),
            input_bytes=_size(source),
            write_s=write_s,
            import_s=import_s,
            peak_rss_mib=peak / 1024,
            zoo_bytes=_size(zoo),
            command=["zooprobe", *arguments],
        )
        if bench:
            bench_arguments = [
                "bench", "--zoo", str(zoo), "--tasks", "[accuracy]", "--methods", "[stats+gbm, floor]",
                "--output", str(root / "bench"), "--progress", "false",
            ]  # fmt: skip
            start = time.perf_counter()
            done = _run([sys.executable, "-m", "zooprobe", *bench_arguments])
            result.bench_s = time.perf_counter() - start
            result.bench_output = [line for line in done.stdout.splitlines() if line.startswith("| ")]
        return result
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


__all__ = ["ImportBenchResult", "bench_cnnzoo_import", "write_synthetic_cnnzoo"]
