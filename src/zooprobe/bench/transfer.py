"""``zooprobe bench transfer``: how well weight readers transfer to generators they never saw.

A *fold* holds one generator out: the **seen** side (what an encoder or head may be trained on) and the
**held-out** side (what is evaluated). Folds, always by training run (every checkpoint of a run on one
side), over the trained models (the last checkpoint of each run):

- ``datasets``: one fold per value of ``dataset`` in the corpus (held out: every run on that dataset);
- ``families``: one fold per value of ``family``;
- ``recipes``: one fold per value of ``optimizer`` and one per value of ``scheduler`` (held out: every run
  trained with that optimizer, or with that learning-rate schedule), so a recipe fold is
  ``optimizer=adam`` or ``scheduler=cosine``;
- ``foreign``: each ``--foreign`` zoo as a whole (seen: the whole corpus).

Methods, per fold and target (`METHODS`):

- ``stats+gbm``: weight statistics (`zooprobe.tokens.statistics.featurize`) + LightGBM
  (`zooprobe.baselines.models.fit_baseline`) fit on the held-out side's train split, early-stopped on its
  validation split, scored on its test split;
- ``stats+rep+gbm``: the same on the statistics and the encoder's frozen pooled representation; "gain" is
  this minus ``stats+gbm``;
- ``frozen-linear``: a linear probe (ridge / logistic regression, `fit_baseline("linear")`) on the frozen
  representation only, trained on the held-out side's train split;
- ``zero-shot stats+gbm``, ``zero-shot stats+rep+gbm``: fit on the SEEN side's train split (validation
  for early stopping), scored on the held-out side's test split: nothing is trained on the held-out
  generator;
- ``floor``: the held-out train split's mean or majority class.

Fine-tuning is out of scope. Targets (`TARGETS`): test accuracy (R²), log10 learning rate (R²), optimizer
and activation (accuracy), patterns (macro F1 over the ``has_*`` flags). A target is ``n/a`` in a cell when
a side lacks it, or when the split a method trains on or the test split it is scored on has fewer than two
distinct values of it (an optimizer fold's optimizer target, a foreign zoo without a recorded learning rate).
Classes are the union of both sides' labels, so a held-out class that the seen side never had counts as a
zero-shot error instead of being dropped.

Leakage guard: `check_fold` raises `FoldLeakError` when a held-out run (by ``model_id``) or the held-out
attribute value appears on the seen side, or (foreign folds) when both sides hold identical weights;
`build_folds` checks every fold it builds, and `Fold.seen_view` gives the seen side as a zoo view (every
checkpoint) for pretraining an encoder per fold, which `check_fold(fold, seen=view)` checks too.

Statistics are computed once per zoo (cached in ``OUTPUT/cache/``), representations once per zoo and encoder
(`zooprobe.representations.cache`). Results: ``OUTPUT/transfer.md`` and every number in
``OUTPUT/transfer.json``, written after every finished (fold, method, encoder) cell; a second run with the
same inputs skips the finished cells.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zooprobe.api import load_encoder, load_zoo
from zooprobe.bench.compare import _baseline_predictions
from zooprobe.bench.transfer_plan import (
    DEFAULT_ENCODERS,
    ENCODER_METHODS,
    GROUP_ATTRIBUTES,
    GROUPS,
    METHODS,
    NO_ENCODER,
    TARGETS,
    TRANSFER_OUTPUT,
    ZERO_SHOT,
    Fold,
    FoldLeakError,
    Target,
    _foreign_fold,
    _values,
    cell_key,
    check_fold,
)
from zooprobe.bench.transfer_tables import markdown, tables
from zooprobe.core.files import atomic_path, atomic_write_json, atomic_write_text, json_safe
from zooprobe.core.guards import load_npy
from zooprobe.core.outputs import check_output, claim_output
from zooprobe.errors import ConfigError, InvalidInputError, ZooprobeError
from zooprobe.heads.targets import TaskSpec, build_task_spec, target_arrays
from zooprobe.representations.cache import RepresentationCache
from zooprobe.tokens.statistics import featurize
from zooprobe.training.evaluator import evaluate_predictions, metric_space_targets
from zooprobe.zoo.store import Zoo

log = logging.getLogger(__name__)


def _attribute_fold(
    group: str, attribute: str, value: str, corpus: Zoo, source: str, meta: pd.DataFrame
) -> Fold:
    """The fold that holds out the corpus's runs with ``attribute == value`` (`corpus` = its final view)."""
    held = meta[attribute].astype(str) == value
    # a run is held out when any of its rows is: the split is by run, never by checkpoint
    held_runs = set(meta.loc[held, "model_id"].astype(str))
    held_mask = meta["model_id"].astype(str).isin(held_runs).to_numpy()
    seen_index, held_index = np.flatnonzero(~held_mask), np.flatnonzero(held_mask)
    return Fold(
        group,
        f"{attribute}={value}",
        attribute,
        (value,),
        corpus.select(seen_index),
        corpus.select(held_index),
        source,
        source,
        seen_index,
        held_index,
    )


