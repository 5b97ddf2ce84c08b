"""Reading checkpoint files and assessing networks under heads: one result per network and head (its
predictions, intervals, reliability and applicability domain), in chunks read in a thread pool.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zooprobe.core.guards import (
    DEFAULT_MAX_PARAMS,
    format_bytes,
    is_out_of_memory,
    read_checkpoint,
)
from zooprobe.errors import InvalidInputError, ZooprobeError
from zooprobe.heads.head_loader import (
    HeadOutputs,
    LoadedHead,
    NonFiniteError,
    run_heads,
)
from zooprobe.heads.targets import TargetSpec
from zooprobe.tokens.statistics import featurize

if TYPE_CHECKING:
    pass

NOT_PREDICTABLE = "not predictable from this zoo"
NO_DOMAIN = (
    "this head has no trust record (trust.json: saved by an older zooprobe, or removed), so it has no "
    "applicability domain: whether it applies, its intervals and its reliability are unknown, and targets it "
    "would withhold as not predictable are shown; restore the file or train the head again"
)


# ------------------------------------------------------------------------------------------ loading
def _load(path: Path, max_params: int = DEFAULT_MAX_PARAMS) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`read_checkpoint` with float64 tensors converted to float32; the state dict and the notes."""
    checkpoint = read_checkpoint(path, max_params=max_params)
    state_dict, notes = checkpoint.state_dict, checkpoint.notes
    doubles = [k for k, v in state_dict.items() if v.dtype == torch.float64]
    if doubles:
        for k in doubles:
            state_dict[k] = state_dict[k].float()
        notes.append(f"{len(doubles)} float64 tensor(s) converted to float32")
    return state_dict, notes


def _float32(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v.float() if isinstance(v, torch.Tensor) and v.dtype == torch.float64 else v
        for k, v in state_dict.items()
    }


def _shared_statistics(heads: Sequence[LoadedHead], state_dict: Mapping[str, Any]) -> np.ndarray | None:
    """The weight statistics of a network's canonical form (what `LoadedHead.run` reads), computed once when
    several heads read it (None for one)."""
    reads = {h.canonical_version() for h in heads}
    return featurize([heads[0].reads()(state_dict)]) if len(heads) > 1 and len(reads) == 1 else None


# ------------------------------------------------------------------------------------------ one network
def _run_one(
    head: LoadedHead, state_dict: Mapping[str, torch.Tensor], where: str, statistics: np.ndarray | None
) -> HeadOutputs:
    """`LoadedHead.run` of one model, with errors that name it (memory, unreadable networks, NaN)."""
    values = sum(v.numel() for v in state_dict.values() if isinstance(v, torch.Tensor))
    try:
        return head.run([state_dict], statistics=statistics)
    except NonFiniteError as e:
        raise NonFiniteError(f"{where}: {str(e).removeprefix('state dict 0: ')}") from e
    except ZooprobeError as e:
        raise InvalidInputError(
            f"{where}: this network cannot be read by the head's encoder: {e} (the tokenization is fixed by "
            "the encoder the head was trained with)"
        ) from e
    except (MemoryError, RuntimeError, ValueError, IndexError) as e:
        if is_out_of_memory(e):
            raise InvalidInputError(
                f"{where}: out of memory while encoding the network ({values:,} values, "
                f"{format_bytes(4 * values)} as float32 tokens before the encoder's own memory); free memory "
                "or predict on a machine with more"
            ) from e
        raise InvalidInputError(
            f"{where}: this network cannot be encoded ({type(e).__name__}: {str(e)[:300]})"
        ) from e


def _domains(head: LoadedHead, outputs: HeadOutputs) -> list[dict[str, Any]]:
    """The applicability-domain check of each network of `outputs` (one batched call)."""
    domain = head.trust.domain if head.trust is not None else None
    if domain is None:
        return [{"in_domain": None, "reasons": [NO_DOMAIN]} for _ in outputs.architectures]
    features = outputs.domain_features()
    return [  # one network at a time: its distances are then exactly those it gets alone (BLAS rounding)
        domain.check([arch], {n: f[i : i + 1] for n, f in features.items() if f is not None})[0].to_dict()
        for i, arch in enumerate(outputs.architectures)
    ]


