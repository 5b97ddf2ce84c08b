"""Hostile and damaged head folders (issue 31) and the applicability domain's false alarms (issue 28).

A head reaches `zooprobe predict --head` from anywhere (a Hub id, a copied folder): its files are checked
against their content hash, and every file is validated before anything is parsed or allocated, so a
tampered head is a one-line error, never a segfault, a silently different number or a 10 GB allocation.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import assert_unchanged, run_cli, run_subprocess, snapshot
from safetensors.torch import save_file

from trained_heads import TrainedHeads
from zooprobe.api import load_encoder, load_head, load_zoo
from zooprobe.errors import ZooprobeError
from zooprobe.heads.domain import DEFAULT_QUANTILE, architecture, fit_domain
from zooprobe.heads.head_loader import MissingTrustWarning
from zooprobe.heads.integrity import HASH_FILE, HeadModifiedError, UnhashedHeadWarning
from zooprobe.heads.trust import Trust
from zooprobe.heads.uncertainty import Reliability
from zooprobe.inference import NOT_PREDICTABLE
from zooprobe.tokens.statistics import N_FEATURES, featurize


@pytest.fixture(scope="module")
def runs(trained_heads: TrainedHeads) -> dict[str, Path]:
    """A gradient-boosting accuracy head and a small neural patterns head (run folders, read-only: the
    session's shared runs, tests/conftest.py)."""
    return {"gbm": trained_heads["accuracy-gbm"], "mlp": trained_heads["patterns"]}


@pytest.fixture(scope="module")
def checkpoint(head_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    sd = load_zoo(head_zoo).final().split("test").state_dict(0)
    path = tmp_path_factory.mktemp("hostile-ckpt") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"order": json.dumps(list(sd))})
    return path


def _copy(run: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "head"
    shutil.copytree(run / "head", folder)
    return folder


def _edit_trees(folder: Path, edit: object) -> None:
    """Apply `edit(text) -> text` to every LightGBM model of gbm.json, keeping ``tree_sizes`` consistent
    (what a careful tamperer does: LightGBM then parses the edited trees as they are)."""
    path = folder / "gbm.json"
    doc = json.loads(path.read_text())
    for record in doc["models"].values():
        text = edit(record["model"])  # type: ignore[operator]
        head, _, rest = text.partition("\nTree=")
        trees, end, tail = ("Tree=" + rest).partition("end of trees")
        starts = [m.start() for m in re.finditer(r"^Tree=", trees, flags=re.MULTILINE)]
        sizes = [len(trees[a:b].encode()) for a, b in zip(starts, [*starts[1:], len(trees)], strict=True)]
        head = re.sub(r"^tree_sizes=.*$", "tree_sizes=" + " ".join(map(str, sizes)), head, flags=re.M)
        record["model"] = head + "\n" + trees + end + tail
    path.write_text(json.dumps(doc))


def _set_first_split_feature(value: int) -> object:
    return lambda text: re.sub(r"^split_feature=\d+", f"split_feature={value}", text, count=1, flags=re.M)


# ------------------------------------------------------------------------------------------ gbm models
def test_gbm_split_feature_far_out_of_range_is_an_error_not_a_segfault(
    runs: dict[str, Path], checkpoint: Path, tmp_path: Path
) -> None:
    folder = _copy(runs["gbm"], tmp_path)
    _edit_trees(folder, _set_first_split_feature(1_000_000))
    before = snapshot(folder)
    # a real process: LightGBM reading feature 1000000 of a 131-wide row dies with SIGSEGV (exit 139)
    r = run_subprocess("predict", "--head", folder, "--trust", "true", checkpoint, timeout=300)
    r.assert_clear_error("gbm.json", "split_feature 1000000 outside the model's 131 features")
    assert_unchanged(before, folder)
    # without --trust the edit is caught earlier, by the content hash
    run_cli("predict", "--head", folder, checkpoint).assert_clear_error(
        "the head was modified after it was saved", "changed: gbm.json", "--trust true"
    )


def test_gbm_split_feature_just_past_the_last_feature_is_refused(
    runs: dict[str, Path], checkpoint: Path, tmp_path: Path
) -> None:
    """An index just past max_feature_idx reads a neighbouring value: a silently different prediction."""
    folder = _copy(runs["gbm"], tmp_path)
    _edit_trees(folder, _set_first_split_feature(N_FEATURES))
    r = run_cli("predict", "--head", folder, "--trust", "true", checkpoint)
    r.assert_clear_error(f"split_feature {N_FEATURES} outside the model's {N_FEATURES} features")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda t: re.sub(r"^num_leaves=\d+", "num_leaves=1000000000", t, count=1, flags=re.M), "num_leaves"),
        (lambda t: re.sub(r"^threshold=\S+", "threshold=nan", t, count=1, flags=re.M), "threshold"),
        (lambda t: t.replace("num_class=1\n", "num_class=7\n", 1), "num_class=7, expected 1"),
        (lambda t: t.replace("max_feature_idx=130\n", "max_feature_idx=1000\n", 1), "max_feature_idx=1000"),
        (
            lambda t: re.sub(r"^left_child=\S+", "left_child=0", t, count=1, flags=re.M),
            "does not form a tree",
        ),
    ],
    ids=["num_leaves", "threshold", "num_class", "max_feature_idx", "child-loop"],
)
def test_gbm_tree_fields_are_validated_before_lightgbm_parses_them(
    runs: dict[str, Path], checkpoint: Path, tmp_path: Path, edit: object, fragment: str
) -> None:
    folder = _copy(runs["gbm"], tmp_path)
    _edit_trees(folder, edit)
    run_cli("predict", "--head", folder, "--trust", "true", checkpoint).assert_clear_error(
        "gbm.json", fragment
    )


