"""The supervised ceiling of weight features inside each held-out zoo (docs/foundation.md, "How far weight
features carry these targets at all"): LightGBM fitted and scored by 5-fold cross-validation on the zoo's
own final models, for log10 lr (optimizer alone, statistics, statistics + optimizer known, + layer tokens)
and optimizer / activation accuracy (statistics, + layer tokens), with the majority class.

    python benchmarks/foundation/features.py zoos/foreign-tabular F/foreignA.npz     # and each held-out zoo
    python benchmarks/foundation/in_zoo_ceiling.py F [foreignA,foreignB,foreignC,bench]
"""

import sys

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

feat = sys.argv[1]
names = (sys.argv[2] if len(sys.argv) > 2 else "foreignA,foreignB,foreignC,bench").split(",")


def load(name: str):
    z = np.load(f"{feat}/{name}.npz")
    meta = pd.read_parquet(f"{feat}/{name}_meta.parquet")
    ok = z["mask"].any(1)
    tokens, mask, stats = z["tokens"][ok], z["mask"][ok], z["stats"][ok]
    lens = mask.sum(1)
    layers = mask.copy()
    layers[:, 0] = False  # token 0 is the input token
    mean = (tokens * layers[..., None]).sum(1) / np.maximum(1, layers.sum(1))[:, None]
    pooled = np.hstack([tokens[:, 1], tokens[np.arange(len(tokens)), lens - 1], mean])
    return stats, pooled, meta[ok].reset_index(drop=True)


clf = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.05, subsample=0.8, subsample_freq=1,
                         colsample_bytree=0.5, verbose=-1, n_jobs=2)  # fmt: skip
reg = lgb.LGBMRegressor(n_estimators=400, learning_rate=0.05, subsample=0.8, subsample_freq=1,
                        colsample_bytree=0.5, verbose=-1, n_jobs=2)  # fmt: skip
for name in names:
    S, K, M = load(name)
    opt = np.array([{"plain_sgd": "sgd", "nesterov": "sgd"}.get(o, o) for o in M.optimizer.astype(str)])
    act = np.array(M.activation.astype(str).tolist())
    y = np.log10(M.learning_rate.to_numpy(float))
    means = pd.Series(y).groupby(opt).transform("mean").to_numpy()
    onehot = pd.get_dummies(opt).to_numpy(float)
    kf, skf = KFold(5, shuffle=True, random_state=0), StratifiedKFold(5, shuffle=True, random_state=0)
    row = [f"lr R2: optimizer alone {1 - np.var(y - means) / np.var(y):.2f}"]
    for tag, X in (("stats", S), ("stats+optimizer", np.hstack([S, onehot])), ("stats+tokens", np.hstack([S, K]))):
        row.append(f"{tag} {r2_score(y, cross_val_predict(reg, X, y, cv=kf)):.2f}")
    for target, t in (("optimizer", opt), ("activation", act)):
        accs = [np.mean(cross_val_predict(clf, X, t, cv=skf) == t) for X in (S, np.hstack([S, K]))]
        majority = pd.Series(t).value_counts(normalize=True).iloc[0]
        row.append(f"{target} acc stats {accs[0]:.2f} / +tokens {accs[1]:.2f} (majority {majority:.2f})")
    print(name, len(y), " | ".join(row), flush=True)
