"""Training subject models: a cohort at once (population-batched) or one model at a time.

Both paths share the initialisation (`build_model`), the per-model data order (a generator seeded by the
model's seed, one permutation per epoch), the loss (mean cross-entropy) and constant learning rates, so
they produce the same models up to floating-point rounding. Because learning rates are constant, a model
trained for ``e`` epochs is exactly the ``e``-th epoch snapshot of a longer run: a cohort trains for its
longest run and every model is snapshotted at its own epoch count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from zooprobe.zoo.data import TaskData
from zooprobe.zoo.models import build_model
from zooprobe.zoo.population import Population, PopulationOptimizer, order_for_population
from zooprobe.zoo.space import ModelSpec

GENERATOR_VERSION = 3
"""Bumped whenever the same `ZooConfig` would generate different weights (even by rounding): built-in zoos
are cached under a key that includes it, so a zoo cached by an older zooprobe is rebuilt, never mixed in.
2: population training computes the activation's derivative in the forward pass and runs 1-D convolutions
as 2-D ones (same runs and random streams, different float rounding).
3: population training computes gelu/leaky-ReLU derivatives from operands in the activation's own memory
layout (different float rounding); population metrics are evaluated in cache-sized chunks."""
EVAL_CHUNK = 512
EVAL_ELEMENTS = 1 << 21
"""Population evaluation runs in chunks whose widest layer output holds about this many floats (8 MiB):
larger chunks fall out of cache (a 16-channel CNN cohort evaluated 2.5x faster in chunks of ~100 than 512)."""


@dataclass
class Checkpoint:
    """One stored snapshot of a training run."""

    spec: ModelSpec
    epoch: int
    is_final: bool
    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, float]
    train_time_s: float


@dataclass
class CohortResult:
    checkpoints: list[Checkpoint]
    diverged: list[ModelSpec] = field(default_factory=list)
    seconds: float = 0.0


def training_subset(data: TaskData, max_train_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training samples used (all, or a fixed random subset of ``max_train_samples``)."""
    if max_train_samples and max_train_samples < len(data.y_train):
        idx = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(0))[
            :max_train_samples
        ]
        idx = idx.sort().values
        return data.x_train[idx], data.y_train[idx]
    return data.x_train, data.y_train


def _data_generator(spec: ModelSpec) -> torch.Generator:
    return torch.Generator().manual_seed(spec.seed + 1)


def _optimizer(spec: ModelSpec, params) -> torch.optim.Optimizer:
    lr, wd = spec.learning_rate, spec.weight_decay
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=spec.momentum, weight_decay=wd)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if spec.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {spec.optimizer!r}")


