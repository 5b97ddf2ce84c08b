"""Train a population of small CNNs on 16x16 grey-scale images and save each trained model.

Written as a user's own sweep script, with plain PyTorch: a `SmallConvNet` module of its own
(``features.conv1``, ``features.bn1``, ..., ``classifier.fc``), two image tasks and a hand-written training
loop with data augmentation, SGD / Adam / RMSprop, and a OneCycle or constant learning rate.

Tasks (both generated here, nothing is downloaded):

* ``digits16``: scikit-learn's 8x8 digits (1797 images), upsampled to 16x16 (bilinear).
* ``shapes``: procedurally drawn circles, squares, triangles and crosses (filled or outlined, random
  position, size, brightness and rotation), plus pixel noise; ``shapes_noisy`` is a harder variant.

Output (``--output OUT``):

    OUT/models/cnn-0042.pt   torch.save(model.state_dict()) of the trained model
    OUT/runs/cnn-0042.json   the run's metadata (one JSON object)
    OUT/runs.jsonl           one line per model: checkpoint, run_id, split, accuracies, every hyperparameter

Resumable: a run whose model file and record exist is skipped; files are written under a temporary name and
renamed into place; runs.jsonl is rebuilt from the records at the end. Runs are seeded from (--seed, index).

    python benchmarks/foreign/image_cnns.py --n_models 500 --output /tmp/foreign-images --workers 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

SIZE = 16
N_TRAIN, N_TEST = 600, 400
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU}


# ----------------------------------------------------------------------------------------------- data
def draw_shape(kind: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """One 16x16 image of shape class `kind` (0 circle, 1 square, 2 triangle, 3 cross)."""
    r = rng.uniform(3.0, 6.0) if noise < 0.15 else rng.uniform(2.5, 5.0)
    cx, cy = rng.uniform(r, SIZE - 1 - r, size=2)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    angle = rng.uniform(-0.4, 0.4)  # a slight rotation
    dx = math.cos(angle) * (xx - cx) + math.sin(angle) * (yy - cy)
    dy = -math.sin(angle) * (xx - cx) + math.cos(angle) * (yy - cy)
    filled = rng.random() < 0.5
    thick = rng.uniform(0.7, 1.3)
    if kind == 0:
        dist = np.sqrt(dx**2 + dy**2)
        mask = dist <= r if filled else np.abs(dist - r) <= thick
    elif kind == 1:
        dist = np.maximum(np.abs(dx), np.abs(dy))
        mask = dist <= r if filled else np.abs(dist - r) <= thick
    elif kind == 2:  # apex up; inside when below both slanted edges and above the base
        inside = lambda s: (dy <= s) & (np.abs(dx) <= (dy + s) * 0.6)  # noqa: E731
        mask = inside(r) if filled else inside(r) & ~inside(r - 2 * thick)
    else:
        arm = thick + 0.3
        mask = ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    image = mask * rng.uniform(0.6, 1.0) + rng.normal(0.0, noise, size=(SIZE, SIZE))
    return np.clip(image, 0.0, 1.0)


@cache
def load_task(name: str) -> dict[str, torch.Tensor]:
    """Train/test tensors (N, 1, 16, 16) in [0, 1] of one task; the same in every process."""
    rng = np.random.default_rng({"digits16": 101, "shapes": 102, "shapes_noisy": 103}[name])
    if name == "digits16":
        digits = load_digits()
        x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        y = torch.tensor(digits.target, dtype=torch.long)
        perm = torch.tensor(rng.permutation(len(y)))
        x, y = x[perm], y[perm]
    else:
        noise = 0.1 if name == "shapes" else 0.2
        labels = rng.integers(0, 4, size=N_TRAIN + N_TEST)
        x = torch.tensor(np.stack([draw_shape(int(k), rng, noise) for k in labels]), dtype=torch.float32)
        x, y = x.unsqueeze(1), torch.tensor(labels, dtype=torch.long)
    return {
        "x_train": x[:N_TRAIN],
        "y_train": y[:N_TRAIN],
        "x_test": x[N_TRAIN : N_TRAIN + N_TEST],
        "y_test": y[N_TRAIN : N_TRAIN + N_TEST],
    }


def augment(x: torch.Tensor, how: str, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels (per image), and pixel noise for 'shift+noise'."""
    if how == "none":
        return x
    shift = (torch.rand(len(x), 2, generator=gen) * 2 - 1) * (2 * 2 / SIZE)  # 2 px in [-1, 1] coordinates
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    if how == "shift+noise":
        x = x + 0.05 * torch.randn(x.shape, generator=gen)
    return x


