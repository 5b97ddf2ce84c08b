"""The foundation preset: its sample spans the space the issue asks for, and its new layers, optimizers,
schedules and losses compute in the population trainer exactly what plain PyTorch computes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from zooprobe.errors import ConfigError
from zooprobe.zoo.data import load_task
from zooprobe.zoo.models import build_model
from zooprobe.zoo.population import Population, order_for_population
from zooprobe.zoo.space import ArchSpec, ModelSpec, ZooConfig, arch_macs, sample_cohort
from zooprobe.zoo.train import schedule_factor, train_cohort, train_single


def _arch(task: str, family: str, **kw: object) -> ArchSpec:
    data = load_task(task)
    base = {"depth": 3, "width": 8, "has_batch_norm": False, "has_layer_norm": False}
    base.update(kw)
    return ArchSpec(task, family, input_shape=data.input_shape, n_classes=data.n_classes, **base)  # type: ignore[arg-type]


ARCHS = {
    "shapes16-cnn-k5-max-group": _arch(
        "shapes16", "cnn", kernel_size=5, pooling="max", pool_every=2, has_group_norm=True
    ),
    "motifs-rescnn-k7-stride-batch": _arch(
        "motifs", "rescnn", depth=4, kernel_size=7, pooling="stride", pool_every=2, has_batch_norm=True
    ),
    "mnist1d-cnn-none-layer": _arch("mnist1d", "cnn", pooling="none", has_layer_norm=True),
    "tabular-resmlp-group": _arch("tabular", "resmlp", depth=4, has_group_norm=True),
    "tabular_reg-mlp-batch": _arch("tabular_reg", "mlp", has_batch_norm=True),
    # for whole runs: a bias just before batch norm has a zero gradient up to rounding, which Adagrad and
    # RMSprop scale to full steps, so runs are compared without one
    "motifs-rescnn-k7-stride": _arch(
        "motifs", "rescnn", depth=4, kernel_size=7, pooling="stride", pool_every=2
    ),
    "tabular_reg-mlp-layer": _arch("tabular_reg", "mlp", has_layer_norm=True),
}
RECIPES = [
    ("nesterov", "cosine", 0.9, 0.0, 0.0),
    ("adagrad", "onecycle", 0.0, 0.1, 1.0),
    ("plain_sgd", "step", 0.0, 0.2, 0.0),
    ("adamw", "constant", 0.0, 0.0, 0.5),
    ("sgd", "onecycle", 0.9, 0.05, 0.3),
    ("rmsprop", "cosine", 0.0, 0.0, 0.0),
    ("nadam", "warmup_cosine", 0.0, 0.1, 0.0),
]
ACTS = ["silu", "elu", "relu", "tanh", "gelu", "leaky_relu"]


def _specs(arch: ArchSpec, epochs: int = 2) -> list[ModelSpec]:
    regression = arch.n_classes == 1
    out = []
    for i, (opt, sched, momentum, smoothing, clip) in enumerate(RECIPES):
        out.append(
            ModelSpec(
                model_id=f"m{i}",
                index=i,
                cohort=0,
                arch=arch,
                activation=ACTS[i % len(ACTS)],
                init=["default", "kaiming_uniform", "orthogonal"][i % 3],
                optimizer=opt,
                learning_rate={"adagrad": 0.05, "rmsprop": 1e-3, "adamw": 3e-3, "nadam": 3e-3}.get(opt, 0.05),
                weight_decay=[0.0, 1e-3, 1e-2][i % 3],
                momentum=momentum,
                dropout=0.0,
                has_residual=arch.family.startswith("res"),
                batch_size=64,
                epochs=epochs - (i % 2),
                seed=300 + i,
                split="train",
                scheduler=sched,
                label_smoothing=0.0 if regression else smoothing,
                grad_clip=clip,
            )
        )
    return order_for_population(out)


@pytest.mark.parametrize("name", list(ARCHS))
def test_new_layers_match_subject_models_forward_and_backward(name: str) -> None:
    arch = ARCHS[name]
    specs = _specs(arch)
    models = [build_model(s) for s in specs]
    pop = Population(arch, specs, [m.state_dict() for m in models])
    data = load_task(arch.task)
    x = data.x_train[:16]
    out = pop.forward(x.unsqueeze(0).expand(len(specs), *x.shape), train=True)
    out.square().mean((1, 2)).sum().backward()
    for i, m in enumerate(models):
        ref = m.train()(x)
        torch.testing.assert_close(out[i], ref, atol=3e-5, rtol=1e-4)
        ref.square().mean().backward()
        for pname, p in m.named_parameters():
            s = pop.slots[pname]
            g = pop.flat.grad[i, s.offset : s.offset + s.numel].view(s.shape)
            torch.testing.assert_close(g, p.grad, atol=3e-5, rtol=1e-4, msg=f"{name}: gradient of {pname}")


@pytest.mark.parametrize("name", ["motifs-rescnn-k7-stride", "tabular-resmlp-group", "tabular_reg-mlp-layer"])
def test_population_training_equals_one_model_at_a_time(name: str) -> None:
    """Schedules, clipping, label smoothing, the new optimizers and the regression loss, over whole runs."""
    specs = _specs(ARCHS[name], epochs=3)
    data = load_task(ARCHS[name].task)
    batched = {
        (c.spec.model_id, c.epoch): c for c in train_cohort(specs, data, max_train_samples=192).checkpoints
    }
    assert len(batched) == len(specs)
    for s in specs:
        (single,) = train_single(s, data, max_train_samples=192).checkpoints
        mine = batched[(s.model_id, s.epochs)]
        for k, v in single.state_dict.items():
            torch.testing.assert_close(mine.state_dict[k], v, atol=2e-4, rtol=2e-3, msg=f"{s.optimizer} {k}")
        for metric, value in single.metrics.items():
            assert abs(mine.metrics[metric] - value) < 2e-3, (s.optimizer, metric)
    if ARCHS[name].n_classes == 1:  # regression: "accuracy" is R² clipped to [0, 1]
        assert all(0.0 <= c.metrics["test_accuracy"] <= 1.0 for c in batched.values())


def test_schedules_start_peak_and_end_where_documented() -> None:
    total = 100
    assert schedule_factor("constant", 57, total) == 1.0
    assert schedule_factor("cosine", 0, total) == 1.0 and schedule_factor("cosine", total, total) < 1e-12
    assert [schedule_factor("step", t, total) for t in (0, 49, 50, 74, 75)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01]
    )
    assert schedule_factor("onecycle", 0, total) == pytest.approx(1 / 25)
    assert schedule_factor("onecycle", 30, total) == pytest.approx(1.0)
    assert schedule_factor("onecycle", total, total) == pytest.approx(1e-3)
    warm = [schedule_factor("warmup_cosine", t, total) for t in (0, 4, 9, 10, 55, total)]
    assert warm[:4] == pytest.approx([0.1, 0.5, 1.0, 1.0]) and warm[4] == pytest.approx(0.5)
    assert warm[5] < 1e-12
    with pytest.raises(ValueError):
        schedule_factor("warmup", 0, total)


def test_a_128_run_sample_spans_the_corpus_space() -> None:
    cfg = ZooConfig(preset="foundation", n_models=128).resolved()
    specs = [s for k in range(cfg.n_cohorts) for s in sample_cohort(cfg, k)]
    assert len(specs) == 128
    meta = [s.metadata() for s in specs]

    def values(name: str) -> set:
        return {m[name] for m in meta}

    assert len(values("dataset")) >= 4
    assert len(values("family")) >= 3
    assert len(values("optimizer")) >= 6
    assert len(values("scheduler")) >= 3
    assert len(values("activation")) >= 6
    depths = values("depth")
    assert min(depths) == 1 and max(depths) >= 6
    widths = values("width")
    assert min(widths) <= 8 and max(widths) >= 128
    assert {s.arch.normalization for s in specs} >= {"none", "batch", "layer", "group"}
    assert any(s.label_smoothing > 0 for s in specs) and any(s.grad_clip > 0 for s in specs)
    assert any(s.input_noise > 0 for s in specs) and any(s.checkpoint_epochs for s in specs)
    assert all(arch_macs(s.arch) <= cfg.max_macs for s in specs)  # type: ignore[operator]
    # tabular tasks take MLPs only; the sample has min_cohorts architectures, the full preset full cohorts
    assert all(s.arch.base_family == "mlp" for s in specs if s.arch.task.startswith("tabular"))
    assert cfg.n_cohorts == 16 and ZooConfig(preset="foundation").resolved().runs_per_cohort == 32


def test_older_presets_keep_their_random_streams() -> None:
    """Fields added for the foundation preset take no draws where a preset does not vary them."""
    cfg = ZooConfig(preset="small").resolved()
    spec = sample_cohort(cfg, 3)[5]
    assert (spec.scheduler, spec.label_smoothing, spec.grad_clip, spec.input_noise) == (
        "constant",
        0.0,
        0.0,
        0.0,
    )
    assert spec.arch.downsample_blocks == ((0,) if spec.arch.has_conv_layers else ())
    assert spec.arch.kernel_size == 3 and spec.arch.pooling == "avg" and not spec.arch.has_group_norm
    assert dataclasses.replace(spec, scheduler="constant") == spec


def test_a_drawn_training_set_size_is_shared_by_a_cohort_and_recorded_with_its_steps() -> None:
    """``train_samples_range``: one log-uniform size per cohort, capped at the task's split; every checkpoint
    records ``train_samples`` and ``steps`` (batched and one-at-a-time alike), and presets draw nothing."""
    cfg = ZooConfig(preset="foundation", n_models=512, train_samples_range=[100, 2400]).resolved()
    cohorts = [sample_cohort(cfg, k) for k in range(cfg.n_cohorts)]
    sizes = [c[0].train_samples for c in cohorts]
    assert all({s.train_samples for s in c} == {c[0].train_samples} for c in cohorts)
    assert min(sizes) >= 100 and max(sizes) <= 2400 and max(sizes) > 4 * min(sizes)
    assert all(s.train_samples == 0 for s in sample_cohort(ZooConfig(preset="foundation").resolved(), 0))
    with pytest.raises(ConfigError, match="train_samples_range"):
        ZooConfig(preset="tiny", train_samples_range=[300, 200]).resolved()

    arch = ARCHS["tabular_reg-mlp-batch"]  # 1,200 training samples: a draw of 5,000 is capped there
    data = load_task(arch.task)
    specs = [dataclasses.replace(s, train_samples=129) for s in _specs(arch, epochs=2)]  # 129 = 2 x 64 + 1
    for result in (train_cohort(specs, data), train_single(specs[0], data)):
        for c in result.checkpoints:  # one sample dropped so that no batch of one reaches BatchNorm
            assert c.metrics["train_samples"] == 128 and c.metrics["steps"] == 2 * c.epoch
    (capped,) = train_single(dataclasses.replace(specs[0], train_samples=5000), data).checkpoints
    assert capped.metrics["train_samples"] == len(data.y_train)
    (plain,) = train_single(dataclasses.replace(specs[0], train_samples=0), data).checkpoints
    assert "steps" not in plain.metrics and "train_samples" not in plain.metrics


def test_cnn_downsampling_follows_the_documented_rule() -> None:
    assert _arch("shapes16", "cnn", depth=6, pool_every=2).downsample_blocks == (0, 2)  # 16 -> 8 -> 4
    assert _arch("motifs", "cnn", depth=6, pool_every=2, pooling="stride").downsample_blocks == (
        0,
        2,
        4,
    )  # 32 -> 4
    assert _arch("mnist1d", "cnn", depth=8, pool_every=2).downsample_blocks == (
        0,
        2,
        4,
    )  # 40 -> 20 -> 10 -> 5
    assert _arch("digits", "cnn", depth=3, pooling="none").downsample_blocks == ()
    x = load_task("shapes16").x_train[:2]
    for pooling in ("avg", "max", "stride", "none"):
        arch = _arch("shapes16", "rescnn", depth=5, pooling=pooling, pool_every=2)
        model = build_model(_specs(arch)[0]).eval()
        assert model(x).shape == (2, 6)
        assert F.softmax(model(x), -1).sum(-1).allclose(torch.ones(2))