def _population_eval_chunk(pop: Population) -> int:
    """Samples per evaluation chunk: `EVAL_CHUNK`, fewer when the cohort's layer outputs are large."""
    arch = pop.arch
    if arch.family == "mlp":
        per_sample = max(arch.width, math.prod(arch.input_shape))
    else:  # the first convolution's output is the widest
        per_sample = arch.width * math.prod(arch.input_shape[1:])
    return max(32, min(EVAL_CHUNK, EVAL_ELEMENTS // (pop.m * per_sample)))


@torch.no_grad()
def evaluate_population(pop: Population, data: TaskData, x_train: torch.Tensor, y_train: torch.Tensor):
    """Per-model accuracy and mean loss on the train/validation/test splits (eval mode)."""
    out: dict[str, torch.Tensor] = {}
    chunk = _population_eval_chunk(pop)
    for split, x, y in (
        ("train", x_train, y_train),
        ("val", data.x_val, data.y_val),
        ("test", data.x_test, data.y_test),
    ):
        correct = torch.zeros(pop.m)
        loss = torch.zeros(pop.m)
        for s in range(0, len(y), chunk):
            xb, yb = x[s : s + chunk], y[s : s + chunk]
            logits = pop.forward(xb, train=False)  # [M, b, K]
            ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(pop.m), reduction="none").view(pop.m, -1)
            loss += ce.sum(1)
            correct += (logits.argmax(-1) == yb).sum(1)
        out[f"{split}_accuracy"] = correct / len(y)
        out[f"{split}_loss"] = loss / len(y)
    return out


def train_cohort(
    specs: list[ModelSpec],
    data: TaskData,
    max_train_samples: int = 0,
    on_epoch: Callable[[int, int], None] | None = None,
) -> CohortResult:
    """Train a cohort (same `ArchSpec`, same batch size) as one population."""
    start = time.perf_counter()
    specs = order_for_population(specs)
    arch = specs[0].arch
    if any(s.arch != arch or s.batch_size != specs[0].batch_size for s in specs):
        raise ValueError("a cohort must share its architecture and batch size")
    pop = Population(arch, specs, [build_model(s).state_dict() for s in specs])
    opt = PopulationOptimizer(pop)
    x_train, y_train = training_subset(data, max_train_samples)
    n, bs, m = len(y_train), specs[0].batch_size, len(specs)
    gens = [_data_generator(s) for s in specs]
    dropout_gen = torch.Generator().manual_seed(int(specs[0].seed) ^ 0xD0)
    max_epochs = max(s.epochs for s in specs)
    active = list(range(m))  # positions in `specs` of the models still training
    diverged: list[int] = []
    checkpoints: list[Checkpoint] = []
    for epoch in range(1, max_epochs + 1):
        k = len(active)
        perms = torch.stack([torch.randperm(n, generator=gens[i]) for i in active])
        for s in range(0, n, bs):
            idx = perms[:, s : s + bs]
            logits = pop.forward(x_train[idx], train=True, gen=dropout_gen)
            loss = F.cross_entropy(logits.flatten(0, 1), y_train[idx].flatten(), reduction="none")
            pop.flat.grad = None
            loss.view(k, -1).mean(1).sum().backward()
            opt.step()
            pop.steps += 1
        with torch.no_grad():
            finite = torch.isfinite(pop.flat).all(1)
            for buf in pop.buffers.values():
                finite &= torch.isfinite(buf).flatten(1).all(1)
        diverged += [active[j] for j in range(k) if not bool(finite[j])]
        rows = [
            j
            for j, i in enumerate(active)
            if bool(finite[j]) and (specs[i].epochs == epoch or epoch in specs[i].checkpoint_epochs)
        ]
        if rows:
            sub = pop.select(rows)
            metrics = evaluate_population(sub, data, x_train, y_train)
            for r, j in enumerate(rows):
                sp = specs[active[j]]
                checkpoints.append(
                    Checkpoint(
                        spec=sp,
                        epoch=epoch,
                        is_final=sp.epochs == epoch,
                        state_dict=sub.state_dict(r),
                        metrics={name: float(v[r]) for name, v in metrics.items()},
                        train_time_s=0.0,
                    )
                )
        # Finished and diverged models leave the population: the rest train on, at lower cost.
        still = [j for j, i in enumerate(active) if bool(finite[j]) and specs[i].epochs > epoch]
        if len(still) < k and still:
            pop.keep(still)
            opt.keep(still)
        active = [active[j] for j in still]
        if on_epoch is not None:
            on_epoch(epoch, max_epochs)
        if not active:
            break
    seconds = time.perf_counter() - start
    for c in checkpoints:  # amortised wall time: the cohort's time shared by its models
        c.train_time_s = seconds / m
    return CohortResult(checkpoints, [specs[i] for i in sorted(diverged)], seconds)


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, data: TaskData, x_train: torch.Tensor, y_train: torch.Tensor):
    model.eval()
    out: dict[str, float] = {}
    for split, x, y in (
        ("train", x_train, y_train),
        ("val", data.x_val, data.y_val),
        ("test", data.x_test, data.y_test),
    ):
        logits = torch.cat([model(x[s : s + EVAL_CHUNK]) for s in range(0, len(y), EVAL_CHUNK)])
        out[f"{split}_accuracy"] = float((logits.argmax(-1) == y).float().mean())
        out[f"{split}_loss"] = float(F.cross_entropy(logits, y))
    model.train()
    return out


def train_single(spec: ModelSpec, data: TaskData, max_train_samples: int = 0) -> CohortResult:
    """Train one model with plain PyTorch (``nn.Module`` + ``torch.optim``): the reference path."""
    start = time.perf_counter()
    model = build_model(spec)
    model.train()
    opt = _optimizer(spec, model.parameters())
    x_train, y_train = training_subset(data, max_train_samples)
    n, bs = len(y_train), spec.batch_size
    gen = _data_generator(spec)
    torch.manual_seed(spec.seed ^ 0xD0)  # dropout masks
    checkpoints: list[Checkpoint] = []
    for epoch in range(1, spec.epochs + 1):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sd = model.state_dict()
        if not all(torch.isfinite(v).all() for v in sd.values()):
            return CohortResult([], [spec], time.perf_counter() - start)
        if epoch == spec.epochs or epoch in spec.checkpoint_epochs:
            checkpoints.append(
                Checkpoint(
                    spec=spec,
                    epoch=epoch,
                    is_final=epoch == spec.epochs,
                    state_dict={k: v.detach().clone() for k, v in sd.items()},
                    metrics=evaluate_model(model, data, x_train, y_train),
                    train_time_s=0.0,
                )
            )
    seconds = time.perf_counter() - start
    for c in checkpoints:
        c.train_time_s = seconds
    return CohortResult(checkpoints, [], seconds)