# ---------------------------------------------------------------------------------------------- model
class SmallConvNet(nn.Module):
    def __init__(
        self,
        channels: list[int],
        kernel_size: int,
        downsample: str,
        batch_norm: bool,
        activation: str,
        dropout: float,
        hidden: int,
        n_classes: int,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in, size = 1, SIZE
        for i, c_out in enumerate(channels, 1):
            stride = 2 if downsample == "stride" else 1
            layers[f"conv{i}"] = nn.Conv2d(
                c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=not batch_norm
            )
            if batch_norm:
                layers[f"bn{i}"] = nn.BatchNorm2d(c_out)
            layers[f"act{i}"] = ACTIVATIONS[activation]()
            if downsample == "maxpool":
                layers[f"pool{i}"] = nn.MaxPool2d(2)
            c_in, size = c_out, size // 2
        self.features = nn.Sequential(layers)
        head: OrderedDict[str, nn.Module] = OrderedDict()
        head["flatten"] = nn.Flatten()
        if dropout > 0:
            head["dropout"] = nn.Dropout(dropout)
        n_in = c_in * size * size
        if hidden:
            head["fc1"] = nn.Linear(n_in, hidden)
            head["act"] = ACTIVATIONS[activation]()
            n_in = hidden
        head["fc"] = nn.Linear(n_in, n_classes)
        self.classifier = nn.Sequential(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# --------------------------------------------------------------------------------------------- config
def sample_config(seed: int, index: int) -> dict:
    rng = np.random.default_rng([seed, index, 7])
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    optimizer = pick(["sgd", "adam", "rmsprop"])
    lr_range = {"sgd": (0.005, 0.2), "adam": (3e-4, 5e-3), "rmsprop": (1e-4, 2e-3)}[optimizer]
    base = pick([4, 6, 8, 12])
    n_conv = pick([2, 2, 3])
    channels = [base * 2 ** min(i, 1) for i in range(n_conv)]  # c, 2c, 2c
    dropout = pick([0.0, 0.0, 0.25, 0.5])
    task = pick(["digits16", "shapes", "shapes_noisy"])
    return {
        "run_id": f"cnn-{index:04d}",
        "split": pick(["train"] * 14 + ["validation"] * 3 + ["test"] * 3),
        "dataset": task,
        "n_classes": 10 if task == "digits16" else 4,
        "family": "cnn",
        "has_conv_layers": True,
        "arch": "SmallConvNet",
        "depth": n_conv,
        "width": base,
        "channels": channels,
        "kernel_size": pick([3, 5]),
        "downsample": pick(["maxpool", "stride"]),
        "has_batch_norm": bool(rng.random() < 0.4),
        "activation": pick(list(ACTIVATIONS)),
        "dropout": dropout,
        "has_dropout": dropout > 0,
        "hidden_units": pick([0, 0, 32, 64]),
        "optimizer": optimizer,
        "learning_rate": float(math.exp(rng.uniform(*map(math.log, lr_range)))),
        "lr_schedule": pick(["onecycle", "constant"]),
        "momentum": 0.9 if optimizer == "sgd" else 0.0,
        "weight_decay": pick([0.0, 1e-4, 5e-4]),
        "augmentation": pick(["none", "shift", "shift+noise"]),
        "batch_size": pick([32, 64, 128]),
        "epochs": int(rng.integers(3, 21)),
        "seed": int(rng.integers(2**31)),
    }


def make_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    lr, wd = cfg["learning_rate"], cfg["weight_decay"]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    return (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


# -------------------------------------------------------------------------------------------- training
def train_one(out: Path, seed: int, index: int, max_epochs: int | None = None) -> str:
    torch.set_num_threads(1)
    cfg = sample_config(seed, index)
    if max_epochs is not None:  # quick smoke runs only
        cfg["epochs"] = min(cfg["epochs"], max_epochs)
    data = load_task(cfg["dataset"])
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    model = SmallConvNet(
        cfg["channels"],
        cfg["kernel_size"],
        cfg["downsample"],
        cfg["has_batch_norm"],
        cfg["activation"],
        cfg["dropout"],
        cfg["hidden_units"],
        cfg["n_classes"],
    )
    optimizer = make_optimizer(cfg, model.parameters())
    x, y = data["x_train"], data["y_train"]
    steps_per_epoch = math.ceil(len(x) / cfg["batch_size"])
    schedule = None
    if cfg["lr_schedule"] == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg["learning_rate"], total_steps=cfg["epochs"] * steps_per_epoch
        )
    started = time.perf_counter()
    for _ in range(cfg["epochs"]):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), cfg["batch_size"]):
            batch = perm[start : start + cfg["batch_size"]]
            optimizer.zero_grad()
            F.cross_entropy(model(augment(x[batch], cfg["augmentation"], gen)), y[batch]).backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
    train_time = time.perf_counter() - started
    state = model.state_dict()
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        print(f"{cfg['run_id']}: diverged (non-finite weights); not saved")
        return cfg["run_id"]
    train_acc, train_loss = evaluate(model, x, y)
    test_acc, test_loss = evaluate(model, data["x_test"], data["y_test"])
    checkpoint = f"models/{cfg['run_id']}.pt"
    tmp = out / f"{checkpoint}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, out / checkpoint)
    record = {
        "checkpoint": checkpoint,
        **cfg,
        "num_params": sum(p.numel() for p in model.parameters()),
        "train_accuracy": train_acc,
        "train_loss": train_loss,
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "train_time_s": round(train_time, 3),
    }
    path = out / "runs" / f"{cfg['run_id']}.json"
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    return cfg["run_id"]