def build_folds(
    corpus: Zoo,
    source: str,
    groups: Sequence[str] = GROUPS,
    foreign: dict[str, Zoo] | None = None,
    *,
    check: bool = True,
) -> list[Fold]:
    """Every fold of `groups` over `corpus` (its trained models: `Zoo.final`) and the `foreign` zoos
    (source -> zoo), each checked by `check_fold` (unless ``check=False``). Groups whose column the corpus
    lacks (or holds one value of) give no folds."""
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ConfigError(f"folds: unknown group(s) {unknown}; choose from {', '.join(GROUPS)}")
    final = corpus.final()
    meta = final.metadata().reset_index(drop=True)
    folds: list[Fold] = []
    for group in groups:
        if group == "foreign":
            for name, zoo in (foreign or {}).items():
                folds.append(_foreign_fold(final, source, zoo.final(), name))
            continue
        for attribute in GROUP_ATTRIBUTES[group]:
            if attribute not in meta.columns:
                log.info("no %s folds: the corpus has no %r column", group, attribute)
                continue
            values = _values(meta, attribute)
            if len(values) < 2:
                log.info("no %s folds: %r has %d value(s) in the corpus", group, attribute, len(values))
                continue
            folds += [_attribute_fold(group, attribute, v, final, source, meta) for v in values]
    if check:
        for fold in folds:
            check_fold(fold)
    return folds


# ------------------------------------------------------------------------------------------ features
@dataclass
class ZooData:
    """A zoo's trained models (`Zoo.final`), their metadata, statistics and representations by encoder."""

    zoo: Zoo
    meta: pd.DataFrame
    stats: np.ndarray
    reps: dict[str, np.ndarray | None] = field(default_factory=dict)
    """encoder name -> pooled [N, D] (None: the encoder could not read this zoo; see ``rep_notes``)."""
    rep_notes: dict[str, str] = field(default_factory=dict)


def _stats(zoo: Zoo, cache: Path, progress: bool) -> np.ndarray:
    path = cache / f"stats-{zoo.fingerprint()[:20]}-{len(zoo)}.npy"
    if path.exists():
        x = load_npy(path, mmap=False)  # guards: never unpickled
        if x.shape[0] == len(zoo):
            return x
    start = time.perf_counter()
    x = featurize(zoo.state_dicts(), progress=progress)
    log.info(
        "weight statistics of %d models of %s: %.1f s", len(zoo), zoo.source, time.perf_counter() - start
    )
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, x)
    return x


def _representations(data: ZooData, name: str, encoder: Any, progress: bool) -> np.ndarray | None:
    if name not in data.reps:
        start = time.perf_counter()
        try:
            reps = RepresentationCache().get(encoder, data.zoo, progress=progress)
            data.reps[name] = reps.pooled.numpy().astype(np.float64)
            log.info(
                "representations of %s under %s: %.1f s", data.zoo.source, name, time.perf_counter() - start
            )
        except (ZooprobeError, ValueError, RuntimeError, KeyError) as e:
            data.reps[name] = None
            data.rep_notes[name] = f"{type(e).__name__}: {e}"
            log.warning("encoder %s cannot read %s (%s): its cells are n/a", name, data.zoo.source, e)
    return data.reps[name]


