"""The checks of a head run's data before anything is encoded (zooprobe.training.data_loader): validation
and test models the encoder was pretrained on, runs whose checkpoints are in several splits, and infinite
targets."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from zooprobe.encoder.base import WeightSpaceEncoder
from zooprobe.errors import InvalidInputError
from zooprobe.training.config import TrainConfig
from zooprobe.zoo.store import describe_split_leaks, split_leaks


def find_overlap(encoder: WeightSpaceEncoder, zoo: Any, eval_zoo: Any) -> dict[str, Any]:
    """Which validation/test models the encoder was pretrained on (see the module docs)."""

    prov = encoder.provenance
    if not prov:
        return {"checked": False, "reason": "the encoder records no pretraining provenance", "model_ids": []}
    hashes = set(prov.get("model_hashes", []))
    ids = set(prov.get("model_ids", []))
    same_zoo = prov.get("zoo_fingerprint") == zoo.fingerprint()
    meta = eval_zoo.metadata()
    found = []
    for i in range(len(eval_zoo)):
        mid = str(meta["model_id"].iloc[i])
        if (hashes and eval_zoo.content_hash(i) in hashes) or (same_zoo and mid in ids):
            found.append(mid)
    return {
        "checked": True,
        "same_zoo": same_zoo,
        "by_content_hash": bool(hashes),
        "model_ids": sorted(set(found)),
        "n_eval_models": len(eval_zoo),
    }


def check_split_leaks(zoo: Any, source: str, allow: bool) -> tuple[dict[str, Any], str]:
    """Models of `zoo` whose exact weights are in more than one split (`zoo.store.split_leaks`).

    Refused (`InvalidInputError` naming a few model ids) unless `allow`; returns the record for
    metrics.json and the warning given when allowed ("" when there is no leak).
    """

    leaks = split_leaks(zoo)
    record = {"checked": True, "leaks": [leak.to_dict() for leak in leaks], "allowed": bool(allow)}
    if not leaks:
        return record, ""
    n_models = sum(len(leak.model_ids) for leak in leaks)
    msg = (
        f"zoo {source!r}: {len(leaks)} set(s) of models with identical weights are in more than one split "
        f"({n_models} models; {describe_split_leaks(leaks)}): a copy of a training model in validation or "
        "test is scored on what the head was trained on, which inflates its metrics"
    )
    if not allow:
        raise InvalidInputError(
            msg + "; remove the copies from the zoo (or put each in one split and import it again), or pass "
            "allow_split_leaks=True (--allow_split_leaks true) to go on anyway (the run is then marked)"
        )
    return record, msg + "; allow_split_leaks=True, so the run is marked"


def _check_finite_targets(spec: Any, meta: pd.DataFrame, source: Any, split: str) -> None:
    """An infinite numeric target (a zoo written by hand or another tool) is an error naming the model; a
    NaN is a missing value, as everywhere in zooprobe. Without this, training stops at its first batch with
    an infinite loss that blames the learning rate."""
    for t in spec.targets:
        if t.kind in ("categorical", "binary") or t.name not in meta.columns:
            continue
        raw = pd.to_numeric(meta[t.name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.flatnonzero(np.isinf(raw))
        if len(bad):
            ids = meta["model_id"].astype(str) if "model_id" in meta.columns else pd.Series(range(len(meta)))
            raise InvalidInputError(
                f"zoo {source!r}: target {t.name!r} is infinite ({raw[bad[0]]}) for {len(bad)} model(s) of "
                f"the {split} split (e.g. {ids.iloc[int(bad[0])]!r}); a target must be a finite number or "
                "missing: fix the zoo's metadata (or import it again from its source)"
            )


def _warn(messages: list[str], message: str, stacklevel: int = 3) -> None:
    messages.append(message)
    warnings.warn(message, stacklevel=stacklevel)


def _check_overlap(
    cfg: TrainConfig, encoder: WeightSpaceEncoder, zoo: Any, notes: list[str]
) -> dict[str, Any]:
    """Validation/test models the encoder was pretrained on (refused unless ``allow_overlap``), and a
    warning when a supervised encoder saw the train models; the overlap record of the run."""
    eval_zoo = zoo.filter(split=["validation", "test"])
    overlap = find_overlap(encoder, zoo, eval_zoo)
    if overlap.get("model_ids"):
        n = len(overlap["model_ids"])
        msg = (
            f"{n} of {overlap['n_eval_models']} validation/test models were used to pretrain the encoder "
            f"{cfg.encoder!r} (e.g. {overlap['model_ids'][:3]}): their metrics would be inflated"
        )
        if not cfg.allow_overlap:
            raise InvalidInputError(
                msg + "; use a zoo or encoder without overlap, or pass allow_overlap=True "
                "(the run is then marked as overlapping)"
            )
        _warn(notes, msg + "; allow_overlap=True, so the run is marked", 4)
    elif not overlap.get("checked"):
        _warn(notes, f"overlap not checked: {overlap.get('reason')}", 4)
    overlap["allowed"] = bool(cfg.allow_overlap)
    if str(encoder.provenance.get("objective", "")).startswith("supervised"):
        seen = find_overlap(encoder, zoo, zoo.filter(split="train"))
        if seen.get("model_ids"):
            _warn(
                notes,
                f"the encoder {cfg.encoder!r} was pretrained supervised on {len(seen['model_ids'])} of the "
                f"{seen['n_eval_models']} train models: its predictions are in-sample there, so heads learn "
                "to trust them more than they deserve (measured on the bench zoo: optimizer accuracy 0.48 "
                "instead of 0.59 on validation); pretrain the encoder on a disjoint zoo",
                4,
            )
    return overlap
