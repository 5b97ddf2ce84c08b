"""Copy trained head runs into the package as the shipped heads (src/zooprobe/heads/pretrained/<name>/) and
write the corpus reference the app compares models with (src/zooprobe/heads/pretrained/reference/).

    python benchmarks/foundation/export_heads.py --accuracy RUN --hyperparameters RUN --patterns RUN

Each RUN is a finished ``zooprobe train`` folder on a foundation corpus with ``--encoder foundation
--head.kind gbm --head.features stats+rep`` (the commands are in docs/foundation.md; a head folder already
shipped may be given again, from a copy outside the package: its folder is replaced). The head folder is
copied as it is (its content hash still holds); the reference is the runs' training zoo's final train
models: a metadata table and their representations under the shipped encoder (read from the
representation cache the runs filled, so nothing is encoded again).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import torch

import zooprobe
from zooprobe.core.tensorfile import write_safetensors
from zooprobe.heads.head_loader import head_folder, read_head_config
from zooprobe.heads.shipped import REFERENCE, SHIPPED_HEADS
from zooprobe.representations.cache import RepresentationCache

HERE = Path(__file__).resolve().parent
SHIPPED = HERE.parents[1] / "src" / "zooprobe" / "heads" / "pretrained"
COLUMNS = [
    "model_id",
    "dataset",
    "family",
    "depth",
    "width",
    "normalization",
    "activation",
    "optimizer",
    "learning_rate",
    "weight_decay",
    "scheduler",
    "epochs",
    "batch_size",
    "label_smoothing",
    "test_accuracy",
    "num_params",
]


CORPUS_NOTE = (
    "the long-run foundation corpus (`zooprobe zoo build --config benchmarks/foundation/zoo_config_long.yaml`: "
    "4,053 networks trained for hundreds to thousands of steps): its train / validation / test splits, none of "
    "which the foundation encoder was pretrained on"
)


def _shipped_card(text: str, name: str, run: str, zoo: str) -> str:
    """The run's card with the shipped name where it named the run folder, and the corpus for the local
    folder of the view it was trained on."""
    for old in (run, run.rstrip("/") + "/head"):
        text = text.replace(f'load_head("{old}")', f'load_head("{name}")')
    text = text.replace(f"the local zoo folder `{zoo}`", CORPUS_NOTE).replace(f"--zoo {zoo}", "--zoo CORPUS")
    return text.replace(f"`{zoo}`", "the long-run foundation corpus")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for task in SHIPPED_HEADS.values():
        ap.add_argument(f"--{task}", type=Path, required=True, help=f"finished run folder of the {task} head")
    ap.add_argument("--output", type=Path, default=SHIPPED)
    a = ap.parse_args()
    zoo_source = None
    for name, task in SHIPPED_HEADS.items():
        src = head_folder(getattr(a, task))
        config = read_head_config(src)
        if config["task"]["task"] != task or config["encoder"]["source"] != "foundation":
            raise SystemExit(f"{src}: a {config['task']['task']} head on {config['encoder']['source']}")
        zoo_source = zoo_source or config["zoo"]["source"]
        dest = a.output / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest)
        card = dest / "README.md"  # not hashed (heads.integrity.HASHED_FILES): the card names it as shipped
        card.write_text(_shipped_card(card.read_text(), name, str(getattr(a, task)), zoo_source))
        print(f"{name}: {sum(f.stat().st_size for f in dest.iterdir()) / 1e6:.2f} MB from {src}")
    encoder = zooprobe.load_encoder("foundation", progress=False)
    zoo = zooprobe.load_zoo(zoo_source).final().split("train")
    reps = RepresentationCache().get(encoder, zoo, token_outputs=False, progress=True)
    meta = zoo.metadata().reset_index(drop=True)
    meta = meta[[c for c in COLUMNS if c in meta.columns]]
    ref = a.output / REFERENCE
    ref.mkdir(parents=True, exist_ok=True)
    meta.to_parquet(ref / "metadata.parquet", index=False)
    write_safetensors(ref / "representation.safetensors", {"representation": reps.pooled.to(torch.float16)})
    sums = [
        f"{hashlib.sha256((ref / f).read_bytes()).hexdigest()}  {f}"
        for f in ("metadata.parquet", "representation.safetensors")
    ]
    (ref / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    print(f"reference: {len(meta)} models, {reps.pooled.shape[1]} values each, from {zoo_source}")


if __name__ == "__main__":
    main()
