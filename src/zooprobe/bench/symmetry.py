"""``zooprobe bench symmetry``: how far a head's predictions move under function-preserving transforms.

For every model of a zoo (its test split when it has one, at most ``max_models``) and every transform
(`TRANSFORMS`), the transformed network computes exactly the same function, so an invariant head predicts
exactly the same. Per transform and per target the table gives:

- ``n``: models the transform applies to (`zooprobe.symmetry` raises for the others: rescaling through tanh,
  widening through LayerNorm, ...);
- the mean absolute change of each prediction: continuous targets in the head's metric space (log10 for log
  targets such as the learning rate), binary and categorical targets as class probabilities (mean over the
  classes);
- ``moved``: models with any prediction moved by more than `MOVE_TOLERANCE` (0.01 for probabilities and
  linear targets, 0.05 for log10 targets), and ``flagged``: the share of those the head's applicability
  domain puts out of domain (empty when nothing moved or the head has no domain).

Every transform is measured twice: ``raw`` (the head reads the transformed weights as they are) and
``canonical`` (the default prediction path: `zooprobe.symmetry.canonicalize` first, which undoes widening and
dead padding exactly). Writes OUTPUT/symmetry.md and OUTPUT/symmetry.json.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from zooprobe.api import load_head, load_zoo
from zooprobe.bench.symmetry_config import SYMMETRY_CONFIG_FILE, TRANSFORM_NAMES, SymmetryConfig
from zooprobe.core.files import atomic_write_json, atomic_write_text, json_safe
from zooprobe.core.outputs import OutputKind, check_output, claim_output, holding_outputs
from zooprobe.encoder.augment import is_permutable, permute_neurons
from zooprobe.errors import InvalidInputError
from zooprobe.heads.head_loader import HeadOutputs, LoadedHead
from zooprobe.symmetry import (
    Architecture,
    SymmetryError,
    flip_signs,
    fold_batchnorm,
    pad_dead,
    rescale,
    widen,
)
from zooprobe.zoo.data import load_task
from zooprobe.zoo.models import model_from_metadata
from zooprobe.zoo.store import Zoo

SYMMETRY_OUTPUT = OutputKind(
    "bench-symmetry",
    owned=("symmetry.md", "symmetry.json", SYMMETRY_CONFIG_FILE),
    what="symmetry benchmark",
)
MOVE_TOLERANCE = {"linear": 0.01, "log10": 0.05}
"""A prediction has moved when it changes by more than this (probabilities and linear targets / log10)."""
MODES = ("raw", "canonical")

Transform = Callable[[dict[str, torch.Tensor], Architecture, torch.Generator], dict[str, torch.Tensor]]


def _permute(
    sd: dict[str, torch.Tensor], arch: Architecture, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    if not is_permutable(sd):
        raise SymmetryError("permute: not a zooprobe MLP or CNN (encoder.augment.permute_neurons)")
    return permute_neurons(sd, gen)


TRANSFORMS: dict[str, Transform] = {
    "permute": _permute,
    "rescale": lambda sd, arch, gen: rescale(sd, arch, gen),
    "flip_signs": lambda sd, arch, gen: flip_signs(sd, arch, gen),
    "widen2": lambda sd, arch, gen: widen(sd, arch, 2),
    "widen4": lambda sd, arch, gen: widen(sd, arch, 4),
    "pad_dead": lambda sd, arch, gen: pad_dead(sd, arch, 1),
    "fold_batchnorm": lambda sd, arch, gen: fold_batchnorm(sd, arch),
}
"""Transform names of ``--transforms``: permutation (pretraining's), ReLU rescaling (c log-uniform in
[0.5, 2]), tanh sign flips, 2x and 4x widening, one dead unit per layer, BatchNorm folding."""


@dataclass
class TargetChange:
    name: str
    kind: str
    mean_abs_change: float


@dataclass
class Row:
    transform: str
    mode: str
    n: int
    not_applicable: int
    targets: list[TargetChange] = field(default_factory=list)
    moved: int = 0
    flagged: float | None = None


def _value(meta: Mapping[str, Any], name: str, default: Any) -> Any:
    value = meta.get(name, default)
    return default if value is None or (isinstance(value, float) and math.isnan(value)) else value


def architecture_of(zoo: Zoo, i: int) -> Architecture:
    """The `Architecture` of zoo row `i` from its metadata (activation, residual, pooling, strided blocks)."""
    meta = zoo.metadata().iloc[i].to_dict()
    activation = _value(meta, "activation", None)
    activation = str(activation) if activation is not None else None
    residual = bool(_value(meta, "has_residual", False))
    pooling = str(_value(meta, "pooling", "avg"))
    strided: tuple[int, ...] = ()
    if residual and pooling == "stride" and "dataset" in meta:
        task = load_task(str(meta["dataset"]))
        pool_every = int((zoo.manifest.get("generator_config") or {}).get("pool_every") or 0)
        strided = model_from_metadata(
            meta, task.input_shape, task.n_classes, pool_every
        ).arch.downsample_blocks
    try:
        return Architecture(
            activation, residual, pooling if pooling in ("avg", "max", "none", "stride") else "avg", strided
        )
    except SymmetryError:
        return Architecture(None, residual)


def _flags(head: LoadedHead, outputs: HeadOutputs) -> np.ndarray | None:
    domain = head.trust.domain if head.trust is not None else None
    if domain is None:
        return None
    features = {k: v for k, v in outputs.domain_features().items() if v is not None}
    return np.array([not c.in_domain for c in domain.check(outputs.architectures, features)])


def _changes(head: LoadedHead, a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]):
    """Per target (name, kind, |change| per model) and whether each model moved."""
    out, moved = [], None
    for t in head.spec.targets:
        d = np.abs(np.asarray(b[t.name], dtype=np.float64) - np.asarray(a[t.name], dtype=np.float64))
        d = d.reshape(len(d), -1)
        tol = MOVE_TOLERANCE["log10" if t.kind == "continuous" and t.log10 else "linear"]
        kind = (
            "log10"
            if t.kind == "continuous" and t.log10
            else ("value" if t.kind == "continuous" else "probability")
        )
        out.append((t.name, kind, d.mean(axis=1)))
        m = (d > tol).any(axis=1)
        moved = m if moved is None else moved | m
    return out, moved


def measure(
    head: LoadedHead,
    state_dicts: Sequence[dict[str, torch.Tensor]],
    architectures: Sequence[Architecture],
    transforms: Sequence[str],
    seed: int = 0,
    modes: Sequence[str] = MODES,
) -> list[Row]:
    """The rows of the table for these models (see the module docs)."""
    rows: list[Row] = []
    base: dict[tuple[str, tuple[int, ...]], HeadOutputs] = {}  # the same models, batched alike
    for name in transforms:
        gen = torch.Generator().manual_seed(seed)
        done, idx = [], []
        for i, (sd, arch) in enumerate(zip(state_dicts, architectures, strict=True)):
            try:
                done.append(TRANSFORMS[name](sd, arch, gen))
                idx.append(i)
            except SymmetryError:
                continue
        for mode in modes:
            row = Row(name, mode, len(idx), len(state_dicts) - len(idx))
            if idx:
                after = head.run(done, canonical=mode == "canonical")
                key = (mode, tuple(idx))
                if key not in base:
                    base[key] = head.run([state_dicts[i] for i in idx], canonical=mode == "canonical")
                before = base[key].predictions
                changes, moved = _changes(head, before, after.predictions)
                row.targets = [TargetChange(n, k, float(d.mean())) for n, k, d in changes]
                row.moved = int(moved.sum())
                flags = _flags(head, after)
                if flags is not None and row.moved:
                    row.flagged = float(flags[moved].mean())
            rows.append(row)
    return rows


def markdown(doc: Mapping[str, Any]) -> str:
    rows = doc["rows"]
    names = [(t["name"], t["kind"]) for t in next((r["targets"] for r in rows if r["targets"]), [])]
    head = ["transform", "mode", "n", *[f"{n} ({k})" for n, k in names], "moved", "flagged"]
    lines = [
        f"Symmetry benchmark: zoo `{doc['zoo']}`, head `{doc['head']}` ({doc['task']}), "
        f"{doc['n_models']} models.",
        "",
        "Mean absolute change of each prediction under a function-preserving transform; moved: models with a "
        "prediction moved beyond 0.01 (0.05 in log10); flagged: share of those out of the head's domain.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        values = {t["name"]: t["mean_abs_change"] for t in r["targets"]}
        cells = [f"{values[n]:.4f}" if n in values else "-" for n, _ in names]
        flagged = "-" if r["flagged"] is None else f"{100 * r['flagged']:.0f}%"
        applies = f"{r['n']}" + (f" ({r['not_applicable']} n/a)" if r["not_applicable"] else "")
        lines.append(
            "| " + " | ".join([r["transform"], r["mode"], applies, *cells, str(r["moved"]), flagged]) + " |"
        )
    return "\n".join(lines) + "\n"


def _row_document(r: Row) -> dict[str, Any]:
    return {
        "transform": r.transform,
        "mode": r.mode,
        "n": r.n,
        "not_applicable": r.not_applicable,
        "targets": [t.__dict__ for t in r.targets],
        "moved": r.moved,
        "flagged": r.flagged,
    }


@holding_outputs
def bench_symmetry(
    zoo: str | Path | Zoo,
    head: str | Path | LoadedHead,
    transforms: Sequence[str] | None = None,
    output: str | Path | None = None,
    *,
    split: str | None = "test",
    max_models: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the benchmark (module docs); returns the JSON document, also written to `output` if given, with
    the settings as `SymmetryConfig` in ``symmetry_config.yaml`` (``zooprobe bench symmetry --config`` reruns
    it)."""
    names = list(transforms) if transforms else list(TRANSFORM_NAMES)
    settings = SymmetryConfig(
        zoo=str(zoo.source if isinstance(zoo, Zoo) else zoo),
        head=str(head.source if isinstance(head, LoadedHead) else head),
        transforms=names,
        split=split,
        max_models=max_models,
        seed=seed,
    ).check()
    if output is not None:
        check_output(output, SYMMETRY_OUTPUT)
    loaded_zoo = zoo if isinstance(zoo, Zoo) else load_zoo(zoo)
    loaded_head = head if isinstance(head, LoadedHead) else load_head(head)
    view = loaded_zoo.split(split) if split and split in loaded_zoo.splits else loaded_zoo
    view = view.select(range(min(len(view), max_models)))
    if len(view) == 0:
        raise InvalidInputError(f"{zoo}: no models to transform")
    sds = [
        {k: v.float() if v.dtype == torch.float64 else v for k, v in sd.items()} for sd in view.state_dicts()
    ]
    archs = [architecture_of(view, i) for i in range(len(view))]
    rows = measure(loaded_head, sds, archs, names, seed)
    doc = {
        "zoo": settings.zoo,
        "head": settings.head,
        "task": loaded_head.spec.task,
        "split": split if split in loaded_zoo.splits else None,
        "n_models": len(view),
        "seed": seed,
        "move_tolerance": MOVE_TOLERANCE,
        "rows": [_row_document(r) for r in rows],
    }
    if output is not None:
        root = Path(output)
        claim_output(root, SYMMETRY_OUTPUT)
        atomic_write_text(root / SYMMETRY_CONFIG_FILE, yaml.safe_dump(settings.to_dict(), sort_keys=False))
        atomic_write_json(root / "symmetry.json", json_safe(doc))
        atomic_write_text(root / "symmetry.md", markdown(doc))
    return doc


__all__ = ["MOVE_TOLERANCE", "TRANSFORMS", "architecture_of", "bench_symmetry", "markdown", "measure"]