# ------------------------------------------------------------------------------------------ scoring
def _distinct(series: pd.Series | None) -> int:
    return 0 if series is None else int(series.dropna().astype(str).nunique())


def _column(meta: pd.DataFrame, column: str) -> pd.Series | None:
    return meta[column] if column in meta.columns else None


def _split(meta: pd.DataFrame, split: str) -> np.ndarray:
    return np.flatnonzero((meta["split"] == split).to_numpy())


def _pattern_flags(*metas: pd.DataFrame) -> list[str]:
    """``has_*`` flags present in every frame with both values in each (comparable across methods)."""
    flags = [c for c in metas[0].columns if str(c).startswith("has_")]
    return [f for f in flags if all(_distinct(_column(m, f)) >= 2 for m in metas)]


def _spec(target: Target, columns: list[str], vocab: pd.DataFrame) -> TaskSpec:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_task_spec(target.task, vocab[columns], columns)


def score_target(
    target: Target,
    method: str,
    train: tuple[np.ndarray, pd.DataFrame],
    validation: tuple[np.ndarray, pd.DataFrame],
    test: tuple[np.ndarray, pd.DataFrame],
    flags: list[str],
) -> dict[str, Any]:
    """Fit `method` (gbm / linear / floor) on `train` (features, metadata), early-stopped on `validation`,
    scored on `test`: ``{"value": the target's metric or None, "metrics": every metric, "note": why n/a}``."""
    (x_tr, m_tr), (x_va, m_va), (x_te, m_te) = train, validation, test
    if target.column is None:
        columns = flags
        if not columns:
            return {"value": None, "note": "no has_* flag with both values on both sides"}
    else:
        columns = [target.column]
        for what, meta in (("train", m_tr), ("test", m_te)):
            if _distinct(_column(meta, target.column)) < 2:
                return {"value": None, "note": f"{target.column} missing or constant in the {what} split"}
    # the label vocabulary of both sides: an unseen held-out class is an error, not a dropped row
    vocab = pd.concat([m_tr.reindex(columns=columns), m_te.reindex(columns=columns)], ignore_index=True)
    spec = _spec(target, columns, vocab)
    metas = {"train": m_tr, "validation": m_va, "test": m_te}
    arrays = {s: target_arrays(spec, m.reindex(columns=columns)) for s, m in metas.items()}
    truth = {s: metric_space_targets(spec, a) for s, a in arrays.items()}
    x = {"train": x_tr, "validation": x_va, "test": x_te}
    kind = {"gbm": "gbm", "linear": "linear", "floor": "floor"}[method]
    if kind == "floor":
        x = {s: np.zeros((len(v), 1)) for s, v in x.items()}
    preds = _baseline_predictions(kind, spec, x, truth)
    metrics = evaluate_predictions(spec, arrays["test"], preds)
    value = metrics.get(target.metric, math.nan)
    return {
        "value": float(value) if isinstance(value, float | int) and math.isfinite(value) else None,
        "metrics": metrics,
        "n_train": len(m_tr),
        "n_test": len(m_te),
        **({"flags": columns} if target.column is None else {}),
        **({} if isinstance(value, float) and math.isfinite(value) else {"note": "metric undefined"}),
    }


def _method_fit(method: str) -> str:
    if method == "frozen-linear":
        return "linear"
    if method == "floor":
        return "floor"
    return "gbm"