def test_gbm_model_kind_and_width_must_match_the_config(
    runs: dict[str, Path], checkpoint: Path, tmp_path: Path
) -> None:
    folder = _copy(runs["gbm"], tmp_path)
    doc = json.loads((folder / "gbm.json").read_text())
    original = json.dumps(doc)
    next(iter(doc["models"].values()))["kind"] = "categorical"  # an AssertionError deep in predict before
    (folder / "gbm.json").write_text(json.dumps(doc))
    run_cli("predict", "--head", folder, "--trust", "true", checkpoint).assert_clear_error(
        "gbm.json", "is for a 'categorical' target, config.json says 'continuous'"
    )
    doc = json.loads(original)
    next(iter(doc["models"].values()))["n_features"] = 10**9
    (folder / "gbm.json").write_text(json.dumps(doc))
    run_cli("predict", "--head", folder, "--trust", "true", checkpoint).assert_clear_error(
        "gbm.json", f"reads 1000000000 features, this head gives {N_FEATURES}"
    )


# ------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("sizes", [[1e12], "abc", [10**12], ["abc"]], ids=["1e12", "text", "int", "list"])
def test_head_config_sizes_are_checked_before_allocating(
    runs: dict[str, Path], checkpoint: Path, tmp_path: Path, sizes: object
) -> None:
    folder = _copy(runs["mlp"], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["head"]["hidden_sizes"] = sizes
    (folder / "config.json").write_text(json.dumps(config))
    run_cli("predict", "--head", folder, "--trust", "true", checkpoint).assert_clear_error(
        "config.json", "HeadConfig.hidden_sizes"
    )


def test_encoder_config_sizes_beyond_the_limits_are_refused(head_encoder: Path, tmp_path: Path) -> None:
    for field, value in (("d_model", 10_000_000), ("n_layers", 100_000), ("max_global_pos", 10**9)):
        folder = tmp_path / field
        shutil.copytree(head_encoder, folder)
        config = json.loads((folder / "config.json").read_text())
        config["encoder"][field] = value
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(ZooprobeError, match=rf"EncoderConfig\.{field}: {value} exceeds the limit \d+"):
            load_encoder(folder)


def test_head_symlink_loop_is_a_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    run_cli("predict", "--head", tmp_path / "a", checkpoint).assert_clear_error("symbolic link loop")


# ------------------------------------------------------------------------------------------ content hash
def test_content_hash_catches_edits_and_trust_overrides_it(runs: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(runs["mlp"], tmp_path)
    record = json.loads((folder / HASH_FILE).read_text())
    assert set(record["files"]) == {"config.json", "model.safetensors", "trust.json", "domain.safetensors"}
    assert len(record["sha256"]) == 64
    load_head(folder)  # unchanged: loads
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config, indent=1))  # same content, other bytes
    with pytest.raises(HeadModifiedError, match=r"changed: config\.json"):
        load_head(folder)
    assert load_head(folder, trust=True).kind == "mlp"
    (folder / "gbm.json").write_text("{}")  # a file that defines predictions, added afterwards
    with pytest.raises(HeadModifiedError, match=r"added: gbm\.json"):
        load_head(folder)
    (folder / "gbm.json").unlink()
    (folder / HASH_FILE).unlink()  # an older head: loads, with a warning
    with pytest.warns(UnhashedHeadWarning, match="no content_hash.json"):
        load_head(folder)


