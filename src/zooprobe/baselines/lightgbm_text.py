"""LightGBM text models read back safely: `check_lightgbm_text` refuses a model text that LightGBM's parser
or predictor could be tricked by (before it parses anything), `_BoosterModel` predicts with one that
passed."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

MAX_TREE_LEAVES = 1 << 17
"""The most leaves a saved tree may declare (LightGBM's own ``num_leaves`` limit)."""
_MAX_MISSING_TYPE = 2  # decision_type bits 2-3: none, zero, NaN


def check_lightgbm_text(text: str, n_features: int, n_outputs: int) -> None:
    """`ValueError` (naming the tree and field) unless `text` is a LightGBM text model that is safe to hand
    to LightGBM's parser and predictor for `n_features` inputs and `n_outputs` outputs per iteration.

    LightGBM trusts its model text: a tree's ``split_feature`` beyond the input reads out of bounds (a
    silently different prediction, or a segmentation fault), a child index out of range or pointing back up
    the tree crashes or loops forever. So before it parses anything: the header declares ``num_class`` and
    ``num_tree_per_iteration`` = `n_outputs` and ``max_feature_idx`` = ``n_features - 1``; every tree has a
    ``num_leaves`` in [1, `MAX_TREE_LEAVES`], no categorical splits or linear leaves (zooprobe writes
    neither), ``num_leaves - 1`` splits whose features lie in ``[0, max_feature_idx]``, finite thresholds and
    leaf values, numerical decision types, and children that form a tree (every node reached exactly once,
    children after their parent); ``tree_sizes`` (byte offsets LightGBM seeks by) match the trees."""
    if not isinstance(text, str) or not text.startswith("tree\n"):
        raise ValueError("not a LightGBM text model (it must start with a 'tree' line)")
    head, sep, rest = text.partition("\nTree=")
    if not sep:
        raise ValueError("a LightGBM text model without trees")
    header = _fields(head.split("\n")[1:], "the header")
    trees_text, end, _ = ("Tree=" + rest).partition("end of trees")
    if not end:
        raise ValueError("the model text has no 'end of trees' line")
    declared = {
        "num_class": n_outputs,
        "num_tree_per_iteration": n_outputs,
        "max_feature_idx": n_features - 1,
    }
    for key, expected in declared.items():
        value = _int(header, key, "the header")
        if value != expected:
            raise ValueError(f"the header declares {key}={value}, expected {expected}")
    starts = [m.start() for m in re.finditer(r"^Tree=", trees_text, flags=re.MULTILINE)]
    blocks = [trees_text[a:b] for a, b in zip(starts, [*starts[1:], len(trees_text)], strict=True)]
    if len(blocks) % n_outputs:
        raise ValueError(f"{len(blocks)} trees is not a multiple of num_tree_per_iteration={n_outputs}")
    if "tree_sizes" in header:  # LightGBM seeks each tree by these byte sizes
        actual = [str(len(b.encode())) for b in blocks]
        if header["tree_sizes"].split() != actual:
            raise ValueError("its tree_sizes do not match its trees (the text was edited)")
    for i, block in enumerate(blocks):
        lines = block.strip("\n").split("\n")
        if lines[0] != f"Tree={i}":
            raise ValueError(f"tree {i} is labelled {lines[0][:40]!r}")
        _check_tree(_fields(lines[1:], f"tree {i}"), n_features - 1, f"tree {i}")


def _fields(lines: Iterable[str], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        if not line or line.startswith("["):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{where}: unreadable line {line[:60]!r}")
        out[key] = value
    return out


def _int(fields: Mapping[str, str], key: str, where: str) -> int:
    try:
        return int(fields[key])
    except KeyError:
        raise ValueError(f"{where} has no {key}") from None
    except ValueError:
        raise ValueError(f"{where}: {key}={fields[key][:40]!r} is not an integer") from None


def _values(fields: Mapping[str, str], key: str, where: str, count: int, kind: type) -> np.ndarray:
    text = fields.get(key)
    if text is None:
        raise ValueError(f"{where} has no {key}")
    try:
        values = np.array([kind(v) for v in text.split()], dtype=np.float64 if kind is float else np.int64)
    except (ValueError, OverflowError):
        raise ValueError(f"{where}: {key} holds values that are not {kind.__name__}s") from None
    if len(values) != count:
        raise ValueError(f"{where}: {key} has {len(values)} values, num_leaves says {count}")
    if kind is float and not np.isfinite(values).all():
        raise ValueError(f"{where}: {key} holds values that are not finite")
    return values


def _check_tree(fields: Mapping[str, str], max_feature: int, where: str) -> None:
    leaves = _int(fields, "num_leaves", where)
    if not 1 <= leaves <= MAX_TREE_LEAVES:
        raise ValueError(f"{where}: num_leaves={leaves} outside [1, {MAX_TREE_LEAVES}]")
    if fields.get("num_cat", "0") != "0":
        raise ValueError(
            f"{where}: categorical splits (num_cat={fields['num_cat'][:20]}), which zooprobe never writes"
        )
    if fields.get("is_linear", "0") != "0":
        raise ValueError(f"{where}: linear leaves (is_linear), which zooprobe never writes")
    _values(fields, "leaf_value", where, leaves, float)
    if "shrinkage" in fields:
        _values(fields, "shrinkage", where, 1, float)
    if leaves == 1:
        return
    splits = leaves - 1
    features = _values(fields, "split_feature", where, splits, int)
    bad = features[(features < 0) | (features > max_feature)]
    if len(bad):
        raise ValueError(
            f"{where}: split_feature {int(bad[0])} outside the model's {max_feature + 1} features "
            f"(max_feature_idx {max_feature})"
        )
    _values(fields, "threshold", where, splits, float)
    decision = _values(fields, "decision_type", where, splits, int)
    if (
        ((decision & 1) != 0).any()
        or ((decision >> 2) & 3 > _MAX_MISSING_TYPE).any()
        or (decision >> 4).any()
    ):
        raise ValueError(
            f"{where}: decision_type holds values zooprobe never writes (categorical or unknown)"
        )
    seen = np.zeros(splits, dtype=bool)
    seen[0] = True  # the root
    leaf_seen = np.zeros(leaves, dtype=bool)
    for side in ("left_child", "right_child"):
        for node, child in enumerate(_values(fields, side, where, splits, int)):
            if child >= 0:
                if not node < child < splits or seen[child]:
                    raise ValueError(f"{where}: {side} of node {node} is {child}, which does not form a tree")
                seen[child] = True
            else:
                leaf = ~int(child)
                if leaf >= leaves or leaf_seen[leaf]:
                    raise ValueError(
                        f"{where}: {side} of node {node} is leaf {leaf}, which does not form a tree"
                    )
                leaf_seen[leaf] = True
    if not (seen.all() and leaf_seen.all()):
        raise ValueError(f"{where}: its children do not reach every node and leaf exactly once")


class _BoosterModel:
    """A LightGBM model read back from its text format, with the ``predict`` / ``predict_proba`` of the
    scikit-learn estimator it was saved from (probabilities over the training labels, in sorted order)."""

    def __init__(self, text: str) -> None:
        import lightgbm as lgb  # heavy: lightgbm

        try:
            self.booster = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as e:
            raise ValueError(f"not a LightGBM text model ({e})") from e

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x), dtype=np.float64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.predict(x)
        return np.column_stack([1.0 - p, p]) if p.ndim == 1 else p


__all__ = ["MAX_TREE_LEAVES", "check_lightgbm_text"]
