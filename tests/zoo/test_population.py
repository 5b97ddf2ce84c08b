"""The population trainer computes exactly what plain PyTorch computes, model by model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from zooprobe.zoo.data import load_task
from zooprobe.zoo.models import build_model
from zooprobe.zoo.population import Population, order_for_population
from zooprobe.zoo.population_optim import PopulationOptimizer
from zooprobe.zoo.space import ACTIVATIONS, ArchSpec, ModelSpec, ZooConfig, sample_cohort
from zooprobe.zoo.train import _optimizer


def _arch(task: str, family: str, bn: bool, ln: bool) -> ArchSpec:
    data = load_task(task)
    return ArchSpec(
        task,
        family,
        depth=3 if family == "mlp" else 2,
        width=8,
        has_batch_norm=bn,
        has_layer_norm=ln,
        input_shape=data.input_shape,
        n_classes=data.n_classes,
    )


def _specs(arch: ArchSpec, n: int, **override: object) -> list[ModelSpec]:
    out = []
    for i in range(n):
        out.append(
            ModelSpec(
                model_id=f"m{i}",
                index=i,
                cohort=0,
                arch=arch,
                activation=ACTIVATIONS[i % len(ACTIVATIONS)],
                init=["default", "orthogonal", "normal", "xavier_uniform"][i % 4],
                optimizer=["sgd", "adam", "adamw", "rmsprop"][i % 4],
                learning_rate=10 ** (-1.5 - (i % 3)),
                weight_decay=[0.0, 1e-3, 1e-2][i % 3],
                momentum=0.9 if i % 4 == 0 else 0.0,
                dropout=0.0,
                has_residual=bool(i % 2),
                batch_size=16,
                epochs=1,
                seed=100 + i,
                split="train",
            )
        )
        out[-1] = dataclasses.replace(out[-1], **override)  # type: ignore[arg-type]
    return order_for_population(out)


CASES = [(t, f, bn, ln) for t in ("digits", "mnist1d") for f in ("mlp", "cnn") for bn, ln in ((0, 0), (1, 1))]


@pytest.mark.parametrize(("task", "family", "bn", "ln"), CASES)
def test_forward_and_gradients_match_subject_models(task: str, family: str, bn: int, ln: int) -> None:
    arch = _arch(task, family, bool(bn), bool(ln))
    specs = _specs(arch, 6)
    models = [build_model(s) for s in specs]
    pop = Population(arch, specs, [m.state_dict() for m in models])
    data = load_task(task)
    x, y = data.x_train[:16], data.y_train[:16]
    # training mode: batch statistics, running statistics updated, gradients per model
    logits = pop.forward(x.unsqueeze(0).expand(len(specs), *x.shape), train=True)
    loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(len(specs)), reduction="none").view(len(specs), -1)
    loss.mean(1).sum().backward()
    for i, m in enumerate(models):
        m.train()
        ref = m(x)
        torch.testing.assert_close(logits[i], ref, atol=2e-5, rtol=1e-4)
        F.cross_entropy(ref, y).backward()
        for name, p in m.named_parameters():
            s = pop.slots[name]
            g = pop.flat.grad[i, s.offset : s.offset + s.numel].view(s.shape)
            torch.testing.assert_close(g, p.grad, atol=2e-5, rtol=1e-4, msg=f"gradient of {name}")
        sd = pop.state_dict(i)
        assert list(sd) == list(m.state_dict())
        for k, v in m.state_dict().items():
            if "running" in k:
                torch.testing.assert_close(sd[k], v, atol=1e-6, rtol=1e-5)
    # eval mode on a shared batch: running statistics, no dropout
    with torch.no_grad():
        out = pop.forward(data.x_val[:32])
        for i, m in enumerate(models):
            torch.testing.assert_close(out[i], m.eval()(data.x_val[:32]), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_optimizer_matches_torch_optim(optimizer: str) -> None:
    arch = _arch("digits", "mlp", False, False)
    specs = _specs(arch, 4, optimizer=optimizer, momentum=0.9 if optimizer == "sgd" else 0.0)
    models = [build_model(s) for s in specs]
    pop = Population(arch, specs, [m.state_dict() for m in models])
    opt = PopulationOptimizer(pop)
    refs = [_optimizer(s, m.parameters()) for s, m in zip(specs, models, strict=True)]
    data = load_task("digits")
    for step in range(4):
        x, y = data.x_train[16 * step : 16 * step + 16], data.y_train[16 * step : 16 * step + 16]
        logits = pop.forward(x.unsqueeze(0).expand(len(specs), *x.shape), train=True)
        pop.flat.grad = None
        F.cross_entropy(logits.flatten(0, 1), y.repeat(len(specs)), reduction="none").view(4, -1).mean(
            1
        ).sum().backward()
        opt.step()
        for m, o in zip(models, refs, strict=True):
            o.zero_grad()
            F.cross_entropy(m.train()(x), y).backward()
            o.step()
    for i, m in enumerate(models):
        for k, v in m.state_dict().items():
            torch.testing.assert_close(pop.state_dict(i)[k], v, atol=1e-5, rtol=1e-4, msg=f"{optimizer} {k}")


def test_cohort_order_groups_activations_and_keeps_every_model() -> None:
    cfg = ZooConfig(preset="small", cohort_size=24).resolved()
    specs = sample_cohort(cfg, 0)
    ordered = order_for_population(specs)
    assert sorted(s.model_id for s in ordered) == sorted(s.model_id for s in specs)
    acts = [s.activation for s in ordered]
    assert acts == sorted(acts)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_evaluation_in_small_chunks_matches_one_chunk(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from zooprobe.zoo import train

    arch = _arch("mnist1d", family, True, False)
    specs = _specs(arch, 5)
    pop = Population(arch, specs, [build_model(s).state_dict() for s in specs])
    data = load_task("mnist1d")
    x, y = data.x_train[:300], data.y_train[:300]
    monkeypatch.setattr(train, "EVAL_ELEMENTS", 1 << 40)  # one chunk of EVAL_CHUNK samples
    whole = train.evaluate_population(pop, data, x, y)
    monkeypatch.setattr(train, "EVAL_ELEMENTS", 1)  # the smallest chunks (32 samples)
    assert train._population_eval_chunk(pop) == 32
    chunked = train.evaluate_population(pop, data, x, y)
    for name, v in whole.items():
        torch.testing.assert_close(chunked[name], v, rtol=1e-5, atol=1e-6)