def test_deleted_trust_file_does_not_make_a_withheld_target_look_trustworthy(
    runs: dict[str, Path], checkpoint: Path, tmp_path: Path
) -> None:
    folder = _copy(runs["mlp"], tmp_path)
    trust = Trust.load(folder)
    assert trust is not None
    name = next(iter(trust.reliability))
    trust.reliability[name] = Reliability("accuracy", 0.5, 0.5, predictable=False)
    trust.save(folder)  # the head says: this target is not predictable (and its hash is renewed)
    out = run_cli("predict", "--head", folder, checkpoint)
    assert out.code == 0, out.err
    assert re.search(rf"{name}\s+{NOT_PREDICTABLE}", out.out), out.out

    (folder / "trust.json").unlink()
    run_cli("predict", "--head", folder, checkpoint).assert_clear_error(
        "the head was modified after it was saved", "deleted: trust.json"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        forced = run_cli("predict", "--head", folder, "--trust", "true", checkpoint)
    assert forced.code == 0, forced.err
    assert "in domain: unknown" in forced.out and "no trust record" in forced.out
    assert "cannot be checked against the applicability domain" in forced.err  # stderr says so too
    assert "reliability are unknown" in forced.err
    with pytest.warns(MissingTrustWarning, match="not known to be trustworthy"):
        load_head(folder, trust=True)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "domain.safetensors", "trust.json"])
