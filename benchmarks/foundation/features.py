"""Layer tokens (`zooprobe.tokens.layers`) + weight statistics + metadata of a zoo's final checkpoints, in one
npz (+ _meta.parquet) for `pretrain_transfer.py`:

    python benchmarks/foundation/features.py ZOO OUT.npz [LIMIT]

About 80 ms per model on a loaded 2-core machine (20,193 corpus models: 27 min).
"""

import sys
import time

import numpy as np

from zooprobe.api import load_zoo
from zooprobe.tokens.layers import layer_tokens
from zooprobe.tokens.statistics import featurize

src, out = sys.argv[1], sys.argv[2]
limit = int(sys.argv[3]) if len(sys.argv) > 3 else 0
zoo = load_zoo(src).final()
if limit:
    zoo = zoo.select(np.arange(min(limit, len(zoo))))
meta = zoo.metadata().reset_index(drop=True)
t = time.time()
toks, bad = [], []
for i, sd in enumerate(zoo.state_dicts()):
    try:
        toks.append(layer_tokens(sd).numpy())
    except Exception as e:
        toks.append(None)
        bad.append((i, str(e)[:80]))
    if i % 2000 == 0:
        print(i, f"{time.time() - t:.1f}s", flush=True)
t_tok = time.time() - t
print("tokens", len(toks), "bad", len(bad), bad[:3], f"{t_tok:.1f}s", flush=True)
t = time.time()
stats = featurize(zoo.state_dicts())
print("stats", type(stats), f"{time.time() - t:.1f}s", flush=True)
L = max(x.shape[0] for x in toks if x is not None)
Fd = next(x for x in toks if x is not None).shape[1]
arr = np.zeros((len(toks), L, Fd), np.float32)
mask = np.zeros((len(toks), L), bool)
for i, x in enumerate(toks):
    if x is not None:
        arr[i, : len(x)] = x
        mask[i, : len(x)] = True
S = stats.to_numpy(np.float32) if hasattr(stats, "to_numpy") else np.asarray(stats, np.float32)
cols = list(stats.columns) if hasattr(stats, "columns") else []
np.savez(out, tokens=arr, mask=mask, stats=S, stat_cols=np.array(cols))
meta.to_parquet(out.replace(".npz", "_meta.parquet"))
print("saved", arr.shape, S.shape)
