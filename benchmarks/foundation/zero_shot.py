"""Zero-shot scores of the shipped heads (no training by the user) on zoos they never saw: each zoo's final
test-split models go through `zooprobe.predict` with `zooprobe.default_heads()` (the path of
``zooprobe predict FILE``: canonical form, statistics, the shipped foundation encoder, gbm heads, domain).

    python benchmarks/foundation/zero_shot.py --zoo foreignA=/work/zoos/foreign-tabular \\
        --zoo foreignB=/work/zoos/foreign-images --output zero_shot.json

Per zoo and target: R² (log10 learning rate, test accuracy) or accuracy (optimizer, activation, scheduler,
normalization) against the zoo's metadata, the majority class of the zoo's own train split for reference,
and the share of models the heads flag out of their applicability domain (the accuracy also on the models
its domain accepts: the accuracy head flags networks of tasks the corpus does not have). Class names the corpus does not
have count as wrong (a foreign ``nadam`` can never be predicted); plain SGD, SGD with momentum and nesterov
are all ``sgd`` (foreign generators name them so).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import zooprobe

SGD = {"plain_sgd": "sgd", "nesterov": "sgd"}
CATEGORICAL = {  # target -> the zoo metadata columns that may hold it, first found wins
    "optimizer": ("optimizer",),
    "activation": ("activation",),
    "scheduler": ("scheduler", "lr_schedule"),
    "normalization": ("normalization",),
}


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    ok = np.isfinite(y) & np.isfinite(p)
    y, p = y[ok], p[ok]
    return float(1 - ((y - p) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12))


def _labels(values: object, target: str) -> np.ndarray:
    out = np.array([str(v) if v is not None else "" for v in values], dtype=object)
    if target == "optimizer":
        out = np.array([SGD.get(v, v) for v in out], dtype=object)
    return out


def score_zoo(path: str, heads: list) -> dict:
    zoo = zooprobe.load_zoo(path).final()
    test, train = zoo.split("test"), zoo.split("train")
    meta, train_meta = test.metadata().reset_index(drop=True), train.metadata().reset_index(drop=True)
    start = time.perf_counter()
    table = zooprobe.predict(heads, list(test.state_dicts()))
    out: dict = {"n_test": len(meta), "seconds": round(time.perf_counter() - start, 1)}
    flags = [c for c in table.columns if c.endswith("/in_domain")]
    out["out_of_domain"] = {c.split("/")[0]: float((table[c] != True).mean()) for c in flags}  # noqa: E712
    rows = {}
    lr = np.log10(meta["learning_rate"].to_numpy(float))
    rows["log10_lr"] = {"r2": _r2(lr, table["hyperparameters/learning_rate_log10"].to_numpy(float))}
    acc = meta["test_accuracy"].to_numpy(float)
    inside = (table["accuracy/in_domain"] == True).to_numpy()  # noqa: E712
    p_acc = table["accuracy/test_accuracy"].to_numpy(float)
    rows["test_accuracy"] = {
        "r2": _r2(acc, p_acc),  # every model, flagged or not
        "in_domain": float(inside.mean()),
        "r2_in_domain": _r2(acc[inside], p_acc[inside]) if inside.sum() >= 5 else None,
    }
    for target, columns in CATEGORICAL.items():
        column = next((c for c in columns if c in meta and meta[c].notna().any()), None)
        predicted = f"hyperparameters/{target}"
        if column is None or predicted not in table:
            continue
        truth = _labels(meta[column], target)
        guess = _labels(table[predicted], target)
        values, counts = np.unique(_labels(train_meta[column], target), return_counts=True)
        rows[target] = {
            "accuracy": float((truth == guess).mean()),
            "majority": float((truth == values[counts.argmax()]).mean()),
            "classes": sorted(set(truth)),
        }
    out["targets"] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", action="append", required=True, help="NAME=PATH of a zoo to score on")
    ap.add_argument("--output", type=Path, help="write the table as JSON here")
    ap.add_argument("--heads", nargs="+", help="accuracy and hyperparameters head folders (default: shipped)")
    a = ap.parse_args()
    if a.heads:
        from zooprobe.inference import load_heads

        heads = load_heads(a.heads)
    else:
        heads = zooprobe.default_heads()
    result = {}
    for item in a.zoo:
        name, _, path = item.partition("=")
        result[name] = score_zoo(path, heads)
        print(name, json.dumps(result[name]["targets"]), result[name]["out_of_domain"], flush=True)
    if a.output:
        a.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
