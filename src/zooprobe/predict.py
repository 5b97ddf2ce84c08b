"""Predicting a network's properties from its checkpoint file: ``zooprobe predict --head RUN FILE ...``.

`load_checkpoint` turns a file into a flat ``name -> tensor`` state dict, `predict_files` runs a loaded
head (`zooprobe.heads.io.load_head`) on each file, and `format_predictions` prints the results.

Reading checkpoints (untrusted data: nothing is ever unpickled beyond plain tensors and containers):

- ``.safetensors``: read with safetensors. The format does not keep the order of the tensors, and the
  order decides the layer positions the encoder sees. A file that records it (zooprobe's convention, a
  ``metadata={"order": json.dumps(list(state_dict))}`` entry naming exactly the file's tensors) is read in
  that order; otherwise tensors are grouped by module, modules in natural name order (``layers.2`` before
  ``layers.10``), and inside a module ``weight, bias, running_mean, running_var, num_batches_tracked``
  first, the usual PyTorch order. That can differ from the model's definition order (``conv1`` vs
  ``bn1``), so the result carries a note saying so.
- ``.pt``, ``.pth``, ``.bin``, ``.ckpt``: ``torch.load(path, map_location="cpu", weights_only=True)`` and
  nothing else. A file that needs more (a pickled ``nn.Module``, a custom class, a Lightning checkpoint
  whose hyperparameters hold objects) is refused for safety, with the way to convert it.

What the file may hold:

- a plain state dict (``model.state_dict()``): every entry must be a tensor; a non-tensor entry is an error
  naming it (it is not a state dict zooprobe can read, and guessing would change the layers);
- a training checkpoint container: a dict that is not itself a state dict and whose ``state_dict``,
  ``model_state_dict``, ``model`` or ``module`` entry (first found, in that order) is a dict. That entry is
  the state dict; the container's other entries (optimizer, epoch, ...) are ignored, and non-tensor entries
  *inside* the selected state dict (e.g. ``None`` extra states) are dropped and listed in the result's
  ``notes``. Only containers get that leniency.

An empty result, a non-dict, a non-string key, a sparse or quantized tensor is an error naming the file.
float64 tensors are converted to float32 (the encoder reads float32 tokens; prediction needs no exact round
trip), which is noted too.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zooprobe.errors import InvalidInputError, ZooprobeError

if TYPE_CHECKING:
    from zooprobe.heads.io import LoadedHead

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES
"""File types `load_checkpoint` reads (torch ones only with ``weights_only=True``)."""

CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module")
"""Entries of a training checkpoint that hold the model's state dict, in the order they are looked for."""

_LEAF_ORDER = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3, "num_batches_tracked": 4}

_CONVERT_HINT = (
    "To convert it, load it once in an environment you trust and save only the weights: "
    "`from safetensors.torch import save_file; save_file(model.state_dict(), 'model.safetensors', "
    "metadata={'order': json.dumps(list(model.state_dict()))})` (or "
    "`torch.save(model.state_dict(), 'model.pt')`)."
)


