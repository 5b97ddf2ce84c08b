"""How fast ``zooprobe predict`` is from a cold process: one file, and a folder of small files.

Measures, over ``--repeats`` runs each (min / median, wall clock of a fresh process):

- ``python -c "import torch"``: the floor every torch program pays;
- ``zooprobe predict FILE --head A --head B``: one file, two heads (the issue's target: at most
  max(2.0 s, 2x ``import torch``));
- ``zooprobe predict --head A --head B FILE x N`` (``--files``, default 300 small files): the issue's target
  is at most 5 s end to end; files/s is printed too.

    python benchmarks/predict_latency.py                       # tiny zoo, encoder and heads, in --workdir
    python benchmarks/predict_latency.py --heads RUN_A RUN_B --repeats 7

Without ``--heads`` it builds (once, kept in ``--workdir``) a 64-run tiny zoo, a tiny encoder and a
gradient-boosting accuracy head plus a neural hyperparameters head, as the tests do, and writes ``--files``
checkpoint files of the zoo's networks (each with a small distinct perturbation, so no two are identical).
Every process runs with ``OMP_NUM_THREADS=1`` unless the environment sets it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tiny_heads import tiny_heads


def prepare(workdir: Path, n_files: int) -> tuple[list[str], list[Path]]:
    """(head run folders, `n_files` checkpoint files), built once into `workdir`."""
    import torch
    from safetensors.torch import save_file

    from zooprobe.api import load_zoo

    zoo, heads = tiny_heads(workdir)
    folder = workdir / f"files-{n_files}"
    files = [folder / f"model_{i:04d}.safetensors" for i in range(n_files)]
    if not all(f.is_file() for f in files):
        folder.mkdir(parents=True, exist_ok=True)
        models = load_zoo(zoo).final()
        g = torch.Generator().manual_seed(0)
        for i, path in enumerate(files):
            sd = models.state_dict(i % len(models))
            sd = {
                k: v + 1e-4 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                for k, v in sd.items()
            }
            save_file({k: v.contiguous() for k, v in sd.items()}, str(path), {"order": json.dumps(list(sd))})
    return heads, files


def timed(cmd: list[str], repeats: int, env: dict[str, str]) -> list[float]:
    """Wall-clock seconds of `repeats` fresh runs of `cmd` (after one untimed warm-up run that fills the
    page cache); a failing command stops the benchmark with its output."""
    out: list[float] = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        if i:
            out.append(elapsed)
    return out


def line(name: str, values: list[float], extra: str = "") -> str:
    return (
        f"{name}: min {min(values):.2f} s, median {statistics.median(values):.2f} s over {len(values)} runs"
        + extra
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", nargs="+", default=None, help="Head run folders (default: tiny ones).")
    parser.add_argument("--workdir", type=Path, default=Path(".cache/bench-predict"))
    parser.add_argument("--files", type=int, default=300, help="Number of files of the batch run.")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    env = dict(os.environ)
    heads, files = prepare(args.workdir, args.files)
    if args.heads is not None:
        heads = args.heads
    head_args = [a for h in heads for a in ("--head", h)]
    zooprobe = [sys.executable, "-m", "zooprobe", "predict", *head_args]

    torch_s = timed([sys.executable, "-c", "import torch"], args.repeats, env)
    one_s = timed([*zooprobe, str(files[0])], args.repeats, env)
    batch_s = timed([*zooprobe, *map(str, files)], args.repeats, env)
    target = max(2.0, 2 * min(torch_s))
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(line('python -c "import torch"', torch_s))
    print(line(f"predict, 1 file, {len(heads)} heads (cold)", one_s, f"; target {target:.2f} s"))
    rate = len(files) / statistics.median(batch_s)
    print(
        line(f"predict, {len(files)} files, {len(heads)} heads", batch_s, f"; {rate:.0f} files/s; target 5 s")
    )


if __name__ == "__main__":
    main()
