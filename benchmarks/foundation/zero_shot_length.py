"""Zero-shot log10 learning rate from weight statistics, corpus -> held-out zoos, by the training length of
the corpus runs the head learns from (docs/foundation.md, "Why the zero-shot learning rate misses").

    python benchmarks/foundation/zero_shot_length.py --features_dir F   # F: the npz files of features.py

Per held-out zoo: R², Pearson r and the mean error (prediction - truth) of a LightGBM regressor on the
weight statistics, trained on 6,000 corpus runs of all epochs, of at least 10 epochs, of at least 20; then,
inside the corpus, a head trained on runs of at most 8 epochs asked about runs of at least 20.
"""

import argparse

import numpy as np
from sklearn.metrics import r2_score
from stats_lr import fit_regressor, load_stats

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--features_dir", default="/work/runs/fnd")
ap.add_argument("--zoos", default="foreignA,foreignB,foreignC,bench")
a = ap.parse_args()


S, M = load_stats(a.features_dir, "corpus")
y = np.log10(M.learning_rate.to_numpy(float))
epochs = M.epochs.to_numpy()
zoos = {n: load_stats(a.features_dir, n) for n in a.zoos.split(",")}
for tag, sel in (("all epochs", epochs >= 0), ("epochs>=10", epochs >= 10), ("epochs>=20", epochs >= 20)):
    idx = np.random.default_rng(0).permutation(np.flatnonzero(sel))[:6000]
    model = fit_regressor(S[idx], y[idx])
    out = []
    for name, (stats, meta) in zoos.items():
        truth, pred = np.log10(meta.learning_rate.to_numpy(float)), model.predict(stats)
        r = np.corrcoef(truth, pred)[0, 1]
        out.append(f"{name} r2 {r2_score(truth, pred):.2f} r {r:.2f} bias {np.mean(pred - truth):+.2f}")
    print(f"{tag} ({len(idx)} runs):", " | ".join(out), flush=True)

# inside the corpus: trained on runs of at most 8 epochs, asked about held-out short runs and long runs
short = np.random.default_rng(0).permutation(np.flatnonzero(epochs <= 8))
held, fit_idx = short[:1500], short[1500:]
model = fit_regressor(S[fit_idx], y[fit_idx])
long_runs = np.flatnonzero(epochs >= 20)
for tag, idx in (("corpus, held-out runs of <= 8 epochs", held), ("corpus, runs of >= 20 epochs", long_runs)):
    pred = model.predict(S[idx])
    print(f"{tag}: r2 {r2_score(y[idx], pred):.3f} bias {np.mean(pred - y[idx]):+.2f}", flush=True)
