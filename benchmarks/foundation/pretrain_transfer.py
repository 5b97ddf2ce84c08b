"""Pretrain the foundation encoder (`zooprobe.encoder.layer_model`) on the corpus features written by
`features.py`, and score it on held-out zoos (each zoo's own train/validation/test splits):

    python benchmarks/foundation/pretrain_transfer.py --features_dir F --foreign foreignA,foreignB,foreignC,bench \
        --epochs 20 --out run.json     # also run.pt (weights + targets) and run_rep.npy

Per held-out zoo and target: `stats` (LightGBM on weight statistics, trained on the zoo's train split),
`stats+rep` (statistics + the frozen representation), `rep` (representation only), `zs stats` /
`zs stats+rep` (zero-shot: trained on the corpus test split, never on the held-out zoo), `zs stats(all)`
(statistics, corpus train + test), `direct` (the encoder's own learning-rate head), `majority`.
SGD variants (plain_sgd, nesterov, sgd with momentum) are one class `sgd` for the optimizer target.
"""

import argparse
import json
import math
import time

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import r2_score
from torch import nn

from zooprobe.baselines.models import fit_baseline
from zooprobe.encoder.layer_model import LayerEncoder as _LE
from zooprobe.encoder.layer_model import LayerEncoderConfig
from zooprobe.encoder.neuron_model import multitask_loss
from zooprobe.training.objectives.neurons import metadata_targets, target_tensors


def LayerEncoder(n_feat, targets, d=128, n_layers=3, **kw):
    return _LE(LayerEncoderConfig(d_model=d, n_layers=n_layers, **kw), targets)