# ------------------------------------------------------------------------------------------ loading
def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` state dict from a checkpoint file (see the module docs for the rules)."""
    return _load(Path(path))[0]


def _load(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`load_checkpoint` plus notes on what was changed or assumed while reading (shown with predictions)."""
    if not path.exists():
        raise InvalidInputError(f"{path}: checkpoint file not found")
    if path.is_dir():
        raise InvalidInputError(
            f"{path}: is a folder; pass the checkpoint file(s) in it ({', '.join(CHECKPOINT_SUFFIXES)})"
        )
    suffix = path.suffix.lower()
    notes: list[str] = []
    if suffix in SAFETENSORS_SUFFIXES:
        state_dict = _read_safetensors(path, notes)
    elif suffix in TORCH_SUFFIXES:
        state_dict = _state_dict_of(_torch_load(path), path, notes)
    else:
        raise InvalidInputError(
            f"{path}: unsupported checkpoint type {path.suffix!r}; expected one of "
            f"{', '.join(CHECKPOINT_SUFFIXES)}"
        )
    doubles = [k for k, v in state_dict.items() if v.dtype == torch.float64]
    if doubles:
        for k in doubles:
            state_dict[k] = state_dict[k].float()
        notes.append(f"{len(doubles)} float64 tensor(s) converted to float32")
    return state_dict, notes


def _read_safetensors(path: Path, notes: list[str]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types (and OSError)
        raise InvalidInputError(f"{path}: not a valid safetensors file, corrupt or truncated? ({e})") from e
    order = _recorded_order(metadata, tensors)
    if order is None:
        order = sorted(tensors, key=_canonical_key)
        if len({name.rpartition(".")[0] for name in tensors}) > 1:
            notes.append(
                "safetensors keeps no tensor order and this file records none: modules were ordered by name, "
                "which may differ from the model's layer order; save with "
                "metadata={'order': json.dumps(list(state_dict))} for exact positions"
            )
    return _check_state_dict({k: tensors[k] for k in order}, path, lenient=False, notes=notes)


def _recorded_order(metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor]) -> list[str] | None:
    """The ``order`` metadata entry, if it names exactly the file's tensors (else it is not trusted)."""
    try:
        order = json.loads(metadata["order"]) if "order" in metadata else None
    except (TypeError, ValueError):
        return None
    if isinstance(order, list) and len(order) == len(tensors) and set(order) == set(tensors):
        return [str(k) for k in order]
    return None


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p)


def _canonical_key(name: str) -> tuple[Any, ...]:
    prefix, _, leaf = name.rpartition(".")
    return (_natural(prefix), _LEAF_ORDER.get(leaf, len(_LEAF_ORDER)), _natural(leaf))


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for unreadable or refused files
        message = str(e)
        weights_only = isinstance(e, pickle.UnpicklingError) or "weights only" in message.lower()
        if weights_only and re.search(r"\bglobal\b", message, re.IGNORECASE):
            raise InvalidInputError(_refusal(path, message)) from e  # a Python object it would construct
        if weights_only:
            detail = next(
                (ln.strip() for ln in message.splitlines()[1:] if ln.strip().startswith("Unsupported")), ""
            )
            raise InvalidInputError(
                f"{path}: unreadable checkpoint: corrupt, not a torch file, or pickled with features that "
                "torch.load(weights_only=True) does not allow"
                + (f" ({detail[:200]})" if detail else "")
                + "; for safety it is not loaded any other way. "
                + _CONVERT_HINT
            ) from e
        first = message.strip().splitlines()[0] if message.strip() else ""
        raise InvalidInputError(
            f"{path}: unreadable checkpoint, corrupt or not a torch file ({type(e).__name__}: {first[:300]})"
        ) from e


def _refusal(path: Path, message: str) -> str:
    """Why a torch file was refused, naming the offending object when torch says which it was."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in message.splitlines()]
    detail = next((ln for ln in lines if "unsupported global" in ln.lower()), "")
    detail = detail.split(" Please use")[0].split(" was not an allowed global")[0][:300].rstrip(".")
    return (
        f"{path}: refused for safety: loading it needs unpickling Python objects other than tensors and "
        "plain containers, which can run arbitrary code, so zooprobe reads torch checkpoints only with "
        "torch.load(weights_only=True)" + (f" ({detail})" if detail else "") + ". " + _CONVERT_HINT
    )


def _state_dict_of(obj: Any, path: Path, notes: list[str]) -> dict[str, torch.Tensor]:
    """Unwrap a training checkpoint container (see the module docs) and check the state dict."""
    if not isinstance(obj, Mapping):
        raise InvalidInputError(
            f"{path}: holds a {type(obj).__name__}, not a state dict (a dict of tensors). " + _CONVERT_HINT
        )
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _check_state_dict(obj, path, lenient=False, notes=notes)
    for key in CONTAINER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            notes.append(f"training checkpoint: read its {key!r} entry")
            return _check_state_dict(inner, path, lenient=True, notes=notes, where=f"[{key!r}]")
    return _check_state_dict(obj, path, lenient=False, notes=notes)


def _check_state_dict(
    obj: Mapping[Any, Any], path: Path, *, lenient: bool, notes: list[str], where: str = ""
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"{path}{where}: key {key!r} is not a string; expected a flat state dict")
        if not isinstance(value, torch.Tensor):
            if lenient:
                dropped.append(key)
                continue
            raise InvalidInputError(
                f"{path}{where}: entry {key!r} is a {type(value).__name__}, not a tensor: expected a flat "
                "state dict (name -> tensor) or a training checkpoint with a "
                f"{' / '.join(repr(k) for k in CONTAINER_KEYS)} entry"
            )
        if value.layout != torch.strided or value.is_quantized:
            raise InvalidInputError(
                f"{path}{where}: tensor {key!r} is sparse or quantized; only dense tensors are supported"
            )
        out[key] = value.detach()
    if dropped:
        shown = ", ".join(repr(k) for k in dropped[:5]) + (", ..." if len(dropped) > 5 else "")
        notes.append(f"dropped {len(dropped)} non-tensor entr{'y' if len(dropped) == 1 else 'ies'}: {shown}")
    if not out:
        raise InvalidInputError(f"{path}{where}: empty state dict (no tensors)")
    return out


# ------------------------------------------------------------------------------------------ predicting
@torch.no_grad()
def predict_files(head: LoadedHead, files: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Predictions of `head` for each checkpoint file, one dict per file (JSON-ready)::

        {"file": str, "notes": [str, ...], "targets": {name: {...}}}

    Per target: ``binary``: ``probability`` (and ``predicted``: probability >= 0.5); ``categorical``:
    ``predicted`` (the class), ``probability`` (its probability) and ``probabilities`` (class -> p);
    ``continuous``: ``predicted`` in metric space (log10 for log targets, with ``log10: true`` and
    ``value`` = 10**predicted). Files are read and encoded one at a time (bounded memory); an unreadable
    file or a network the encoder cannot represent raises `InvalidInputError` naming the file (and the
    tensor, when one is to blame).
    """
    head.model.eval()
    loaded = head.model.loaded
    results = []
    for file in files:
        path = Path(file)
        state_dict, notes = _load(path)
        try:
            tokenized = loaded.tokenize(state_dict)
            del state_dict  # the tokens hold the values now: free the tensors before the forward pass
            if tokenized.num_tokens == 0:
                raise InvalidInputError("no weights to encode (no tensor became a token)")
            out = head.model(tokenized=[tokenized])
        except ZooprobeError as e:
            raise InvalidInputError(
                f"{path}: this network cannot be read by the head's encoder: {e} (the tokenization is fixed "
                "by the encoder the head was trained with)"
            ) from e
        except (RuntimeError, ValueError, IndexError) as e:
            raise InvalidInputError(
                f"{path}: this network cannot be encoded ({type(e).__name__}: {str(e)[:300]})"
            ) from e
        raw = {k: v.float().cpu().numpy() for k, v in out.items()}
        preds = head.model.head.predict(raw)
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
    "predict_files",
]
