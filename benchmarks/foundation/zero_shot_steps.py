"""Zero-shot log10 learning rate from weight statistics, corpus -> held-out zoos, for a corpus that records
its runs' training length (`train_samples`, `steps`: ``zoo_config_v2.yaml``); docs/foundation.md, "A corpus
that spans training lengths".

    python benchmarks/foundation/features.py zoos/foundation-v2 F/corpus.npz       # and each held-out zoo
    python benchmarks/foundation/zero_shot_steps.py --features_dir F [--corpus corpus,corpus_long]

Per held-out zoo: R², Pearson r and the mean error (prediction - truth) of the same LightGBM regressor as
`zero_shot_length.py` (weight statistics only, 6,000 corpus runs), trained on all corpus runs and on the
runs of at least 100 and 300 optimizer steps; then, inside the corpus, a head trained on runs of at most 8
epochs and of at most 512 training samples (the first corpus's recipe) asked about the other runs. With
``--json`` the numbers are written to a file too.
"""

import argparse
import json

import numpy as np
import pandas as pd
from sklearn.metrics import r2_score
from stats_lr import fit_regressor, load_stats

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--features_dir", default="/work/runs/fnd")
ap.add_argument("--zoos", default="foreignA,foreignB,foreignC,bench")
ap.add_argument("--corpus", default="corpus", help="feature files of the corpus (comma-separated: joined)")
ap.add_argument("--n_fit", type=int, default=6000)
ap.add_argument("--json", default=None)
a = ap.parse_args()


def score(truth: np.ndarray, pred: np.ndarray) -> dict:
    return {
        "r2": float(r2_score(truth, pred)),
        "r": float(np.corrcoef(truth, pred)[0, 1]),
        "bias": float(np.mean(pred - truth)),
        "n": len(truth),
    }


parts = [load_stats(a.features_dir, name) for name in a.corpus.split(",")]
S = np.concatenate([p[0] for p in parts])
M = pd.concat([p[1] for p in parts], ignore_index=True)
y = np.log10(M.learning_rate.to_numpy(float))
steps = M.steps.to_numpy(float)
samples = M.train_samples.to_numpy(float)
print(
    f"corpus: {len(M)} final models; train_samples median {np.median(samples):.0f} "
    f"(q10 {np.quantile(samples, 0.1):.0f}, q90 {np.quantile(samples, 0.9):.0f}); steps median "
    f"{np.median(steps):.0f} (q10 {np.quantile(steps, 0.1):.0f}, q90 {np.quantile(steps, 0.9):.0f})",
    flush=True,
)
zoos = {n: load_stats(a.features_dir, n) for n in a.zoos.split(",")}
results: dict = {"corpus_models": len(M), "held_out": {}, "inside": {}}
for tag, sel in (("all runs", steps >= 0), ("steps>=100", steps >= 100), ("steps>=300", steps >= 300)):
    idx = np.random.default_rng(0).permutation(np.flatnonzero(sel))[: a.n_fit]
    model = fit_regressor(S[idx], y[idx])
    out, row = [], {}
    for name, (stats, meta) in zoos.items():
        row[name] = score(np.log10(meta.learning_rate.to_numpy(float)), model.predict(stats))
        out.append(f"{name} r2 {row[name]['r2']:.2f} r {row[name]['r']:.2f} bias {row[name]['bias']:+.2f}")
    results["held_out"][f"{tag} ({len(idx)} runs)"] = row
    print(f"{tag} ({len(idx)} runs):", " | ".join(out), flush=True)

# inside the corpus: the first corpus's recipe (<= 8 epochs, <= 512 samples) asked about the other runs
first = (M.epochs.to_numpy() <= 8) & (samples <= 512)
perm = np.random.default_rng(0).permutation(np.flatnonzero(first))
held, fit_idx = perm[:1000], perm[1000:]
others = np.flatnonzero(~first)
# a long-run corpus has none of them
model = fit_regressor(S[fit_idx], y[fit_idx]) if len(fit_idx) >= 500 else None
for tag, idx in (("held-out runs of that recipe", held), ("runs longer or on more data", others)):
    if model is None:
        break
    results["inside"][tag] = score(y[idx], model.predict(S[idx]))
    r = results["inside"][tag]
    print(f"corpus, fit on <= 8 epochs and <= 512 samples ({len(fit_idx)}), {tag}: r2 {r['r2']:.3f} "
          f"bias {r['bias']:+.2f}", flush=True)  # fmt: skip
if a.json:
    with open(a.json, "w") as f:
        json.dump(results, f, indent=1)