def train(model, x, mask, ys, xv, mv, ysv, epochs=30, bs=256, lr=1e-3, wd=0.05, seed=0, log=print):
    g = torch.Generator().manual_seed(seed)
    model.fit_standardization(x, mask)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    steps = epochs * math.ceil(len(x) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    best, best_state = float("inf"), None
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        tot = 0.0
        for s in range(0, len(x), bs):
            i = perm[s : s + bs]
            loss = multitask_loss(
                model.targets, model.predict(model.latent(x[i], mask[i])), {k: v[i] for k, v in ys.items()}
            )
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(i)
        vl = evaluate_loss(model, xv, mv, ysv)
        if vl < best:
            best, best_state = vl, {k: v.clone() for k, v in model.state_dict().items()}
        log(f"epoch {ep + 1}: train {tot / len(x):.4f} val {vl:.4f}")
    model.load_state_dict(best_state)
    return best


@torch.no_grad()
def evaluate_loss(model, x, mask, ys, bs=1024):
    model.eval()
    tot = 0.0
    for s in range(0, len(x), bs):
        sl = slice(s, s + bs)
        tot += float(
            multitask_loss(
                model.targets, model.predict(model.latent(x[sl], mask[sl])), {k: v[sl] for k, v in ys.items()}
            )
        ) * len(x[sl])
    return tot / len(x)


@torch.no_grad()
def represent(model, x, mask, bs=1024):
    model.eval()
    return torch.cat([model(x[s : s + bs], mask[s : s + bs]) for s in range(0, len(x), bs)]).numpy()


ap = argparse.ArgumentParser()
ap.add_argument("--features_dir", default=".")
ap.add_argument("--n_train", type=int, default=0)
ap.add_argument("--epochs", type=int, default=30)
ap.add_argument("--d", type=int, default=128)
ap.add_argument("--layers", type=int, default=3)
ap.add_argument("--foreign", default="foreignA")
ap.add_argument("--out", default="")
ap.add_argument("--corpus", default="corpus")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--drop_feats", default="")
ap.add_argument("--load", default="")
ap.add_argument("--encoder", default="", help="score this pretrained foundation encoder (e.g. default) instead")
a = ap.parse_args()
torch.manual_seed(a.seed)
SGD = {"plain_sgd": "sgd", "nesterov": "sgd", "sgd": "sgd"}


def load(name):
    z = np.load(f"{a.features_dir}/{name}.npz")
    m = pd.read_parquet(f"{a.features_dir}/{name}_meta.parquet")
    if "lr_schedule" in m and m["scheduler"].isna().all():
        m["scheduler"] = m["lr_schedule"]
    ok = z["mask"].any(1)
    return (
        torch.tensor(z["tokens"][ok]),
        torch.tensor(z["mask"][ok]),
        z["stats"][ok],
        m[ok].reset_index(drop=True),
    )


X, M, S, meta = load(a.corpus)
sp = meta["split"].to_numpy()
tr = np.flatnonzero(sp == "train")
tr = np.random.default_rng(0).permutation(tr)
if a.n_train:
    tr = tr[: a.n_train]
va = np.flatnonzero(sp == "validation")
te = np.flatnonzero(sp == "test")
specs = metadata_targets(meta.iloc[tr])
ys = target_tensors(meta, specs)
t0 = time.time()
if a.encoder:  # a shipped or saved foundation encoder: nothing is trained
    from zooprobe.api import load_encoder

    model = load_encoder(a.encoder, progress=False).encoder
    specs = list(model.targets)
else:
    model = LayerEncoder(X.shape[-1], specs, d=a.d, n_layers=a.layers)
sel = lambda idx: {k: v[idx] for k, v in ys.items()}
if a.load:
    model.load_state_dict(torch.load(a.load, weights_only=True)["state"])
elif not a.encoder:
    train(
        model,
        X[tr],
        M[tr],
        sel(tr),
        X[va],
        M[va],
        sel(va),
        epochs=a.epochs,
        log=lambda s: print(s, flush=True),
    )
t_pre = time.time() - t0
res = {"n_train": len(tr), "pretrain_s": t_pre, "targets": [t.name for t in specs]}
print(f"pretrained on {len(tr)} in {t_pre:.0f}s", flush=True)
R_corpus = represent(model, X, M)
if a.out:
    torch.save(
        {
            "state": model.state_dict(),
            "specs": [vars(t) for t in specs],
            "config": {"d_model": a.d, "n_layers": a.layers},
        },
        a.out.replace(".json", ".pt"),
    )
    np.save(a.out.replace(".json", "_rep.npy"), R_corpus)


def yv(m, target):
    if target == "test_accuracy":
        return m["test_accuracy"].to_numpy(float), "continuous"
    if target == "log10_lr":
        return np.log10(m["learning_rate"].to_numpy(float)), "continuous"
    col = (
        m[target].astype(str).map(lambda v: SGD.get(v, v)) if target == "optimizer" else m[target].astype(str)
    )
    return col.to_numpy(), "categorical"


def score(kind, y, p):
    return float(r2_score(y, p)) if kind == "continuous" else float((y == p).mean())


def fit_predict(kind, xtr, ytr, xva, yva, xte, classes=None):
    if kind == "continuous":
        b = fit_baseline("gbm", kind, xtr, ytr, xva, yva)
        return b.predict(xte)
    codes = {c: i for i, c in enumerate(classes)}
    enc = lambda y: np.array([codes.get(v, -1) for v in y])
    b = fit_baseline("gbm", kind, xtr, enc(ytr), xva, enc(yva), n_classes=len(classes))
    return np.array(classes)[np.asarray(b.predict_proba(xte)).argmax(1)]


for fname in a.foreign.split(","):
    Xf, Mf, Sf, mf = load(fname)
    Rf = represent(model, Xf, Mf)
    fsp = mf["split"].to_numpy()
    ftr, fva, fte = (np.flatnonzero(fsp == s) for s in ("train", "validation", "test"))
    # zero-shot heads: trained on the corpus test split (disjoint from pretraining), early-stopped on validation
    out = {}
    for target in ("test_accuracy", "log10_lr", "optimizer", "activation", "scheduler"):
        y, kind = yv(mf, target)
        yc, _ = yv(meta, target)
        if kind == "categorical" and len(set(y)) < 2:
            continue
        classes = sorted(set(yc[te]) | set(y)) if kind == "categorical" else None
        row = {}
        for name, (A, B) in {
            "stats": (S, Sf),
            "stats+rep": (np.hstack([S, R_corpus]), np.hstack([Sf, Rf])),
        }.items():
            if target != "test_accuracy":
                p = fit_predict(kind, A[te], yc[te], A[va], yc[va], B[fte], classes)
                row[f"zs {name}"] = score(kind, y[fte], p)
            p = fit_predict(kind, A[ftr] if False else B[ftr], y[ftr], B[fva], y[fva], B[fte], classes)
            row[name] = score(kind, y[fte], p)
        p = fit_predict(kind, Rf[ftr], y[ftr], Rf[fva], y[fva], Rf[fte], classes)
        row["rep"] = score(kind, y[fte], p)
        if target != "test_accuracy":
            seen = np.concatenate([tr, te])
            p = fit_predict(kind, S[seen], yc[seen], S[va], yc[va], Sf[fte], classes)
            row["zs stats(all)"] = score(kind, y[fte], p)
        if target == "log10_lr":
            with torch.no_grad():
                model.eval()
                o = model.predict(model.latent(Xf[fte], Mf[fte]))["log10_learning_rate"][:, 0].numpy()
            t = next(t for t in specs if t.name == "log10_learning_rate")
            row["direct"] = score(kind, y[fte], o * t.std + t.mean)
            row["lr_range_foreign"] = [float(y.min()), float(y.max())]
        if kind == "categorical":
            vals, cnt = np.unique(y[ftr], return_counts=True)
            row["majority"] = float((y[fte] == vals[cnt.argmax()]).mean())
        out[target] = row
        print(
            fname,
            target,
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()},
            flush=True,
        )
    res[fname] = out
if a.out:
    json.dump(res, open(a.out, "w"), indent=1)
