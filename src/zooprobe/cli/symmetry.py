"""``zooprobe bench symmetry``: the parser and the run function (`zooprobe.bench.symmetry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from zooprobe.cli.common import config_parser

SYMMETRY_TRANSFORMS = ("permute", "rescale", "flip_signs", "widen2", "widen4", "pad_dead", "fold_batchnorm")
"""`zooprobe.bench.symmetry.TRANSFORMS`, repeated so that ``--help`` needs no torch (a test checks)."""

SYMMETRY_DESCRIPTION = (
    "How far a head's predictions move under function-preserving transforms of the weights (permutation, "
    "ReLU rescaling, tanh sign flips, 2x/4x widening, dead-unit padding, BatchNorm folding): per transform "
    "the mean absolute change of each prediction and the share of moved predictions flagged out of domain, "
    "read raw and after canonicalization. Writes OUTPUT/symmetry.md and OUTPUT/symmetry.json."
)


def symmetry_parser() -> Any:
    parser = config_parser(SYMMETRY_DESCRIPTION)
    parser.add_argument("--zoo", type=str, required=True, help="Zoo whose models are transformed.")
    parser.add_argument("--head", type=str, required=True, help="Trained head (run folder or Hub id).")
    parser.add_argument(
        "--transforms",
        type=str,
        default=",".join(SYMMETRY_TRANSFORMS),
        help=f"Comma-separated transforms: {', '.join(SYMMETRY_TRANSFORMS)}.",
    )
    parser.add_argument("--output", type=Path | None, default=None, help="Folder for symmetry.md/json.")
    parser.add_argument("--split", type=str, default="test", help="Zoo split to use (all models if absent).")
    parser.add_argument("--max_models", type=int, default=200, help="Use at most this many models.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random transforms.")
    return parser


def run_symmetry(ns: Namespace, console: Any) -> int:
    from zooprobe.bench.symmetry import bench_symmetry, markdown  # heavy: imports torch

    transforms = [t.strip() for t in str(ns.transforms).split(",") if t.strip()]
    doc = bench_symmetry(
        ns.zoo,
        ns.head,
        transforms,
        ns.output,
        split=ns.split,
        max_models=ns.max_models,
        seed=ns.seed,
    )
    console.print(markdown(doc), markup=False, soft_wrap=True)
    if ns.output is not None:
        console.print(f"written: {ns.output / 'symmetry.md'}, {ns.output / 'symmetry.json'}")
    return 0