def is_done(out: Path, index: int) -> bool:
    run_id = f"cnn-{index:04d}"
    return (out / "models" / f"{run_id}.pt").is_file() and (out / "runs" / f"{run_id}.json").is_file()


def write_table(out: Path, n_models: int) -> int:
    lines = []
    for index in range(n_models):
        path = out / "runs" / f"cnn-{index:04d}.json"
        if path.is_file():
            lines.append(path.read_text())
    tmp = out / "runs.jsonl.tmp"
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, out / "runs.jsonl")
    return len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n_models", type=int, default=500)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max_epochs", type=int, default=None, help="cap the epochs (quick smoke runs)")
    args = parser.parse_args()

    out = args.output
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    todo = [i for i in range(args.n_models) if not is_done(out, i)]
    print(f"{args.n_models - len(todo)} run(s) already done, {len(todo)} to train")
    started = time.perf_counter()
    if args.workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(train_one, out, args.seed, i, args.max_epochs) for i in todo]
            for n, future in enumerate(futures, 1):
                future.result()
                if n % 50 == 0:
                    print(f"  {n}/{len(todo)} trained")
    else:
        torch.set_num_threads(1)
        for n, i in enumerate(todo, 1):
            train_one(out, args.seed, i, args.max_epochs)
            if n % 50 == 0:
                print(f"  {n}/{len(todo)} trained")
    elapsed = time.perf_counter() - started
    rows = write_table(out, args.n_models)
    per_run = f" ({elapsed / len(todo):.2f} s per run)" if todo else ""
    print(f"trained {len(todo)} run(s) in {elapsed:.1f} s{per_run}; {out / 'runs.jsonl'}: {rows} models")


if __name__ == "__main__":
    main()