def _value(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _interval(head: LoadedHead, t: TargetSpec, value: float, level: float) -> dict[str, Any] | None:
    calibration = head.trust.calibration if head.trust is not None else None
    if calibration is None or t.name not in calibration.targets:
        return None
    low, high = calibration.intervals(head.spec, {t.name: np.array([value])}, level)[t.name]
    entry: dict[str, Any] = {"level": level, "low": _value(low[0]), "high": _value(high[0])}
    if entry["low"] is None:
        entry["note"] = "unbounded: too few validation models for this level"
    elif t.log10:
        entry["value_low"], entry["value_high"] = 10.0 ** float(low[0]), 10.0 ** float(high[0])
    return entry


def _target_entry(
    head: LoadedHead, t: TargetSpec, value: np.ndarray, level: float, show_unpredictable: bool
) -> dict[str, Any]:
    """The JSON-ready prediction of one target (see `predict_files`)."""
    entry: dict[str, Any]
    if t.kind == "binary":
        p = float(value)
        entry = {"kind": "binary", "probability": p, "predicted": p >= 0.5}
    elif t.kind == "categorical":
        probs = [float(x) for x in value]
        best = int(np.argmax(probs))
        entry = {
            "kind": "categorical",
            "predicted": t.classes[best],
            "probability": probs[best],
            "probabilities": dict(zip(t.classes, probs, strict=True)),
        }
    else:
        x = float(value)
        entry = {"kind": "continuous", "log10": t.log10, "predicted": x}
        if t.log10:
            entry["value"] = 10.0**x
        interval = _interval(head, t, x, level)
        if interval is not None:
            entry["interval"] = interval
    rel = head.trust.reliability.get(t.name) if head.trust is not None else None
    entry["reliability"] = rel.to_record() if rel is not None else None
    entry["predictable"] = rel.predictable if rel is not None else None
    if rel is not None and rel.predictable is False and not show_unpredictable:
        kept = {"kind": entry["kind"], "predicted": None, "note": NOT_PREDICTABLE}
        if t.kind == "continuous":
            kept["log10"] = t.log10
        entry = {**kept, "reliability": entry["reliability"], "predictable": False}
    return entry


def _assess(
    head: LoadedHead,
    state_dict: Mapping[str, torch.Tensor],
    where: str,
    level: float,
    show_unpredictable: bool,
    statistics: np.ndarray | None = None,
) -> tuple[dict[str, Any], HeadOutputs]:
    """(JSON-ready result, raw outputs) of one network under one head (`statistics`: its weight
    statistics, when computed already)."""
    outputs = _run_one(head, state_dict, where, statistics)
    return _results(head, outputs, level, show_unpredictable)[0], outputs


def _results(
    head: LoadedHead, outputs: HeadOutputs, level: float, show_unpredictable: bool
) -> list[dict[str, Any]]:
    """The JSON-ready result of each network of `outputs` under `head`."""
    preds = {t.name: np.asarray(outputs.predictions[t.name]) for t in head.spec.targets}
    return [
        {
            "in_domain": domain["in_domain"],
            "domain": domain,
            "targets": {
                t.name: _target_entry(head, t, preds[t.name][i], level, show_unpredictable)
                for t in head.spec.targets
            },
        }
        for i, domain in enumerate(_domains(head, outputs))
    ]


CHUNK = 64
"""Networks read, encoded and predicted together (bounded memory: one chunk of state dicts at a time)."""
READ_THREADS = 4
"""Threads reading checkpoint files (file reads and safetensors parsing release the GIL)."""


def _assess_chunk(
    heads: Sequence[LoadedHead],
    state_dicts: Sequence[Mapping[str, torch.Tensor]],
    names: Sequence[str],
    level: float,
    show_unpredictable: bool,
) -> list[tuple[list[dict[str, Any]], list[HeadOutputs]]]:
    """Per head, (results, outputs) of a chunk of networks: every head in one `run_heads` pass (each network
    canonicalized and featurized once, encoded once per shared frozen encoder). If the batch fails, the
    networks are run one at a time, so the error names the one to blame (`_run_one`)."""
    try:  # independent: a file's predictions never depend on the files read with it
        outs = run_heads(heads, state_dicts, batch_size=max(len(state_dicts), 1), independent=True)
    except (ZooprobeError, MemoryError, RuntimeError, ValueError, IndexError):
        outs = None
    if outs is not None:
        return [(_results(h, o, level, show_unpredictable), [o]) for h, o in zip(heads, outs, strict=True)]
    per_head: list[tuple[list[dict[str, Any]], list[HeadOutputs]]] = [([], []) for _ in heads]
    for state_dict, name in zip(state_dicts, names, strict=True):
        stats = _shared_statistics(heads, state_dict)
        for k, h in enumerate(heads):
            result, out = _assess(h, state_dict, name, level, show_unpredictable, stats)
            per_head[k][0].append(result)
            per_head[k][1].append(out)
    return per_head


def _read_chunks(
    items: Sequence[Any], max_params: int
) -> Iterator[tuple[list[dict[str, Any]], list[list[str]]]]:
    """(state dicts, notes) of `items` (state dicts or checkpoint paths), `CHUNK` at a time, files read in a
    thread pool that reads the next chunk while the caller predicts on this one."""

    def read(item: Any) -> tuple[dict[str, Any], list[str]]:
        return (_float32(item), []) if isinstance(item, Mapping) else _load(Path(item), max_params)

    chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    if sum(not isinstance(i, Mapping) for i in items) <= 1:  # nothing to overlap
        for chunk in chunks:
            loaded = [read(item) for item in chunk]
            yield [sd for sd, _ in loaded], [n for _, n in loaded]
        return
    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="zooprobe-read") as pool:
        ahead = [pool.submit(read, item) for item in chunks[0]]
        for i in range(len(chunks)):
            current = ahead
            ahead = [pool.submit(read, item) for item in chunks[i + 1]] if i + 1 < len(chunks) else []
            try:
                loaded = [f.result() for f in current]
            except BaseException:
                for f in ahead:
                    f.cancel()
                raise
            yield [sd for sd, _ in loaded], [n for _, n in loaded]
