"""Training subject models: a cohort at once (population-batched) or one model at a time.

Both paths share the initialisation (`build_model`), the per-model data order (a generator seeded by the
model's seed, one permutation per epoch), the loss (mean cross-entropy, with the run's label smoothing;
mean squared error for a regression task), the run's learning-rate schedule (`schedule_factor`, over its
own epochs) and gradient clipping, so they produce the same models up to floating-point rounding (input
noise and dropout masks come from different random streams). A cohort trains for its longest run; each
model leaves the population after its own last epoch, and is snapshotted at its checkpoint epochs.
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
from zooprobe.zoo.population import Population, order_for_population
from zooprobe.zoo.population_optim import PopulationOptimizer
from zooprobe.zoo.space import ModelSpec

GENERATOR_VERSION = 4
"""Bumped whenever the same `ZooConfig` would generate different weights (even by rounding): built-in zoos
are cached under a key that includes it, so a zoo cached by an older zooprobe is rebuilt, never mixed in.
2: population training computes the activation's derivative in the forward pass and runs 1-D convolutions
as 2-D ones (same runs and random streams, different float rounding).
3: population training computes gelu/leaky-ReLU derivatives from operands in the activation's own memory
layout (different float rounding); population metrics are evaluated in cache-sized chunks.
4: new metadata columns (scheduler, label_smoothing, grad_clip, input_noise, kernel_size, pooling,
has_group_norm, normalization) in every zoo; the weights of the older presets are unchanged."""
WARMUP_FRACTION = 0.1
"""The ``warmup_cosine`` schedule's share of steps spent warming up."""
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


def run_samples(spec: ModelSpec, data: TaskData, max_train_samples: int) -> int:
    """The training-set size of ``spec``'s run: the cohort's drawn size capped at the task's split, one less
    where that would leave a last batch of one sample (BatchNorm cannot train on it); else the config's."""
    if not spec.train_samples:
        return max_train_samples
    n = min(spec.train_samples, len(data.y_train))
    return n - 1 if n % spec.batch_size == 1 and n > 1 else n


def run_length(spec: ModelSpec, n_train: int, epoch: int) -> dict[str, float]:
    """``train_samples`` and ``steps`` (optimizer steps up to ``epoch``) of a run whose cohort drew its
    training-set size (``train_samples_range``); nothing for the others, whose zoos do not record them."""
    if not spec.train_samples:
        return {}
    return {"train_samples": n_train, "steps": epoch * math.ceil(n_train / spec.batch_size)}


def _data_generator(spec: ModelSpec) -> torch.Generator:
    return torch.Generator().manual_seed(spec.seed + 1)


def schedule_factor(name: str, step: int, total: int) -> float:
    """The learning-rate factor of schedule ``name`` before update ``step`` (0-based) of ``total``."""
    f = step / max(1, total)
    if name == "constant":
        return 1.0
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * f))
    if name == "step":
        return 0.1 ** ((f >= 0.5) + (f >= 0.75))
    if name == "onecycle":
        if f < 0.3:
            return 1 / 25 + (1 - 1 / 25) * f / 0.3
        return 1e-3 + (1 - 1e-3) * 0.5 * (1.0 + math.cos(math.pi * (f - 0.3) / 0.7))
    if name == "warmup_cosine":  # per-step linear warm-up over 10% of the steps (from 1/warm), cosine to 0
        warm = max(1, round(WARMUP_FRACTION * total))
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    raise ValueError(f"unknown scheduler {name!r}")


def _schedule_table(specs: list[ModelSpec], steps_per_epoch: int) -> torch.Tensor | None:
    """``[M, steps]``: each run's factor at every step of the cohort's longest run (None: all constant)."""
    if all(s.scheduler == "constant" for s in specs):
        return None
    steps = max(s.epochs for s in specs) * steps_per_epoch
    return torch.tensor(
        [[schedule_factor(s.scheduler, t, s.epochs * steps_per_epoch) for t in range(steps)] for s in specs],
        dtype=torch.float32,
    )


def _losses(logits: torch.Tensor, y: torch.Tensor, smoothing: torch.Tensor | None, regression: bool):
    """Per-model mean loss ``[M]`` of logits ``[M, B, K]`` for targets ``[M, B]``."""
    if regression:
        return (logits.squeeze(-1) - y).square().mean(1)
    if smoothing is None:
        k = logits.shape[0]
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)
    logp = logits.log_softmax(-1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # [M, B]
    smooth = -logp.mean(-1)
    return torch.addcmul(nll, smoothing, smooth - nll).mean(1)


def _optimizer(spec: ModelSpec, params) -> torch.optim.Optimizer:
    lr, wd = spec.learning_rate, spec.weight_decay
    if spec.optimizer in ("sgd", "plain_sgd"):
        return torch.optim.SGD(params, lr=lr, momentum=spec.momentum, weight_decay=wd)
    if spec.optimizer == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=spec.momentum, weight_decay=wd, nesterov=True)
    if spec.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if spec.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
    if spec.optimizer == "nadam":
        return torch.optim.NAdam(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {spec.optimizer!r}")


def _population_eval_chunk(pop: Population) -> int:
    """Samples per evaluation chunk: `EVAL_CHUNK`, fewer when the cohort's layer outputs are large."""
    arch = pop.arch
    if arch.base_family == "mlp":
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
            if data.regression:
                loss += (logits.squeeze(-1) - yb).square().sum(1)
                continue
            ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(pop.m), reduction="none").view(pop.m, -1)
            loss += ce.sum(1)
            correct += (logits.argmax(-1) == yb).sum(1)
        out[f"{split}_accuracy"] = _r2_score(loss, y) if data.regression else correct / len(y)
        out[f"{split}_loss"] = loss / len(y)
    return out


