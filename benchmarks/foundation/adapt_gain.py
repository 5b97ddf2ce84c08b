"""Held-out gain of test-time adaptation (`zooprobe encoder adapt`, issue 25 item 2): per foreign zoo, adapt
the shipped foundation encoder to the zoo's weights (every split, no labels), then score LightGBM heads
trained on the zoo's train split (early-stopped on validation) on its test split:

- ``stats+gbm``: weight statistics only;
- ``stats+rep+gbm (shipped)``: statistics + the shipped encoder's representation;
- ``stats+rep+gbm (adapted)``: statistics + the adapted encoder's representation.

    OMP_NUM_THREADS=1 python benchmarks/foundation/adapt_gain.py --zoos Z1,Z2 --work /tmp/adapt [--epochs 8]

Prints a markdown table and writes ``adapt_gain.json`` next to this script (or ``--json``). The zoos are
only read; the adapted encoders go under ``--work``.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import r2_score

from zooprobe import AdaptConfig, adapt_encoder
from zooprobe.api import load_encoder, load_zoo
from zooprobe.baselines.models import fit_baseline
from zooprobe.tokens.statistics import featurize

TARGETS = {"accuracy R²": "test_accuracy", "log10 lr R²": "learning_rate"}


def target(meta, column):
    y = meta[column].to_numpy(float)
    return np.log10(y) if column == "learning_rate" else y


def score(x, y, sp):
    tr, va, te = (sp == s for s in ("train", "validation", "test"))
    model = fit_baseline("gbm", "continuous", x[tr], y[tr], x[va], y[va])
    return float(r2_score(y[te], model.predict(x[te])))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoos", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--json", default=str(Path(__file__).with_name("adapt_gain.json")))
    a = ap.parse_args()
    shipped = load_encoder("foundation")
    results = {}
    for source in a.zoos.split(","):
        name = Path(source).name
        t0 = time.time()
        out = adapt_encoder(AdaptConfig(zoo=source, epochs=a.epochs), Path(a.work) / name, progress=False)
        adapt_s = time.time() - t0
        adapted = load_encoder(out)
        zoo = load_zoo(source).final()
        meta = zoo.metadata().reset_index(drop=True)
        sp = meta["split"].to_numpy()
        stats = np.asarray(featurize(zoo.state_dicts()), np.float32)
        rep_shipped = shipped.encode(zoo).numpy()
        rep_adapted = adapted.encode(zoo).numpy()
        cos = (rep_shipped * rep_adapted).sum(1) / (
            np.linalg.norm(rep_shipped, axis=1) * np.linalg.norm(rep_adapted, axis=1)
        )
        row = {"adapt_seconds": round(adapt_s, 1), "epochs": a.epochs, "mean_cosine": float(cos.mean())}
        for label, column in TARGETS.items():
            y = target(meta, column)
            row[label] = {
                "stats+gbm": score(stats, y, sp),
                "stats+rep+gbm (shipped)": score(np.hstack([stats, rep_shipped]), y, sp),
                "stats+rep+gbm (adapted)": score(np.hstack([stats, rep_adapted]), y, sp),
            }
        results[name] = row
        print(name, json.dumps(row), flush=True)
        Path(a.json).write_text(json.dumps(results, indent=1))
    cols = ["stats+gbm", "stats+rep+gbm (shipped)", "stats+rep+gbm (adapted)"]
    print("\n| zoo | metric | " + " | ".join(cols) + " | adapted - shipped |")
    print("|---|---|" + "---|" * (len(cols) + 1))
    for name, row in results.items():
        for label in TARGETS:
            cells = row[label]
            gain = cells[cols[2]] - cells[cols[1]]
            print(
                f"| {name} | {label} | " + " | ".join(f"{cells[c]:.3f}" for c in cols) + f" | {gain:+.3f} |"
            )


if __name__ == "__main__":
    main()
