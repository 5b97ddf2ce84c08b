"""Property tests: every transform preserves the function (outputs on random inputs), canonicalization
undoes widening and padding bit for bit, and a transform that does not apply says why."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from symmetry_nets import Subject, sequential_subject, subjects, zoo_subject

from zooprobe.encoder.augment import permute_neurons
from zooprobe.symmetry import (
    Architecture,
    SymmetryError,
    canonical_form,
    canonicalize,
    flip_signs,
    fold_batchnorm,
    normalize_scales,
    normalize_units,
    pad_dead,
    rescale,
    widen,
)

FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_same_function(subject: Subject, before: dict, after: dict) -> None:
    y0, y1 = subject.outputs(before), subject.outputs(after)
    scale = float(y0.abs().max()) + 1.0
    assert torch.allclose(y0, y1, atol=1e-5 * scale, rtol=1e-5), float((y0 - y1).abs().max())


def assert_identical(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@FEW
@given(subjects(activations=("relu", "leaky_relu")), st.integers(0, 100))
def test_rescale_preserves_the_function(case, seed):
    subject, sd = case
    out = rescale(sd, subject.architecture, torch.Generator().manual_seed(seed))
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in sd.items()}
    assert any(not torch.equal(out[k], sd[k]) for k in sd)
    assert_same_function(subject, sd, out)


@FEW
@given(subjects(activations=("tanh",)), st.integers(0, 100))
def test_flip_signs_preserves_the_function(case, seed):
    subject, sd = case
    if subject.kind == "cnn" and subject.architecture.pooling == "max":
        with pytest.raises(SymmetryError, match="max pooling"):
            flip_signs(sd, subject.architecture)
        return
    out = flip_signs(sd, subject.architecture, torch.Generator().manual_seed(seed))
    assert any(not torch.equal(out[k], sd[k]) for k in sd)
    assert_same_function(subject, sd, out)


@FEW
@given(subjects(), st.sampled_from([2, 3, 4]))
def test_widen_preserves_the_function_and_canonicalize_undoes_it(case, factor):
    subject, sd = case
    if any(".ln." in k or ".gn." in k for k in sd) or subject.norm == "layer":
        with pytest.raises(SymmetryError, match="normalizes across units"):
            widen(sd, subject.architecture, factor)
        return
    out = widen(sd, subject.architecture, factor)
    first = next(k for k in sd if sd[k].ndim >= 2)
    assert out[first].shape[0] == factor * sd[first].shape[0]
    assert_same_function(subject, sd, out)
    back = canonicalize(out)  # from the weights alone
    if factor in (2, 4):  # powers of two: the split and the sum are exact
        assert_identical(back, sd)
    else:
        assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in sd.items()}
        assert_same_function(subject, sd, back)
    assert_identical(canonicalize(out, subject.architecture), back)


@FEW
@given(subjects(), st.integers(1, 3))
def test_pad_dead_preserves_the_function_and_canonicalize_undoes_it(case, count):
    subject, sd = case
    if any(".ln." in k or ".gn." in k for k in sd) or subject.norm == "layer":
        with pytest.raises(SymmetryError, match="normalizes across units"):
            pad_dead(sd, subject.architecture, count)
        return
    out = pad_dead(sd, subject.architecture, count)
    assert_same_function(subject, sd, out)
    assert_identical(canonicalize(out), sd)
    assert_identical(canonicalize(out, subject.architecture), sd)


@FEW
@given(subjects(norms=("batch",)))
def test_fold_batchnorm_preserves_the_function(case):
    subject, sd = case
    out = fold_batchnorm(sd, subject.architecture)
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in out)
    assert_same_function(subject, sd, out)


@FEW
@given(subjects(norms=("none", "batch")), st.integers(0, 100))
def test_permutation_preserves_the_function(case, seed):
    subject, sd = case
    out = permute_neurons(sd, torch.Generator().manual_seed(seed))
    assert_same_function(subject, sd, out)
    assert_identical(canonicalize(out), out)  # a permutation is not undone: nothing to merge or drop


@FEW
@given(subjects(), st.integers(0, 100))
def test_canonicalize_leaves_networks_without_duplicates_alone(case, seed):
    subject, sd = case
    assert_identical(canonicalize(sd), sd)
    out = canonicalize(sd, subject.architecture)
    assert all(out[k] is sd[k] for k in sd)


def test_transforms_say_why_they_do_not_apply():
    subject, sd = zoo_subject("mlp", "tanh", norm="batch")
    with pytest.raises(SymmetryError, match="rescale: not function-preserving through tanh"):
        rescale(sd, subject.architecture)
    with pytest.raises(SymmetryError, match="flip_signs: not function-preserving through relu"):
        flip_signs(sd, Architecture("relu"))
    with pytest.raises(SymmetryError, match="needs the network's Architecture"):
        widen(sd, None)
    with pytest.raises(SymmetryError, match="factor must be a positive integer"):
        widen(sd, subject.architecture, 0)
    no_bn, plain = zoo_subject("mlp", "relu")
    with pytest.raises(SymmetryError, match="no BatchNorm"):
        fold_batchnorm(plain, no_bn.architecture)
    with pytest.raises(SymmetryError, match="unknown activation"):
        Architecture("softplus")
    other = {"encoder.attn.in_proj_weight": torch.zeros(6, 2), "encoder.attn.in_proj_bias": torch.zeros(6)}
    with pytest.raises(SymmetryError, match="widen: "):
        widen(other, Architecture("relu"))
    conv = {"0.weight": torch.zeros(4, 3, 3, 3), "0.bias": torch.zeros(4), "2.weight": torch.zeros(2, 4)}
    with pytest.raises(SymmetryError, match="only Linear, BatchNorm and LayerNorm"):
        pad_dead(conv, Architecture("relu"))
    assert_identical(canonicalize(other), other)  # canonicalization never fails: unknown layouts pass


def test_canonicalize_merges_units_made_identical_by_an_earlier_merge():
    """Rows that differ only in how they split between duplicates become duplicates once those merge."""
    subject, sd = sequential_subject("relu", (3, 2))
    wide = widen(sd, subject.architecture, 2)
    w = wide["2.weight"].clone()  # [4 units of layer 2 (2 duplicated), 6 inputs (3 duplicated)]
    w[0, 0], w[0, 3] = w[0, 0] + w[0, 3], 0.0  # unit 0 reads copy 1 only: same function, different row
    wide["2.weight"] = w
    assert_same_function(subject, sd, wide)
    back = canonicalize(wide)
    assert back["2.weight"].shape == sd["2.weight"].shape
    assert_same_function(subject, sd, back)


def test_residual_networks_keep_joined_layers_aligned():
    subject, sd = zoo_subject("mlp", "relu", depth=3, width=4, residual=True)
    out = pad_dead(widen(sd, subject.architecture, 2), subject.architecture, 1)
    assert out["layers.1.linear.weight"].shape == (9, 9)
    assert_same_function(subject, sd, out)
    assert_identical(canonicalize(out, subject.architecture), sd)


@FEW
@given(subjects(activations=("relu", "leaky_relu")), st.integers(0, 100))
def test_normalize_scales_is_invariant_to_rescaling(case, seed):
    subject, sd = case
    arch = subject.architecture
    a = normalize_scales(sd, arch)
    b = normalize_scales(rescale(sd, arch, torch.Generator().manual_seed(seed)), arch)
    assert_same_function(subject, sd, a)
    for k in sd:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    with pytest.raises(SymmetryError, match="needs relu or leaky_relu"):
        normalize_scales(sd, Architecture("tanh", arch.residual, arch.pooling, arch.strided_blocks))


def assert_close(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
        else:
            assert torch.equal(a[k], b[k]), k


@FEW
@given(subjects(), st.integers(0, 100))
def test_canonical_form_is_invariant_to_every_transform(case, seed):
    """The form training and prediction read: the same (up to rounding) for a network and any transform of it
    that applies, BatchNorm folding aside (flagged by the domain instead, docs/symmetry.md)."""
    subject, sd = case
    arch = subject.architecture
    base = canonical_form(sd)
    transforms = {
        "rescale": lambda: rescale(sd, arch, torch.Generator().manual_seed(seed)),
        "flip_signs": lambda: flip_signs(sd, arch, torch.Generator().manual_seed(seed)),
        "widen2": lambda: widen(sd, arch, 2),
        "widen4": lambda: widen(sd, arch, 4),
        "pad_dead": lambda: pad_dead(sd, arch, 1),
    }
    for name, make in transforms.items():
        try:
            out = make()
        except SymmetryError:
            continue
        assert_close(canonical_form(out), base), name
    if subject.norm in ("none", "batch"):  # a permutation is undone exactly (the units are sorted)
        assert_identical(canonical_form(permute_neurons(sd, torch.Generator().manual_seed(seed))), base)


def test_normalize_units_gives_every_unit_norm_one_and_a_positive_sum():
    _, sd = sequential_subject("tanh", (5, 4))
    out = normalize_units(sd)
    for index in (0, 2):
        rows = torch.cat([out[f"{index}.weight"], out[f"{index}.bias"][:, None]], dim=1).double()
        assert torch.allclose(rows.norm(dim=1), torch.ones(rows.shape[0], dtype=torch.float64), atol=1e-6)
        assert bool((rows.sum(dim=1) > 0).all())
    _, bn = zoo_subject("mlp", "relu", depth=2, width=4, norm="batch")
    out = normalize_units(bn, sort=False)  # with BatchNorm: the unit's last affine map is BatchNorm's
    rows = torch.stack([out["layers.0.bn.weight"], out["layers.0.bn.bias"]], dim=1).double()
    assert torch.allclose(rows.norm(dim=1), torch.ones(4, dtype=torch.float64), atol=1e-6)
    assert torch.equal(out["layers.0.linear.weight"], bn["layers.0.linear.weight"])
    rows = torch.stack([normalize_units(bn)[f"layers.0.bn.{leaf}"] for leaf in ("weight", "bias")], dim=1)
    assert bool((rows.sum(dim=1).diff() >= 0).all())  # sorted by that sum
    other = {"encoder.attn.in_proj_weight": torch.zeros(6, 2)}
    assert_identical(canonical_form(other), other)  # unknown layouts pass through
