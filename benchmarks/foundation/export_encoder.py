"""Write a pretrained foundation encoder (the state saved by `pretrain_transfer.py --out`) as an encoder
folder, by default the one shipped inside the package (src/zooprobe/encoder/pretrained/foundation/).

    python benchmarks/foundation/export_encoder.py RUN.pt --results RUN.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import torch

from zooprobe.encoder.config import PretrainTarget
from zooprobe.encoder.layer_loader import LoadedLayerEncoder
from zooprobe.encoder.layer_model import LayerEncoder, LayerEncoderConfig

HERE = Path(__file__).resolve().parent
SHIPPED = HERE.parents[1] / "src" / "zooprobe" / "encoder" / "pretrained" / "foundation"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("state", type=Path, help="the .pt file written by pretrain_transfer.py (weights_only)")
    ap.add_argument("--results", type=Path, help="its .json results: held-out scores for the card")
    ap.add_argument("--output", type=Path, default=SHIPPED)
    a = ap.parse_args()
    saved = torch.load(a.state, weights_only=True)
    targets = [PretrainTarget(**t) for t in saved["specs"]]
    cfg = LayerEncoderConfig(**saved.get("config", {"d_model": 128, "n_layers": 3}))
    model = LayerEncoder(cfg, targets)
    model.load_state_dict(saved["state"], strict=True)
    manifest = json.loads((HERE / "manifest.json").read_text())
    results = json.loads(a.results.read_text()) if a.results else {}
    held_out = {}
    for zoo, rows in results.items():
        if isinstance(rows, dict) and zoo not in ("targets",):
            held_out[zoo] = {
                t: {
                    "stats": r.get("stats"),
                    "stats+rep": r.get("stats+rep"),
                    "zero-shot": r.get("zs stats+rep"),
                }
                for t, r in rows.items()
                if isinstance(r, dict)
            }
    provenance = {
        "zoo_source": "zooprobe zoo build --preset foundation (seed 0)",
        "corpus_sha256": manifest["content"]["corpus"],
        "n_models": int(results.get("n_train", 0)) or None,
        "recipe": "supervised multi-task on the corpus train split's final checkpoints; validation split "
        "picks the epoch; AdamW, one-cycle, 20 epochs, batch 256 (benchmarks/foundation/pretrain_transfer.py)",
        "pretrain_seconds": results.get("pretrain_s"),
        "machine": "2 shared CPU cores",
        "held_out": held_out,
        "finished": True,
    }
    if a.output.exists():
        shutil.rmtree(a.output)
    LoadedLayerEncoder(model, provenance).save_pretrained(a.output)
    for marker in (".zooprobe", ".zooprobe.lock"):
        (a.output / marker).unlink(missing_ok=True)  # ownership files of a run folder: not package data
    sums = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(a.output.iterdir()) if p.is_file()
    }
    (a.output / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    print(f"wrote {a.output}: " + ", ".join(f"{n} {(a.output / n).stat().st_size:,} B" for n in sums))


if __name__ == "__main__":
    main()
