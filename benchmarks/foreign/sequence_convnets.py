"""Train 1-D conv nets on synthetic waveforms, keeping training checkpoints (model + optimizer) as .pth files.

A third user-style sweep, in plain PyTorch: `WaveformNet` (a ``stem`` convolution, a list of ``stages``
blocks with ``conv_a``/``norm_a``/``conv_b``/``norm_b``, optionally residual, and an ``out`` linear layer)
classifies 64-step signals into five waveform families (sine, square, sawtooth, triangle, chirp) with
random frequency, phase, amplitude, offset and noise. Nothing is downloaded.

Output (``--output OUT``):

    OUT/runs/seq-0042/epoch_004.pth   torch.save({"epoch", "model_state_dict", "optimizer_state_dict"})
    OUT/runs/seq-0042/result.json     the run's rows (one per checkpoint)
    OUT/results.csv                   one row per checkpoint; accuracies in percent, as the loop logs them

Resumable (a run with its result.json and checkpoints is skipped; files are written under a temporary name
and renamed), seeded from (--seed, run index).

    python benchmarks/foreign/sequence_convnets.py --n_models 500 --output /tmp/foreign-seq --workers 2
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LENGTH, N_CLASSES = 64, 5
N_TRAIN, N_TEST = 600, 400
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}
COLUMNS = [
    "ckpt_path", "run", "split", "checkpoint_epoch", "epochs", "arch", "depth", "width", "kernel_size",
    "norm", "has_batch_norm", "has_residual", "has_conv_layers", "pooling", "activation", "optimizer",
    "learning_rate", "warmup_epochs", "weight_decay", "batch_size", "signal_noise", "seed", "num_params",
    "train_accuracy", "train_loss", "test_accuracy", "test_loss",
]  # fmt: skip


# ----------------------------------------------------------------------------------------------- data
def waveform(kind: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    t = np.linspace(0.0, 1.0, LENGTH)
    freq, phase = rng.uniform(1.5, 6.0), rng.uniform(0, 2 * math.pi)
    cycles = freq * t + phase / (2 * math.pi)
    if kind == 0:
        x = np.sin(2 * math.pi * cycles)
    elif kind == 1:
        x = np.sign(np.sin(2 * math.pi * cycles))
    elif kind == 2:
        x = 2 * (cycles % 1.0) - 1
    elif kind == 3:
        x = 2 * np.abs(2 * (cycles % 1.0) - 1) - 1
    else:  # chirp: the frequency rises over the window
        x = np.sin(2 * math.pi * (freq * t + rng.uniform(2, 6) * t**2) + phase)
    x = rng.uniform(0.5, 1.5) * x + rng.uniform(-0.5, 0.5)
    return x + rng.normal(0, noise, size=LENGTH)


@cache
def load_task(noise: float) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(int(noise * 1000) + 5)
    labels = rng.integers(0, N_CLASSES, size=N_TRAIN + N_TEST)
    x = torch.tensor(np.stack([waveform(int(k), rng, noise) for k in labels]), dtype=torch.float32)
    x, y = x.unsqueeze(1), torch.tensor(labels)
    return {"x_train": x[:N_TRAIN], "y_train": y[:N_TRAIN], "x_test": x[N_TRAIN:], "y_test": y[N_TRAIN:]}


# ---------------------------------------------------------------------------------------------- model
def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "group":
        return nn.GroupNorm(2, channels)
    return nn.Identity()


class Block(nn.Module):
    def __init__(self, channels: int, kernel_size: int, norm: str, activation: str, residual: bool) -> None:
        super().__init__()
        self.conv_a = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.norm_a = make_norm(norm, channels)
        self.conv_b = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.norm_b = make_norm(norm, channels)
        self.act, self.residual = ACTIVATIONS[activation], residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_b(self.conv_b(self.act(self.norm_a(self.conv_a(x)))))
        return self.act(h + x if self.residual else h)


class WaveformNet(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        width, k = cfg["width"], cfg["kernel_size"]
        self.stem = nn.Conv1d(1, width, 7, stride=2, padding=3)
        self.stages = nn.ModuleList(
            Block(width, k, cfg["norm"], cfg["activation"], cfg["has_residual"]) for _ in range(cfg["depth"])
        )
        self.out = nn.Linear(width, N_CLASSES)
        self.act, self.pooling = ACTIVATIONS[cfg["activation"]], cfg["pooling"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.stem(x))
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if i < len(self.stages) - 1:
                h = F.max_pool1d(h, 2)
        h = h.mean(-1) if self.pooling == "mean" else h.amax(-1)
        return self.out(h)


# --------------------------------------------------------------------------------------------- config
def sample_config(seed: int, index: int) -> dict:
    rng = np.random.default_rng([seed, index, 13])
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    optimizer = pick(["adam", "adamw", "nadam", "sgd"])
    lr_range = (0.01, 0.2) if optimizer == "sgd" else (3e-4, 1e-2)
    norm = pick(["none", "batch", "group"])
    epochs = int(rng.integers(3, 13))
    return {
        "run": f"seq-{index:04d}",
        "split": pick(["train"] * 14 + ["val"] * 3 + ["test"] * 3),
        "epochs": epochs,
        "checkpoint_epochs": sorted({max(1, epochs // 3), epochs}),
        "arch": "WaveformNet",
        "depth": int(rng.integers(1, 4)),
        "width": pick([8, 12, 16]),
        "kernel_size": pick([3, 5, 7]),
        "norm": norm,
        "has_batch_norm": norm == "batch",
        "has_residual": bool(rng.random() < 0.5),
        "has_conv_layers": True,
        "pooling": pick(["mean", "max"]),
        "activation": pick(list(ACTIVATIONS)),
        "optimizer": optimizer,
        "learning_rate": float(math.exp(rng.uniform(*map(math.log, lr_range)))),
        "warmup_epochs": pick([0, 1, 2]),
        "weight_decay": pick([0.0, 1e-4, 1e-2]) if optimizer == "adamw" else pick([0.0, 0.0, 1e-4]),
        "batch_size": pick([32, 50, 100]),
        "signal_noise": pick([0.1, 0.3]),
        "seed": int(rng.integers(2**31)),
    }


def make_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    kwargs = {"lr": cfg["learning_rate"], "weight_decay": cfg["weight_decay"]}
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, momentum=0.9, nesterov=True, **kwargs)
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "nadam": torch.optim.NAdam}
    return optimizers[cfg["optimizer"]](params, **kwargs)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    return 100.0 * (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


# -------------------------------------------------------------------------------------------- training
def train_one(out: Path, seed: int, index: int, max_epochs: int | None = None) -> None:
    torch.set_num_threads(1)
    cfg = sample_config(seed, index)
    if max_epochs is not None:  # quick smoke runs only
        cfg["epochs"] = min(cfg["epochs"], max_epochs)
        cfg["checkpoint_epochs"] = sorted({min(e, cfg["epochs"]) for e in cfg["checkpoint_epochs"]})
    data = load_task(cfg["signal_noise"])
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    model = WaveformNet(cfg)
    optimizer = make_optimizer(cfg, model.parameters())
    steps = math.ceil(N_TRAIN / cfg["batch_size"])
    warmup, total = cfg["warmup_epochs"] * steps, cfg["epochs"] * steps
    # linear warm-up, then cosine decay to zero, stepped every batch
    decay = max(1, total - warmup)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * min(1, (s - warmup) / decay)))
        ),
    )
    run_dir = out / "runs" / cfg["run"]
    run_dir.mkdir(parents=True, exist_ok=True)
    x, y = data["x_train"], data["y_train"]
    rows = []
    for epoch in range(1, cfg["epochs"] + 1):
        model.train()
        perm = torch.randperm(N_TRAIN, generator=gen)
        for start in range(0, N_TRAIN, cfg["batch_size"]):
            batch = perm[start : start + cfg["batch_size"]]
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
            schedule.step()
        if epoch not in cfg["checkpoint_epochs"]:
            continue
        path = run_dir / f"epoch_{epoch:03d}.pth"
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        checkpoint = {
            "epoch": epoch,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
        }
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)
        train_acc, train_loss = evaluate(model, x, y)
        test_acc, test_loss = evaluate(model, data["x_test"], data["y_test"])
        row = {k: v for k, v in cfg.items() if k != "checkpoint_epochs"}
        row.update(
            ckpt_path=str(path.relative_to(out)),
            checkpoint_epoch=epoch,
            num_params=sum(p.numel() for p in model.parameters()),
            train_accuracy=round(train_acc, 2),
            train_loss=train_loss,
            test_accuracy=round(test_acc, 2),
            test_loss=test_loss,
        )
        rows.append(row)
    result = run_dir / "result.json"
    tmp = result.with_name(f"result.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, result)


def is_done(out: Path, index: int) -> bool:
    result = out / "runs" / f"seq-{index:04d}" / "result.json"
    return result.is_file() and all((out / r["ckpt_path"]).is_file() for r in json.loads(result.read_text()))


def write_results(out: Path, n_models: int) -> int:
    rows = []
    for index in range(n_models):
        result = out / "runs" / f"seq-{index:04d}" / "result.json"
        if result.is_file():
            rows += json.loads(result.read_text())
    tmp = out / "results.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / "results.csv")
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n_models", type=int, default=500)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max_epochs", type=int, default=None, help="cap the epochs (quick smoke runs)")
    args = parser.parse_args()

    out = args.output
    (out / "runs").mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(args.n_models) if not is_done(out, i)]
    print(f"{args.n_models - len(todo)} run(s) already done, {len(todo)} to train")
    started = time.perf_counter()
    if args.workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            for future in [pool.submit(train_one, out, args.seed, i, args.max_epochs) for i in todo]:
                future.result()
    else:
        torch.set_num_threads(1)
        for i in todo:
            train_one(out, args.seed, i, args.max_epochs)
    elapsed = time.perf_counter() - started
    rows = write_results(out, args.n_models)
    per_run = f" ({elapsed / len(todo):.2f} s per run)" if todo else ""
    print(f"trained {len(todo)} run(s) in {elapsed:.1f} s{per_run}; {out / 'results.csv'}: {rows} rows")


if __name__ == "__main__":
    main()
