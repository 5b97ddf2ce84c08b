"""Train a population of small MLPs on synthetic tabular tasks and save every one of them.

This is deliberately written the way a user would write a hyperparameter sweep, with plain PyTorch and
scikit-learn only: `nn.Sequential` models, sklearn toy data sets, a minibatch training loop, a few
optimizers and learning-rate schedules. Each run keeps an early checkpoint and its final one.

Output (``--output OUT``):

    OUT/checkpoints/run_00042_epoch_007.safetensors   one file per checkpoint (safetensors.torch.save_file)
    OUT/records/run_00042.json                        what the run wrote (rows of the table below)
    OUT/metadata.csv                                  one row per checkpoint: file, model_id, split,
                                                      checkpoint_epoch, accuracies, every hyperparameter

The sweep is resumable: a run whose record and checkpoints exist is skipped, files are written to a
temporary name and renamed into place, and metadata.csv is rebuilt from the records at the end. Every run
is seeded from (--seed, run index), so the same command gives the same checkpoints whatever --workers is.

    python benchmarks/foreign/tabular_mlps.py --n_models 500 --output /tmp/foreign-tabular --workers 2
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
from safetensors.torch import save_file
from sklearn.datasets import make_circles, make_classification, make_moons
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

# name -> how to make it. Fixed data sets (their own seeds), so that every --seed trains on the same tasks.
TASKS = {
    "clf_f10_c3": dict(kind="classification", n_features=10, n_informative=6, n_classes=3, seed=11),
    "clf_f20_c4": dict(kind="classification", n_features=20, n_informative=8, n_classes=4, seed=12),
    "clf_f32_c2": dict(kind="classification", n_features=32, n_informative=5, n_classes=2, seed=13),
    "clf_f16_c5": dict(kind="classification", n_features=16, n_informative=10, n_classes=5, seed=14),
    "moons_d12": dict(kind="moons", n_features=12, n_classes=2, seed=21),
    "circles_d8": dict(kind="circles", n_features=8, n_classes=2, seed=22),
}
N_SAMPLES = 1500  # 900 train / 300 validation / 300 test

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}
OPTIMIZERS = ["sgd", "adam", "adamw", "adagrad", "rmsprop"]
LR_RANGE = {  # log-uniform learning rate per optimizer
    "sgd": (3e-3, 0.3),
    "adam": (1e-4, 1e-2),
    "adamw": (1e-4, 1e-2),
    "adagrad": (3e-3, 0.1),
    "rmsprop": (1e-4, 3e-3),
}

COLUMNS = [
    # which checkpoint
    "file", "model_id", "split", "checkpoint_epoch", "epochs",
    # task and architecture
    "dataset", "n_features", "n_classes", "family", "depth", "width", "hidden_sizes", "has_conv_layers",
    "norm", "has_batch_norm", "has_layer_norm", "activation", "dropout", "has_dropout", "num_params",
    # training
    "optimizer", "learning_rate", "lr_schedule", "lr_at_checkpoint", "momentum", "nesterov", "weight_decay",
    "label_smoothing", "batch_size", "seed",
    # results at this checkpoint
    "train_accuracy", "train_loss", "val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_time_s",
]  # fmt: skip


# ----------------------------------------------------------------------------------------------- data
@cache
def load_task(name: str) -> dict[str, torch.Tensor]:
    """Standardised train/val/test tensors of one task (cached per process)."""
    spec = TASKS[name]
    rng = np.random.default_rng(spec["seed"])
    if spec["kind"] == "classification":
        x, y = make_classification(
            n_samples=N_SAMPLES,
            n_features=spec["n_features"],
            n_informative=spec["n_informative"],
            n_redundant=2,
            n_classes=spec["n_classes"],
            n_clusters_per_class=2,
            flip_y=0.02,
            class_sep=1.0,
            random_state=spec["seed"],
        )
    else:
        maker = make_moons if spec["kind"] == "moons" else make_circles
        kwargs = {"noise": 0.15} if spec["kind"] == "moons" else {"noise": 0.08, "factor": 0.5}
        x2, y = maker(n_samples=N_SAMPLES, random_state=spec["seed"], **kwargs)
        # embed the 2-D problem in more dimensions: a random rotation plus noise features
        q, _ = np.linalg.qr(rng.normal(size=(spec["n_features"], spec["n_features"])))
        x = np.concatenate([x2, 0.5 * rng.normal(size=(N_SAMPLES, spec["n_features"] - 2))], axis=1) @ q
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, train_size=900, random_state=spec["seed"], stratify=y
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, train_size=300, random_state=spec["seed"], stratify=y_rest
    )
    scaler = StandardScaler().fit(x_train)
    out = {}
    for part, xs, ys in (("train", x_train, y_train), ("val", x_val, y_val), ("test", x_test, y_test)):
        out[f"x_{part}"] = torch.tensor(scaler.transform(xs), dtype=torch.float32)
        out[f"y_{part}"] = torch.tensor(ys, dtype=torch.long)
    return out


# ---------------------------------------------------------------------------------------------- config
def sample_config(seed: int, index: int) -> dict:
    """Hyperparameters of run `index`: depends only on (seed, index), not on the other runs."""
    rng = np.random.default_rng([seed, index])
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    task = pick(list(TASKS))
    depth = int(rng.integers(1, 5))
    width = pick([8, 16, 24, 32, 48, 64])
    funnel = depth > 1 and rng.random() < 0.3  # halve the width layer by layer
    hidden = [max(4, width // (2**i)) if funnel else width for i in range(depth)]
    optimizer = pick(OPTIMIZERS)
    low, high = LR_RANGE[optimizer]
    momentum = pick([0.0, 0.5, 0.9, 0.9, 0.95]) if optimizer == "sgd" else 0.0
    weight_decay = pick([1e-3, 1e-2, 5e-2]) if optimizer == "adamw" else pick([0.0, 0.0, 1e-5, 1e-4, 1e-3])
    epochs = int(rng.integers(2, 41))
    early = max(1, round(epochs * rng.uniform(0.1, 0.4)))
    return {
        "model_id": f"run_{index:05d}",
        "split": pick(["train"] * 14 + ["val"] * 3 + ["test"] * 3),
        "dataset": task,
        "n_features": TASKS[task]["n_features"],
        "n_classes": TASKS[task]["n_classes"],
        "family": "mlp",
        "has_conv_layers": False,
        "depth": depth,
        "width": width,
        "hidden_sizes": "-".join(map(str, hidden)),
        "norm": pick(["none", "none", "none", "batchnorm", "layernorm"]),
        "activation": pick(list(ACTIVATIONS)),
        "dropout": 0.0 if rng.random() < 0.7 else pick([0.1, 0.2, 0.3]),
        "optimizer": optimizer,
        "learning_rate": float(math.exp(rng.uniform(math.log(low), math.log(high)))),
        "lr_schedule": pick(["constant", "cosine", "step"]),
        "momentum": momentum,
        "nesterov": bool(momentum > 0 and rng.random() < 0.4),
        "weight_decay": weight_decay,
        "label_smoothing": 0.0 if rng.random() < 0.7 else pick([0.05, 0.1]),
        "batch_size": pick([32, 64, 128]),
        "epochs": epochs,
        "checkpoint_epochs": sorted({early, epochs}),
        "seed": int(rng.integers(2**31)),
    }


def build_model(cfg: dict) -> nn.Sequential:
    layers: list[nn.Module] = []
    fan_in = cfg["n_features"]
    for size in map(int, cfg["hidden_sizes"].split("-")):
        layers.append(nn.Linear(fan_in, size))
        if cfg["norm"] == "batchnorm":
            layers.append(nn.BatchNorm1d(size))
        elif cfg["norm"] == "layernorm":
            layers.append(nn.LayerNorm(size))
        layers.append(ACTIVATIONS[cfg["activation"]]())
        if cfg["dropout"] > 0:
            layers.append(nn.Dropout(cfg["dropout"]))
        fan_in = size
    layers.append(nn.Linear(fan_in, cfg["n_classes"]))
    return nn.Sequential(*layers)


def make_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    lr, wd = cfg["learning_rate"], cfg["weight_decay"]
    if cfg["optimizer"] == "sgd":
        momentum, nesterov = cfg["momentum"], cfg["nesterov"]
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if cfg["optimizer"] == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)


def make_schedule(cfg: dict, optimizer: torch.optim.Optimizer):
    if cfg["lr_schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])
    if cfg["lr_schedule"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, cfg["epochs"] // 3), gamma=0.3)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y).item()
    return (logits.argmax(1) == y).float().mean().item(), loss


# -------------------------------------------------------------------------------------------- training
def checkpoint_name(model_id: str, epoch: int) -> str:
    return f"checkpoints/{model_id}_epoch_{epoch:03d}.safetensors"


def run_done(out: Path, model_id: str) -> bool:
    record = out / "records" / f"{model_id}.json"
    if not record.is_file():
        return False
    rows = json.loads(record.read_text())
    return all((out / row["file"]).is_file() for row in rows)


def train_one(out: Path, seed: int, index: int, max_epochs: int | None = None) -> str:
    """Train run `index`, save its checkpoints and its record; returns the model_id."""
    torch.set_num_threads(1)
    cfg = sample_config(seed, index)
    if max_epochs is not None:  # quick smoke runs only: shorter training, same everything else
        cfg["epochs"] = min(cfg["epochs"], max_epochs)
        cfg["checkpoint_epochs"] = sorted({min(e, cfg["epochs"]) for e in cfg["checkpoint_epochs"]})
    data = load_task(cfg["dataset"])
    torch.manual_seed(cfg["seed"])
    order = torch.Generator().manual_seed(cfg["seed"])
    model = build_model(cfg)
    optimizer = make_optimizer(cfg, model.parameters())
    schedule = make_schedule(cfg, optimizer)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    x, y = data["x_train"], data["y_train"]
    rows, started = [], time.perf_counter()
    for epoch in range(1, cfg["epochs"] + 1):
        model.train()
        perm = torch.randperm(len(x), generator=order)
        for start in range(0, len(x), cfg["batch_size"]):
            batch = perm[start : start + cfg["batch_size"]]
            if len(batch) < 2 and cfg["norm"] == "batchnorm":
                continue  # BatchNorm cannot train on a single sample
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
        lr_now = optimizer.param_groups[0]["lr"]
        schedule.step()
        if epoch not in cfg["checkpoint_epochs"]:
            continue
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
            print(f"{cfg['model_id']}: diverged by epoch {epoch}; no checkpoint saved from here on")
            break
        train_acc, train_loss = evaluate(model, x, y)
        val_acc, val_loss = evaluate(model, data["x_val"], data["y_val"])
        test_acc, test_loss = evaluate(model, data["x_test"], data["y_test"])
        file = checkpoint_name(cfg["model_id"], epoch)
        tmp = out / f"{file}.tmp-{os.getpid()}"
        save_file(state, str(tmp))
        os.replace(tmp, out / file)
        row = {k: v for k, v in cfg.items() if k != "checkpoint_epochs"}
        row.update(
            file=file,
            checkpoint_epoch=epoch,
            has_batch_norm=cfg["norm"] == "batchnorm",
            has_layer_norm=cfg["norm"] == "layernorm",
            has_dropout=cfg["dropout"] > 0,
            lr_at_checkpoint=lr_now,
            num_params=sum(p.numel() for p in model.parameters()),
            train_accuracy=train_acc,
            train_loss=train_loss,
            val_accuracy=val_acc,
            val_loss=val_loss,
            test_accuracy=test_acc,
            test_loss=test_loss,
            train_time_s=round(time.perf_counter() - started, 3),
        )
        rows.append(row)
    record = out / "records" / f"{cfg['model_id']}.json"
    tmp = record.with_name(f"{record.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, record)
    return cfg["model_id"]


def write_metadata(out: Path, n_models: int) -> int:
    rows = []
    for index in range(n_models):
        record = out / "records" / f"run_{index:05d}.json"
        if record.is_file():
            rows += json.loads(record.read_text())
    tmp = out / "metadata.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / "metadata.csv")
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n_models", type=int, default=500, help="training runs (2 checkpoints each)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes training in parallel")
    parser.add_argument("--max_epochs", type=int, default=None, help="cap the epochs (quick smoke runs)")
    args = parser.parse_args()

    out = args.output
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "records").mkdir(exist_ok=True)
    todo = [i for i in range(args.n_models) if not run_done(out, f"run_{i:05d}")]
    print(f"{args.n_models - len(todo)} run(s) already done, {len(todo)} to train")
    started = time.perf_counter()
    if args.workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(train_one, out, args.seed, i, args.max_epochs) for i in todo]
            for n, future in enumerate(futures, 1):
                future.result()
                if n % 50 == 0:
                    print(f"  {n}/{len(todo)} runs trained")
    else:
        torch.set_num_threads(1)
        for n, i in enumerate(todo, 1):
            train_one(out, args.seed, i, args.max_epochs)
            if n % 50 == 0:
                print(f"  {n}/{len(todo)} runs trained")
    elapsed = time.perf_counter() - started
    rows = write_metadata(out, args.n_models)
    per_run = f" ({elapsed / len(todo):.2f} s per run)" if todo else ""
    print(f"trained {len(todo)} run(s) in {elapsed:.1f} s{per_run}; {out / 'metadata.csv'}: {rows} rows")


if __name__ == "__main__":
    main()