def _r2_score(sse: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """R² from sums of squared errors, clipped to [0, 1]: the "accuracy" of a regression task."""
    sst = (y - y.mean()).square().sum()
    return (1.0 - sse / sst).clamp(0.0, 1.0)


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
    x_train, y_train = training_subset(data, run_samples(specs[0], data, max_train_samples))
    n, bs, m = len(y_train), specs[0].batch_size, len(specs)
    gens = [_data_generator(s) for s in specs]
    dropout_gen, noise_gen = (torch.Generator().manual_seed(int(specs[0].seed) ^ x) for x in (0xD0, 0x401))
    max_epochs = max(s.epochs for s in specs)
    schedule = _schedule_table(specs, math.ceil(n / bs))
    smoothing_all = torch.tensor([[s.label_smoothing] for s in specs])
    noise_all = torch.tensor([s.input_noise for s in specs])
    active = list(range(m))  # positions in `specs` of the models still training
    diverged: list[int] = []
    checkpoints: list[Checkpoint] = []
    for epoch in range(1, max_epochs + 1):
        k = len(active)
        rows_t = torch.tensor(active)
        smoothing = smoothing_all[rows_t] if bool(smoothing_all.any()) else None
        noise = noise_all[rows_t] if bool(noise_all.any()) else None
        perms = torch.stack([torch.randperm(n, generator=gens[i]) for i in active])
        for s in range(0, n, bs):
            idx = perms[:, s : s + bs]
            xb = x_train[idx]
            if noise is not None:
                xb = xb + noise.view(k, *([1] * (xb.dim() - 1))) * torch.randn(xb.shape, generator=noise_gen)
            logits = pop.forward(xb, train=True, gen=dropout_gen)
            loss = _losses(logits, y_train[idx], smoothing, data.regression)
            pop.flat.grad = None
            loss.sum().backward()
            opt.clip_gradients()
            opt.step(None if schedule is None else schedule[rows_t, pop.steps].unsqueeze(1))
            pop.steps += 1
        finite = _finite_models(pop)
        diverged += [active[j] for j in range(k) if not bool(finite[j])]
        checkpoints += _snapshots(pop, specs, active, finite, epoch, data, x_train, y_train)
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
def _finite_models(pop: Population) -> torch.Tensor:
    """Per model of the population: whether its parameters and buffers are all finite."""
    finite = torch.isfinite(pop.flat).all(1)
    for buf in pop.buffers.values():
        finite &= torch.isfinite(buf).flatten(1).all(1)
    return finite


def _snapshots(
    pop: Population,
    specs: list[ModelSpec],
    active: list[int],
    finite: torch.Tensor,
    epoch: int,
    data: TaskData,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
) -> list[Checkpoint]:
    """The checkpoints after `epoch` of the finite models that finish or keep a snapshot there."""
    rows = [
        j
        for j, i in enumerate(active)
        if bool(finite[j]) and (specs[i].epochs == epoch or epoch in specs[i].checkpoint_epochs)
    ]
    if not rows:
        return []
    sub = pop.select(rows)
    metrics = evaluate_population(sub, data, x_train, y_train)
    out = []
    for r, j in enumerate(rows):
        sp = specs[active[j]]
        out.append(
            Checkpoint(
                spec=sp,
                epoch=epoch,
                is_final=sp.epochs == epoch,
                state_dict=sub.state_dict(r),
                metrics={k: float(v[r]) for k, v in metrics.items()} | run_length(sp, len(y_train), epoch),
                train_time_s=0.0,
            )
        )
    return out


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
        if data.regression:
            sse = (logits.squeeze(-1) - y).square().sum()
            out[f"{split}_accuracy"] = float(_r2_score(sse, y))
            out[f"{split}_loss"] = float(sse / len(y))
            continue
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
    x_train, y_train = training_subset(data, run_samples(spec, data, max_train_samples))
    n, bs = len(y_train), spec.batch_size
    gen = _data_generator(spec)
    noise_gen = torch.Generator().manual_seed(spec.seed ^ 0x401)
    torch.manual_seed(spec.seed ^ 0xD0)  # dropout masks
    checkpoints: list[Checkpoint] = []
    total, step = spec.epochs * math.ceil(n / bs), 0
    for epoch in range(1, spec.epochs + 1):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            xb = x_train[idx]
            if spec.input_noise > 0:
                xb = xb + spec.input_noise * torch.randn(xb.shape, generator=noise_gen)
            out = model(xb)
            if data.regression:
                loss = F.mse_loss(out.squeeze(-1), y_train[idx])
            else:
                loss = F.cross_entropy(out, y_train[idx], label_smoothing=spec.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if spec.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            for group in opt.param_groups:
                group["lr"] = spec.learning_rate * schedule_factor(spec.scheduler, step, total)
            opt.step()
            step += 1
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
                    metrics=evaluate_model(model, data, x_train, y_train) | run_length(spec, n, epoch),
                    train_time_s=0.0,
                )
            )
    seconds = time.perf_counter() - start
    for c in checkpoints:
        c.train_time_s = seconds
    return CohortResult(checkpoints, [], seconds)
