"""Predicting networks' properties with a trained head: `predict` (a pandas DataFrame) and
``zooprobe predict --head RUN FILE ...`` (`predict_files` and `format_predictions`).

`predict(head, models)` takes state dicts or checkpoint files and returns one labelled row per model
(class names, probabilities, natural units: `zooprobe.heads.targets.TaskSpec.label`); `predict_files`
gives JSON-ready dicts per file with the notes of reading it, which `format_predictions` prints.

Checkpoints are read by `zooprobe.core.checkpoints.read_checkpoint`, the reader the zoo importers use too (see
its docs for the rules: safetensors and ``torch.load(weights_only=True)`` only, containers unwrapped, tensor
order, resource limits), so a file gives the same state dict here as in an imported zoo. On top of it,
prediction converts float64 tensors to float32 (the encoder reads float32 tokens; prediction needs no exact
round trip), which is noted with the results like the reader's own notes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from zooprobe.api import load_head
from zooprobe.core.checkpoints import (
    CHECKPOINT_SUFFIXES,
    CONTAINER_KEYS,
    DEFAULT_MAX_PARAMS,
    format_bytes,
    is_out_of_memory,
    load_checkpoint,
    read_checkpoint,
)
from zooprobe.errors import InvalidInputError, ZooprobeError
from zooprobe.heads.head_loader import LoadedHead


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


# ------------------------------------------------------------------------------------------ predicting
def predict(
    head: LoadedHead | str | Path,
    models: Mapping[str, Any] | str | Path | Iterable[Mapping[str, Any] | str | Path],
    *,
    max_params: int = DEFAULT_MAX_PARAMS,
) -> pd.DataFrame:
    """Predicted properties of each model: one row per model (indexed by file path, or ``model N`` for
    state dicts), labelled with class names, probabilities and natural units (`TaskSpec.label`).

    `head` is a loaded head or any `zooprobe.load_head` source; `models` one state dict or checkpoint file,
    or several. Files are read with the same rules and limits as ``zooprobe predict``.
    """
    if not isinstance(head, LoadedHead):
        head = load_head(head)
    items = [models] if isinstance(models, Mapping | str | Path) else list(models)
    index, rows = [], []
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            state_dict = {k: v.float() if v.dtype == torch.float64 else v for k, v in item.items()}
            index.append(f"model {i}")
        else:
            state_dict, _ = _load(Path(item), max_params)
            index.append(str(item))
        rows.append(_predict_one(head, state_dict, index[-1]))
    preds = {t.name: np.concatenate([r[t.name] for r in rows]) for t in head.spec.targets}
    return head.spec.label(preds, index)


def _predict_one(
    head: LoadedHead, state_dict: Mapping[str, torch.Tensor], where: str
) -> dict[str, np.ndarray]:
    """`LoadedHead.predict` of one model, with errors that name it (memory, unreadable networks)."""
    values = sum(v.numel() for v in state_dict.values())
    try:
        return head.predict([state_dict])
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


def predict_files(
    head: LoadedHead, files: Sequence[str | Path], *, max_params: int = DEFAULT_MAX_PARAMS
) -> list[dict[str, Any]]:
    """Predictions of `head` for each checkpoint file, one dict per file (JSON-ready)::

        {"file": str, "notes": [str, ...], "targets": {name: {...}}}

    Per target: ``binary``: ``probability`` (and ``predicted``: probability >= 0.5); ``categorical``:
    ``predicted`` (the class), ``probability`` (its probability) and ``probabilities`` (class -> p);
    ``continuous``: ``predicted`` in metric space (log10 for log targets, with ``log10: true`` and
    ``value`` = 10**predicted). Files are read and encoded one at a time (bounded memory); an unreadable
    file or a network the encoder cannot represent raises `InvalidInputError` naming the file (and the
    tensor, when one is to blame). A file holding more than ``max_params`` values is refused before its
    values are read (`zooprobe.core.checkpoints`).
    """
    results = []
    for file in files:
        path = Path(file)
        state_dict, notes = _load(path, max_params)
        preds = _predict_one(head, state_dict, str(path))
        del state_dict
        results.append({"file": str(path), "notes": notes, "targets": _per_target(head, preds)})
    return results


def _per_target(head: LoadedHead, preds: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    targets: dict[str, dict[str, Any]] = {}
    for t in head.spec.targets:
        value = np.asarray(preds[t.name])[0]
        if t.kind == "binary":
            p = float(value)
            targets[t.name] = {"kind": "binary", "probability": p, "predicted": p >= 0.5}
        elif t.kind == "categorical":
            probs = [float(x) for x in value]
            best = int(np.argmax(probs))
            targets[t.name] = {
                "kind": "categorical",
                "predicted": t.classes[best],
                "probability": probs[best],
                "probabilities": dict(zip(t.classes, probs, strict=True)),
            }
        else:
            x = float(value)
            entry: dict[str, Any] = {"kind": "continuous", "log10": t.log10, "predicted": x}
            if t.log10:
                entry["value"] = 10.0**x
            targets[t.name] = entry
    return targets


# ------------------------------------------------------------------------------------------ printing
def _number(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}" if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4) else f"{x:.4f}"


def _describe(entry: Mapping[str, Any]) -> str:
    kind = entry["kind"]
    if kind == "binary":
        return f"{'yes' if entry['predicted'] else 'no'}  (p = {entry['probability']:.3f})"
    if kind == "categorical":
        others = sorted(entry["probabilities"].items(), key=lambda kv: -kv[1])
        rest = ", ".join(f"{c} {p:.2f}" for c, p in others if c != entry["predicted"])
        return f"{entry['predicted']}  (p = {entry['probability']:.3f}" + (f"; {rest})" if rest else ")")
    if entry.get("log10"):
        return f"{_number(entry['value'])}  (log10 = {entry['predicted']:.3f})"
    return _number(entry["predicted"])


def format_predictions(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Terminal lines for `predict_files` results: one table (target, prediction) per file."""
    lines: list[str] = []
    for result in results:
        if lines:
            lines.append("")
        lines.append(str(result["file"]))
        targets = result["targets"]
        width = max([len("target"), *(len(n) for n in targets)])
        lines.append(f"  {'target':<{width}}  prediction")
        lines.append(f"  {'-' * width}  {'-' * 10}")
        for name, entry in targets.items():
            lines.append(f"  {name:<{width}}  {_describe(entry)}")
        for note in result.get("notes", []):
            lines.append(f"  note: {note}")
    return lines


__all__ = [
    "CHECKPOINT_SUFFIXES",
    "CONTAINER_KEYS",
    "format_predictions",
    "load_checkpoint",
    "predict",
    "predict_files",
]
