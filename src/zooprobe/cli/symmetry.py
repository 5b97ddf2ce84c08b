"""``zooprobe bench symmetry``: the parser (the fields of `zooprobe.bench.symmetry_config.SymmetryConfig`)
and the run function (`zooprobe.bench.symmetry`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from zooprobe.bench.symmetry_config import TRANSFORM_NAMES, SymmetryConfig
from zooprobe.cli.common import config_parser

SYMMETRY_DESCRIPTION = (
    "How far a head's predictions move under function-preserving transforms of the weights (permutation, "
    "ReLU rescaling, tanh sign flips, 2x/4x widening, dead-unit padding, BatchNorm folding): per transform "
    "the mean absolute change of each prediction and the share of moved predictions flagged out of domain, "
    "read raw and after canonicalization. Writes OUTPUT/symmetry.md, OUTPUT/symmetry.json and the settings "
    "as OUTPUT/symmetry_config.yaml (--config reruns them). Transforms: " + ", ".join(TRANSFORM_NAMES) + "."
)


def symmetry_parser() -> Any:
    parser = config_parser(SYMMETRY_DESCRIPTION)
    parser.add_class_arguments(SymmetryConfig, as_group=False)
    parser.add_argument("--output", type=Path | None, default=None, help="Folder for symmetry.md/json.")
    return parser


def symmetry_config(ns: Namespace) -> SymmetryConfig:
    """The `SymmetryConfig` of a parsed ``bench symmetry`` namespace (checked)."""
    values = {f.name: ns[f.name] for f in dataclasses.fields(SymmetryConfig)}
    given = values["transforms"]
    given = [given] if isinstance(given, str) else list(given)  # --transforms permute,rescale: one string
    values["transforms"] = [t.strip() for item in given for t in str(item).split(",") if t.strip()]
    return SymmetryConfig(**values).check()


def run_symmetry(ns: Namespace, console: Any) -> int:
    from zooprobe.bench.symmetry import bench_symmetry, markdown  # heavy: imports torch

    cfg = symmetry_config(ns)
    doc = bench_symmetry(cfg.zoo, cfg.head, cfg.transforms, ns.output, **cfg.options())
    console.print(markdown(doc), markup=False, soft_wrap=True)
    if ns.output is not None:
        console.print(f"written: {ns.output / 'symmetry.md'}, {ns.output / 'symmetry.json'}")
    return 0
