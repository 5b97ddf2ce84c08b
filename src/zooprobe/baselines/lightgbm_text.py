"""LightGBM text models read back safely: `check_lightgbm_text` refuses a model text that LightGBM's parser
or predictor could be tricked by (before it parses anything), `_BoosterModel` predicts with one that
passed;
`TreeEnsemble` predicts with the three plain objectives in NumPy (no LightGBM import), `read_lightgbm_text`
picks between them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

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


_ZERO = 1e-35  # LightGBM's kZeroThreshold: |x| at most this is zero (dropped from its dense rows)


def read_lightgbm_text(text: str) -> Any:
    """A LightGBM text model (checked by `check_lightgbm_text`) as an estimator with ``predict`` /
    ``predict_proba``: `TreeEnsemble` (NumPy, no LightGBM import) for the objectives zooprobe writes
    (``regression``, ``binary``, ``multiclass``), LightGBM's own ``Booster`` for any other."""
    ensemble = TreeEnsemble.from_text(text)
    return ensemble if ensemble is not None else _BoosterModel(text)


class TreeEnsemble:
    """LightGBM's prediction of a text model with numerical splits, in NumPy: the same trees, decision
    rules (missing values: none / zero / NaN with the default direction; NaN as 0 unless the split sends
    NaN its own way; |x| <= 1e-35 as 0), tree order of summation and output transform (identity, sigmoid,
    softmax), so predictions equal ``lightgbm.Booster(model_str=text).predict`` to float64 rounding, without
    importing LightGBM (which imports scikit-learn, SciPy and pandas: seconds of start-up per process).

    All trees are evaluated at once: ``[trees, rows]`` node indices advance one level per step."""

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        n_outputs: int,
        transform: str,
        sigmoid: float = 1.0,
    ) -> None:
        self.feature, self.threshold = arrays["feature"], arrays["threshold"]
        self.default_left, self.missing = arrays["default_left"], arrays["missing"]
        self.left, self.right, self.leaf_value = arrays["left"], arrays["right"], arrays["leaf_value"]
        self.n_outputs, self.transform, self.sigmoid = n_outputs, transform, sigmoid
        self.text = ""
        """The model text it was read from (`Baseline.to_record` saves it again)."""

    @classmethod
    def from_text(cls, text: str) -> TreeEnsemble | None:
        """The ensemble of a model text, or None when its objective or options are not the three plain
        ones (then LightGBM itself predicts). The text must have passed `check_lightgbm_text`."""
        head, _, rest = text.partition("\nTree=")
        header = _fields(head.split("\n")[1:], "the header")
        if "average_output" in head.split("\n"):
            return None
        objective = header.get("objective", "").split()
        n_outputs = _int(header, "num_tree_per_iteration", "the header")
        sigmoid = 1.0
        if objective == ["regression"]:
            transform = "identity"
        elif len(objective) == 2 and objective[0] == "binary" and objective[1].startswith("sigmoid:"):
            transform, sigmoid = "sigmoid", float(objective[1].removeprefix("sigmoid:"))
        elif objective == ["multiclass", f"num_class:{n_outputs}"]:
            transform = "softmax"
        else:
            return None
        trees = ("Tree=" + rest).partition("end of trees")[0]
        blocks = [b for b in re.split(r"^Tree=\d+\n", trees, flags=re.MULTILINE) if b.strip()]
        parsed = [_fields(b.strip("\n").split("\n"), f"tree {i}") for i, b in enumerate(blocks)]
        leaves = [_int(f, "num_leaves", f"tree {i}") for i, f in enumerate(parsed)]
        n, width = len(parsed), max(max(leaves) - 1, 1)
        arrays = {
            "feature": np.zeros((n, width), dtype=np.int64),
            "threshold": np.zeros((n, width)),
            "default_left": np.zeros((n, width), dtype=bool),
            "missing": np.zeros((n, width), dtype=np.int64),
            "left": np.full((n, width), -1, dtype=np.int64),  # a one-leaf tree: node 0 -> leaf 0 both ways
            "right": np.full((n, width), -1, dtype=np.int64),
            "leaf_value": np.zeros((n, max(leaves))),
        }
        for i, (fields, count) in enumerate(zip(parsed, leaves, strict=True)):
            where = f"tree {i}"
            arrays["leaf_value"][i, :count] = _values(fields, "leaf_value", where, count, float)
            if count == 1:
                continue
            splits = count - 1
            decision = _values(fields, "decision_type", where, splits, int)
            arrays["feature"][i, :splits] = _values(fields, "split_feature", where, splits, int)
            arrays["threshold"][i, :splits] = _values(fields, "threshold", where, splits, float)
            arrays["default_left"][i, :splits] = (decision & 2) != 0
            arrays["missing"][i, :splits] = (decision >> 2) & 3
            arrays["left"][i, :splits] = _values(fields, "left_child", where, splits, int)
            arrays["right"][i, :splits] = _values(fields, "right_child", where, splits, int)
        ensemble = cls(arrays, n_outputs, transform, sigmoid)
        ensemble.text = text
        return ensemble

    def raw_scores(self, x: np.ndarray) -> np.ndarray:
        """``[N, n_outputs]`` sums of the trees' leaf values (LightGBM's raw scores)."""
        x = np.asarray(x, dtype=np.float64)
        x = np.where(np.abs(x) <= _ZERO, 0.0, x)  # NaN stays NaN
        n_trees = len(self.leaf_value)
        trees = np.arange(n_trees)[:, None]
        rows = np.arange(len(x))[None, :]
        node = np.zeros((n_trees, len(x)), dtype=np.int64)
        while (inner := node >= 0).any():
            at = np.where(inner, node, 0)
            value = x[rows, self.feature[trees, at]]
            missing = self.missing[trees, at]
            nan = np.isnan(value)
            value = np.where(nan & (missing != 2), 0.0, value)
            default = ((missing == 1) & (np.abs(value) <= _ZERO)) | ((missing == 2) & nan)
            go_left = np.where(default, self.default_left[trees, at], value <= self.threshold[trees, at])
            child = np.where(go_left, self.left[trees, at], self.right[trees, at])
            node = np.where(inner, child, node)
        values = self.leaf_value[trees, ~node]  # [trees, N]
        out = np.zeros((len(x), self.n_outputs))
        for t in range(n_trees):  # LightGBM's order of summation: tree after tree
            out[:, t % self.n_outputs] += values[t]
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """What ``Booster.predict`` returns: values ``[N]`` (regression), P(1) ``[N]`` (binary) or class
        probabilities ``[N, K]`` (multiclass)."""
        raw = self.raw_scores(x)
        if self.transform == "softmax":
            e = np.exp(raw - raw.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        if self.transform == "sigmoid":
            return 1.0 / (1.0 + np.exp(-self.sigmoid * raw[:, 0]))
        return raw[:, 0]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.predict(x)
        return np.column_stack([1.0 - p, p]) if p.ndim == 1 else p


class _BoosterModel:
    """A LightGBM model read back from its text format, with the ``predict`` / ``predict_proba`` of the
    scikit-learn estimator it was saved from (probabilities over the training labels, in sorted order)."""

    def __init__(self, text: str) -> None:
        import lightgbm as lgb  # heavy: lightgbm

        self.text = text
        try:
            self.booster = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as e:
            raise ValueError(f"not a LightGBM text model ({e})") from e

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x), dtype=np.float64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.predict(x)
        return np.column_stack([1.0 - p, p]) if p.ndim == 1 else p


__all__ = ["MAX_TREE_LEAVES", "TreeEnsemble", "check_lightgbm_text", "read_lightgbm_text"]