def run_cell(
    fold: Fold,
    method: str,
    seen: ZooData,
    held: ZooData,
    targets: Sequence[Target],
    seen_rep: np.ndarray | None = None,
    held_rep: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every target of one (fold, method[, encoder]) cell (see the module docs for the methods)."""
    s_meta = seen.meta.iloc[fold.seen_index].reset_index(drop=True)
    h_meta = held.meta.iloc[fold.held_index].reset_index(drop=True)
    s_x, h_x = seen.stats[fold.seen_index], held.stats[fold.held_index]
    if method in ENCODER_METHODS:
        if seen_rep is None or held_rep is None:
            return {t.name: {"value": None, "note": "the encoder cannot read a side"} for t in targets}
        s_r, h_r = seen_rep[fold.seen_index], held_rep[fold.held_index]
        if method == "frozen-linear":
            s_x, h_x = s_r, h_r
        else:
            s_x, h_x = np.hstack([s_x, s_r]), np.hstack([h_x, h_r])
    h_split = {s: _split(h_meta, s) for s in ("train", "validation", "test")}
    test = (h_x[h_split["test"]], h_meta.iloc[h_split["test"]])
    if method in ZERO_SHOT:
        side_x, side_meta = s_x, s_meta
    else:
        side_x, side_meta = h_x, h_meta
    split = {s: _split(side_meta, s) for s in ("train", "validation")}
    train = (side_x[split["train"]], side_meta.iloc[split["train"]])
    validation = (side_x[split["validation"]], side_meta.iloc[split["validation"]])
    s_train = s_meta.iloc[_split(s_meta, "train")]
    flags = _pattern_flags(s_train, h_meta.iloc[h_split["train"]], test[1])
    out: dict[str, Any] = {}
    for target in targets:
        if len(train[1]) < 2 or len(test[1]) < 2:
            out[target.name] = {"value": None, "note": "fewer than 2 models in the train or test split"}
            continue
        try:
            out[target.name] = score_target(target, _method_fit(method), train, validation, test, flags)
        except (ZooprobeError, ValueError) as e:  # a target this pair of sides cannot score
            out[target.name] = {"value": None, "note": f"{type(e).__name__}: {e}"}
    return out


def transfer(
    corpus: str,
    foreign: Sequence[str] = (),
    encoders: Sequence[str] = DEFAULT_ENCODERS,
    groups: Sequence[str] = GROUPS,
    output: str | Path = "bench/transfer",
    *,
    methods: Sequence[str] = METHODS,
    targets: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the transfer benchmark (module docs) and write ``OUTPUT/transfer.md`` / ``transfer.json``;
    returns the json document. Encoders that cannot be loaded are reported and skipped."""
    output = Path(output)
    chosen = _chosen_targets(methods, targets)
    state = check_output(output, TRANSFER_OUTPUT, overwrite=overwrite)
    corpus_zoo = load_zoo(corpus)
    foreign_zoos = {name: load_zoo(name) for name in foreign}
    if "foreign" in groups and not foreign_zoos and list(groups) != ["foreign"]:
        log.info("no foreign folds: no --foreign zoo given")
    folds = build_folds(corpus_zoo, corpus, groups, foreign_zoos)
    if not folds:
        raise InvalidInputError(
            f"no folds: the corpus {corpus!r} varies in none of the groups {list(groups)}"
        )
    inputs = {"corpus": [corpus, corpus_zoo.fingerprint()]} | {
        f"foreign:{k}": [k, z.fingerprint()] for k, z in foreign_zoos.items()
    }
    doc: dict[str, Any] = {"inputs": inputs, "cells": _finished_cells(output, state, overwrite, inputs)}
    claim_output(output, TRANSFER_OUTPUT, overwrite=overwrite)
    doc["folds"] = {f.name: f.describe() for f in folds}
    doc["targets"] = {t.name: {"column": t.column, "metric": t.metric, "label": t.label} for t in chosen}
    doc["methods"] = list(methods)
    loaded = _load_encoders(doc, encoders, methods, progress)
    zoos = {**foreign_zoos, corpus: corpus_zoo}  # the corpus when a foreign zoo has its name
    data = _run_cells(doc, output, folds, methods, loaded, chosen, zoos, progress)
    for source, d in data.items():
        for enc, note in d.rep_notes.items():
            doc["encoders"].setdefault(enc, {}).setdefault("cannot_read", {})[source] = note
    _write(doc, output)
    return doc


def _chosen_targets(methods: Sequence[str], targets: Sequence[str] | None) -> list[Target]:
    """The `TARGETS` named by `targets` (all when None), after checking `methods` and `targets`."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ConfigError(f"methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    chosen = [t for t in TARGETS if targets is None or t.name in targets]
    if targets is not None and len(chosen) != len(set(targets)):
        raise ConfigError(f"targets: choose from {', '.join(t.name for t in TARGETS)}")
    return chosen


def _finished_cells(output: Path, state: str, overwrite: bool, inputs: dict[str, Any]) -> dict[str, Any]:
    """The cells a previous run on the same zoos finished in `output` (resumed), else none."""
    old_path = output / "transfer.json"
    if state != "own" or overwrite or not old_path.exists():
        return {}
    old = json.loads(old_path.read_text())
    if old.get("inputs") != inputs:
        raise InvalidInputError(
            f"{old_path}: finished cells were computed on other zoos ({old.get('inputs')}); choose a new "
            "--output, or --overwrite to start over"
        )
    cells: dict[str, Any] = old.get("cells", {})
    log.info("resuming: %d finished cell(s) in %s", len(cells), old_path)
    return cells


def _load_encoders(
    doc: dict[str, Any], encoders: Sequence[str], methods: Sequence[str], progress: bool
) -> dict[str, Any]:
    """The encoders the methods need, by name; each one's loading noted in ``doc["encoders"]``."""
    encoder_info: dict[str, dict[str, Any]] = {}
    loaded: dict[str, Any] = {}
    if ENCODER_METHODS & set(methods):
        for name in encoders:
            try:
                loaded[name] = load_encoder(name, progress=progress)
                encoder_info[name] = {"loaded": True}
            except (ZooprobeError, OSError, ValueError) as e:
                encoder_info[name] = {"loaded": False, "note": f"{type(e).__name__}: {e}"}
                log.warning("encoder %s is not loadable (%s): its rows are left out", name, e)
    doc["encoders"] = encoder_info
    return loaded


def _run_cells(
    doc: dict[str, Any],
    output: Path,
    folds: list[Fold],
    methods: Sequence[str],
    loaded: dict[str, Any],
    chosen: list[Target],
    zoos: dict[str, Zoo],
    progress: bool,
) -> dict[str, ZooData]:
    """Run every cell (fold x method x encoder) not in ``doc["cells"]`` yet, writing the document after
    each; the zoo data read (by source)."""
    cache = output / "cache"
    data: dict[str, ZooData] = {}

    def zoo_data(source: str) -> ZooData:
        if source not in data:
            zoo = zoos[source].final()
            data[source] = ZooData(zoo, zoo.metadata().reset_index(drop=True), _stats(zoo, cache, progress))
        return data[source]

    plan = [
        (fold, method, enc)
        for fold in folds
        for method in methods
        for enc in (list(loaded) if method in ENCODER_METHODS else [NO_ENCODER])
    ]
    todo = [c for c in plan if cell_key(c[0].name, c[1], c[2]) not in doc["cells"]]
    log.info("transfer: %d folds, %d cells, %d to run", len(folds), len(plan), len(todo))
    _write(doc, output)
    for i, (fold, method, enc) in enumerate(todo, 1):
        start = time.perf_counter()
        seen, held = zoo_data(fold.seen_source), zoo_data(fold.held_source)
        reps: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        if enc != NO_ENCODER:
            reps = (
                _representations(seen, enc, loaded[enc], progress),
                _representations(held, enc, loaded[enc], progress),
            )
        result = run_cell(fold, method, seen, held, chosen, *reps)
        seconds = time.perf_counter() - start
        doc["cells"][cell_key(fold.name, method, enc)] = {
            "fold": fold.name,
            "group": fold.group,
            "method": method,
            "encoder": enc,
            "seconds": seconds,
            "targets": result,
        }
        shown = ", ".join(
            f"{t}={r['value']:.3f}" if r.get("value") is not None else f"{t}=n/a" for t, r in result.items()
        )
        log.info("[%d/%d] %s | %s | %s (%.1f s): %s", i, len(todo), fold.name, method, enc, seconds, shown)
        _write(doc, output)
    return data


def _write(doc: dict[str, Any], output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output / "transfer.json", json_safe(doc))
    atomic_write_text(output / "transfer.md", markdown(doc))


__all__ = [
    "GROUPS",
    "METHODS",
    "TARGETS",
    "Fold",
    "FoldLeakError",
    "build_folds",
    "check_fold",
    "markdown",
    "run_cell",
    "tables",
    "transfer",
]