def test_a_tampered_head_is_refused_by_its_hash_before_any_file_is_parsed(
    name: str, runs: dict[str, Path], checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run folder whose head file was replaced by garbage (a header claiming 2**60 bytes, broken JSON):
    ``predict`` refuses it by the content hash, naming the file, before that or any other file of the head
    is parsed (the run-state check read the weights' header first); ``--trust true`` then reaches the
    file's own one-line error."""
    import zooprobe.core.tensorfile as tensorfile
    import zooprobe.heads.head_loader as head_loader

    run = tmp_path / "run"
    shutil.copytree(runs["mlp"], run)
    garbage = (2**60).to_bytes(8, "little") + b"{" if name.endswith(".safetensors") else b'{"oops": '
    (run / "head" / name).write_bytes(garbage)
    before = snapshot(run)
    parsed: list[str] = []
    for module, attr in ((tensorfile, "parse_safetensors_header"), (head_loader, "read_head_config")):
        real = getattr(module, attr)

        def spy(*args: object, _real: object = real, **kwargs: object) -> object:
            parsed.append(str(args[0]))
            return _real(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(module, attr, spy)
    r = run_cli("predict", "--head", run, checkpoint)
    r.assert_clear_error("the head was modified after it was saved", f"changed: {name}", "--trust true")
    assert len(r.error_lines) == 1, r.err
    assert not [p for p in parsed if str(run) in p], f"head files parsed before the hash check: {parsed}"
    assert_unchanged(before, run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        forced = run_cli("predict", "--head", run, "--trust", "true", checkpoint)
    forced.assert_clear_error(name)
    assert len(forced.error_lines) == 1, forced.err


# ------------------------------------------------------------------------------------------ domain
def test_in_distribution_models_are_rarely_flagged_out_of_domain(head_zoo: Path, head_encoder: Path) -> None:
    """Issue 28: held-out models of the head's own zoo were flagged out of domain 8% of the time (nominal:
    1 - quantile = 1%), because the threshold came from leave-one-out train distances, which are smaller
    than a new model's (the model took part in its own standardization) and too few to resolve a 99% tail.

    Repeated random 60/25/15 splits of the 64-model zoo: the domain is fitted on train (+ validation
    distances) and the held-out 15% checked. The bound, 2x nominal plus 1.5 points of slack, leaves room
    for sampling noise (about 400 checks, correlated across splits) and fails on the old fit (8%)."""
    zoo = load_zoo(head_zoo).final()
    sds = [
        s.state_dict(i)
        for name in ("train", "validation", "test")
        for s in [zoo.split(name)]
        for i in range(len(s))
    ]
    encoder = load_encoder(head_encoder)
    stats = featurize(sds)
    archs = [architecture(sd) for sd in sds]
    with torch.no_grad():
        reps = encoder.embed(encoder.tokenize_many(sds, 0), 64).pooled.double().numpy()
    n = len(sds)
    rng = np.random.default_rng(0)
    flagged = checked = 0
    for _ in range(40):
        order = rng.permutation(n)
        tr, va, te = order[: int(0.6 * n)], order[int(0.6 * n) : int(0.85 * n)], order[int(0.85 * n) :]
        domain = fit_domain(
            [archs[i] for i in tr],
            {"statistics": stats[tr], "representation": reps[tr]},
            {"statistics": stats[va], "representation": reps[va]},
        )
        checks = domain.check([archs[i] for i in te], {"statistics": stats[te], "representation": reps[te]})
        flagged += sum(not c.in_domain for c in checks)
        checked += len(checks)
    rate = flagged / checked
    nominal = 1 - DEFAULT_QUANTILE
    print(f"false out-of-domain rate on held-out in-distribution models: {rate:.4f} ({flagged}/{checked})")
    assert rate <= 2 * nominal + 0.015, f"{rate:.3f} of held-out in-distribution models flagged"

    # a large train split is kept as a seeded sample: the saved domain stays small, and still passes held-out
    # in-distribution models at about the same rate
    small = fit_domain(
        [archs[i] for i in tr],
        {"statistics": stats[tr], "representation": reps[tr]},
        {"statistics": stats[va], "representation": reps[va]},
        max_models=len(tr) // 2,
    )
    assert all(len(space.train) == len(tr) // 2 for space in small.spaces.values())
    assert all(len(space.train) == len(tr) for space in domain.spaces.values())
    sampled = small.check([archs[i] for i in te], {"statistics": stats[te], "representation": reps[te]})
    assert sum(c.in_domain for c in sampled) >= 0.9 * len(sampled)

    # a flag says how far outside a network is: percentile and ratio to the threshold
    far = {k: v * 50 if v.is_floating_point() else v for k, v in sds[0].items()}
    check = domain.check([architecture(far)], {"statistics": featurize([far]), "representation": reps[:1]})[0]
    reason = next(r for r in check.reasons if r.startswith("weight statistics"))
    assert re.search(
        r"at the 100th percentile of held-out in-distribution distances, [\d.]+x the threshold", reason
    )
