"""Predicting networks' properties with trained heads: `predict` (a pandas DataFrame) and
``zooprobe predict --head RUN FILE ...`` (`predict_files`, `format_predictions`).

`predict(head, models)` takes state dicts or checkpoint files and returns one labelled row per model
(class names, probabilities, natural units: `zooprobe.heads.targets.TaskSpec.label`), and next to them
what the head knows about its own limits (`zooprobe.heads.trust`):

- ``in_domain`` and ``domain_reasons``: whether the network lies in the head's applicability domain
  (architecture, weight statistics, representation; `zooprobe.heads.domain`) and, if not, why;
- ``NAME_low`` / ``NAME_high``: the conformal interval of each continuous target at ``level`` (default
  90%), in natural units;
- ``NAME_reliability``: the head's own test score for the target (R² or accuracy). A target the zoo does
  not make predictable (test R² < 0.1, or accuracy within 0.02 of the majority class) reads "not
  predictable from this zoo" instead of a value (``show_unpredictable=True`` shows the value anyway).

Several heads at once: pass a list (columns prefixed with each head's task) or a mapping of labels to
heads (prefixed with the labels). ``strict=True`` raises `OutOfDomainError` when a network lies outside a
head's domain. `predict_files` gives JSON-ready dicts per file with the notes of reading it, which
`format_predictions` prints. Nothing is ever NaN silently: a non-finite representation or output is an
error naming the network and the cause.

Checkpoints are read by `zooprobe.core.checkpoints.read_checkpoint`, the reader the zoo importers use too (see
its docs for the rules: safetensors and ``torch.load(weights_only=True)`` only, containers unwrapped, tensor
order, resource limits), so a file gives the same state dict here as in an imported zoo. On top of it,
prediction converts float64 tensors to float32 (the encoder reads float32 tokens; prediction needs no exact
round trip), which is noted with the results like the reader's own notes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zooprobe.api import load_head
from zooprobe.core.guards import (
    CHECKPOINT_SUFFIXES,
    CONTAINER_KEYS,
    DEFAULT_MAX_PARAMS,
    format_bytes,
    is_out_of_memory,
    load_checkpoint,
    read_checkpoint,
)
from zooprobe.core.progress import Progress
from zooprobe.errors import InvalidInputError, ZooprobeError
from zooprobe.heads.head_loader import (
    HeadOutputs,
    LoadedHead,
    NonFiniteError,
    head_folder,
    read_head_config,
    run_heads,
)
from zooprobe.heads.integrity import HASH_FILE, check_content_hash
from zooprobe.heads.shipped import is_shipped_head, require_shipped_heads, shipped_head_folder
from zooprobe.heads.targets import TargetSpec
from zooprobe.heads.uncertainty import DEFAULT_LEVEL, check_level
from zooprobe.tokens.statistics import featurize

if TYPE_CHECKING:
    import pandas as pd

NOT_PREDICTABLE = "not predictable from this zoo"
NO_DOMAIN = (
    "this head has no trust record (trust.json: saved by an older zooprobe, or removed), so it has no "
    "applicability domain: whether it applies, its intervals and its reliability are unknown, and targets it "
    "would withhold as not predictable are shown; restore the file or train the head again"
)


class OutOfDomainError(ZooprobeError):
    """``strict`` prediction met networks outside a head's applicability domain (the message lists them)."""


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


# ------------------------------------------------------------------------------------------ predicting
HeadSource = LoadedHead | str | Path


def _shared_statistics(heads: Sequence[LoadedHead], state_dict: Mapping[str, Any]) -> np.ndarray | None:
    """The weight statistics of a network's canonical form (what `LoadedHead.run` reads), computed once when
    several heads read it (None for one)."""
    reads = {h.canonical_version() for h in heads}
    return featurize([heads[0].reads()(state_dict)]) if len(heads) > 1 and len(reads) == 1 else None


def load_heads(
    sources: Sequence[str | Path],
    revisions: Sequence[str | None] | None = None,
    *,
    trust: bool = False,
    local_checked: bool = False,
) -> list[LoadedHead]:
    """`zooprobe.load_head` of each source (at its revision), loading an encoder once for all frozen heads
    that name the same one (source, revision and fingerprint), so `run_heads` encodes each network once for
    them. A fine-tuned head always gets its own copy (its weights replace the encoder's).

    A local head's content hash is checked before any of its files is read (`check_local_head`), unless
    ``local_checked`` says the caller did that already."""
    revisions = list(revisions) if revisions is not None else [None] * len(sources)
    encoders: dict[tuple[str, str | None, str | None], Any] = {}
    heads = []
    for source, revision in zip(sources, revisions, strict=True):
        local = check_local_head(source, trust=trust or local_checked)  # before any of its files is read
        key = _frozen_encoder_key(source) if revision is None and local is not None else None
        shared = encoders.get(key) if key is not None else None
        # a local head's hash was checked above (trust: not again); a Hub head's is checked by load_head
        head = load_head(source, revision=revision, trust=trust or local is not None, encoder=shared)
        if key is not None and shared is None:
            encoders[key] = head.model.loaded
        heads.append(head)
    return heads


def default_heads(*, trust: bool = False) -> list[LoadedHead]:
    """The heads shipped with zooprobe (`zooprobe.heads.shipped`: accuracy, hyperparameters and patterns
    on the shipped foundation encoder), loaded with one shared encoder: what ``zooprobe predict FILE``
    predicts with when no ``--head`` is given. A one-line error when this installation has none."""
    return load_heads(require_shipped_heads(), trust=trust)


def check_local_head(source: str | Path, *, trust: bool = False) -> Path | None:
    """The head folder of a local `source` (a run or head folder), its content hash checked first
    (`zooprobe.heads.integrity.check_content_hash`: a modified head is refused before any of its files is
    parsed, unless `trust`); None for a source that is not a local path (a Hub repo id). A shipped head's
    name is its folder inside the package."""
    local = Path(str(source)).expanduser()
    if is_shipped_head(source):
        local = shipped_head_folder(str(source))
    if not local.exists():
        return None
    folder = head_folder(local)
    if (folder / HASH_FILE).is_file() or (folder / "config.json").is_file():  # else: no head (yet) to check
        check_content_hash(folder, trust=trust)
    return folder


def _frozen_encoder_key(source: str | Path) -> tuple[str, str | None, str | None] | None:
    """(encoder source, revision, fingerprint) a local frozen head's config names; None otherwise (a Hub
    head, a fine-tuned one, an unreadable config: loaded on its own, its errors raised by `load_head`)."""
    try:
        folder = (
            shipped_head_folder(str(source))
            if is_shipped_head(source)
            else head_folder(Path(str(source)).expanduser())
        )
        config = read_head_config(folder)
        encoder = config["encoder"]
        if config["mode"] != "frozen" or not isinstance(encoder, Mapping):
            return None
        return str(encoder["source"]), encoder.get("revision"), encoder.get("fingerprint")
    except (ZooprobeError, KeyError, TypeError):
        return None


def _heads(head: Any, trust: bool = False) -> tuple[list[str] | None, list[LoadedHead]]:
    """(column prefixes or None for a single head, loaded heads) of `predict`'s `head` argument."""

    def loaded(h: Any) -> LoadedHead:
        return h if isinstance(h, LoadedHead) else load_head(h, trust=trust)

    if isinstance(head, Mapping):
        labels = [str(k) for k in head]
        heads = [loaded(h) for h in head.values()]
        return labels, heads
    if isinstance(head, LoadedHead | str | Path):
        return None, [loaded(head)]
    heads = [loaded(h) for h in head]
    if len(heads) == 1:
        return None, heads
    tasks = [h.spec.task for h in heads]
    labels = [t if tasks.count(t) == 1 else f"{t}#{tasks[:i].count(t) + 1}" for i, t in enumerate(tasks)]
    return labels, heads


def _table(
    head: LoadedHead,
    results: Sequence[Mapping[str, Any]],
    outputs: Sequence[HeadOutputs],
    index: Sequence[str],
    level: float,
    show_unpredictable: bool,
) -> pd.DataFrame:
    """One head's labelled columns (`TaskSpec.label`) with intervals, reliability and the domain."""
    import pandas as pd  # heavy: pandas (the DataFrame of `predict`; the command line needs none)

    spec = head.spec
    preds = {t.name: np.concatenate([o.predictions[t.name] for o in outputs]) for t in spec.targets}
    table = spec.label(preds, index)
    columns: dict[str, Any] = {}
    for t in spec.targets:
        own = [t.name]  # the columns `TaskSpec.label` gives this target
        if t.kind != "continuous":
            own += [f"{t.name}_probability", *(f"P({t.name}={c})" for c in t.classes)]
        elif t.log10:
            own.append(f"{t.name}_log10")
        entries = [r["targets"][t.name] for r in results]
        rel = entries[0]["reliability"]
        if entries[0]["predictable"] is False and not show_unpredictable:
            columns[t.name] = [NOT_PREDICTABLE] * len(results)
        else:
            columns.update({c: table[c] for c in own})
            intervals = [e.get("interval") for e in entries]
            if all(i is not None for i in intervals):
                for side in ("low", "high"):
                    key = f"value_{side}" if t.log10 else side
                    columns[f"{t.name}_{side}"] = [
                        i.get(key) if i.get(key) is not None else math.nan
                        for i in intervals  # type: ignore[union-attr]
                    ]
        if rel is not None:
            columns[f"{t.name}_reliability"] = [rel["test"] if rel["test"] is not None else math.nan] * len(
                results
            )
    columns["in_domain"] = [r["in_domain"] for r in results]
    columns["domain_reasons"] = ["; ".join(r["domain"]["reasons"]) for r in results]
    return pd.DataFrame(columns, index=list(index))


def predict(
    head: HeadSource | Sequence[HeadSource] | Mapping[str, HeadSource],
    models: Mapping[str, Any] | str | Path | Iterable[Mapping[str, Any] | str | Path],
    *,
    max_params: int = DEFAULT_MAX_PARAMS,
    level: float = DEFAULT_LEVEL,
    strict: bool = False,
    show_unpredictable: bool = False,
    trust: bool = False,
) -> pd.DataFrame:
    """Predicted properties of each model: one row per model (indexed by file path, or ``model N`` for
    state dicts), labelled with class names, probabilities and natural units, with intervals, reliability
    and the applicability domain (module docs).

    `head` is a loaded head or any `zooprobe.load_head` source, or several (a list: columns prefixed
    ``TASK/``; a mapping: prefixed ``LABEL/``); `models` one state dict or checkpoint file, or several.
    Files are read with the same rules and limits as ``zooprobe predict``, each once. ``strict`` raises
    `OutOfDomainError` if a model lies outside a head's domain. ``trust`` loads heads given as sources even
    when their files differ from their content hash (`zooprobe.load_head`).
    """
    level = _level(level)
    labels, heads = _heads(head, trust)
    items = [models] if isinstance(models, Mapping | str | Path) else list(models)
    if not items:
        raise InvalidInputError("predict: no models given (pass state dicts or checkpoint files)")
    index = [f"model {i}" if isinstance(item, Mapping) else str(item) for i, item in enumerate(items)]
    results: list[list[dict[str, Any]]] = [[] for _ in heads]
    outputs: list[list[HeadOutputs]] = [[] for _ in heads]
    done = 0
    for state_dicts, _ in _read_chunks(items, max_params):
        names = index[done : done + len(state_dicts)]
        for k, (res, outs) in enumerate(_assess_chunk(heads, state_dicts, names, level, show_unpredictable)):
            results[k] += res
            outputs[k] += outs
        done += len(state_dicts)
    if strict:
        _check_strict(
            [(index[i], h, r) for k, h in enumerate(heads) for i, r in enumerate(results[k])],
            "predict(strict=True)",
        )
    tables = [
        _table(h, results[k], outputs[k], index, level, show_unpredictable) for k, h in enumerate(heads)
    ]
    if labels is None:
        table = tables[0]
    else:
        import pandas as pd  # heavy: pandas (the DataFrame of `predict`)

        table = pd.concat(
            [t.add_prefix(f"{label}/") for label, t in zip(labels, tables, strict=True)], axis=1
        )
    table.attrs["level"] = level
    return table


def _level(level: float) -> float:
    try:
        return check_level(level)
    except ValueError as e:
        raise InvalidInputError(str(e)) from e


def predict_files_by_head(
    heads: Sequence[LoadedHead],
    files: Sequence[str | Path],
    *,
    max_params: int = DEFAULT_MAX_PARAMS,
    level: float = DEFAULT_LEVEL,
    show_unpredictable: bool = False,
    progress: bool = False,
) -> list[list[dict[str, Any]]]:
    """`predict_files` of several heads, reading each file once (`CHUNK` files at a time, in a thread pool)
    and encoding it once for all frozen heads on the same encoder: one list of per-file results per head.
    ``progress`` shows files done and files/s (`zooprobe.core.progress.Progress`)."""
    level = _level(level)
    paths = [Path(f) for f in files]
    out: list[list[dict[str, Any]]] = [[] for _ in heads]
    done = 0
    with Progress("predict", len(paths), unit="files", enabled=progress) as bar:
        for state_dicts, notes in _read_chunks(paths, max_params):
            names = [str(p) for p in paths[done : done + len(state_dicts)]]
            per_head = _assess_chunk(heads, state_dicts, names, level, show_unpredictable)
            for k, (results, _) in enumerate(per_head):
                out[k] += [
                    {"file": name, "notes": list(n), **r}
                    for name, n, r in zip(names, notes, results, strict=True)
                ]
            done += len(state_dicts)
            bar.advance(len(state_dicts))
            del state_dicts
    return out


def predict_files(
    head: LoadedHead,
    files: Sequence[str | Path],
    *,
    max_params: int = DEFAULT_MAX_PARAMS,
    level: float = DEFAULT_LEVEL,
    show_unpredictable: bool = False,
) -> list[dict[str, Any]]:
    """Predictions of `head` for each checkpoint file, one dict per file (JSON-ready, strict)::

        {"file": str, "notes": [str, ...], "in_domain": bool | None,
         "domain": {"in_domain", "reasons": [str, ...], "architecture": {...},
                    "statistics": {"distance", "threshold", "percentile"}, "representation": {...}},
         "targets": {name: {...}}}

    Per target: ``binary``: ``probability`` (and ``predicted``: probability >= 0.5); ``categorical``:
    ``predicted`` (the class), ``probability`` (its probability) and ``probabilities`` (class -> p);
    ``continuous``: ``predicted`` in metric space (log10 for log targets, with ``log10: true`` and
    ``value`` = 10**predicted) and ``interval`` (``level``, ``low``, ``high`` in metric space, plus
    ``value_low`` / ``value_high`` for log targets; null bounds when too few validation models back that
    level). Every target has ``reliability`` (``metric``, ``test``, ``majority``, ``predictable``) and
    ``predictable``; a target that is not predictable from the zoo has ``predicted: null`` and a ``note``
    instead of its values, unless ``show_unpredictable``. Probabilities are calibrated.

    Files are read and encoded `CHUNK` at a time (bounded memory); an unreadable file or a network the encoder
    cannot represent raises `InvalidInputError` naming the file (and the tensor, when one is to blame), a
    non-finite representation or output a `NonFiniteError` naming the file and the cause. A file holding
    more than ``max_params`` values is refused before its values are read (`zooprobe.core.checkpoints`).
    """
    return predict_files_by_head(
        [head], files, max_params=max_params, level=level, show_unpredictable=show_unpredictable
    )[0]


def _check_strict(found: Sequence[tuple[str, Any, Mapping[str, Any]]], what: str) -> None:
    """`OutOfDomainError` listing every (name, head, result) whose network is not in the head's domain."""
    bad = [(name, head, r) for name, head, r in found if r["in_domain"] is not True]
    if not bad:
        return
    shown = "; ".join(
        f"{name} (head {_head_name(head)}: {'; '.join(r['domain']['reasons'])})" for name, head, r in bad[:5]
    )
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise OutOfDomainError(
        f"{what}: {len(bad)} of {len(found)} prediction(s) are for networks outside the head's applicability "
        f"domain, so they are extrapolations: {shown}{more}. Predict without strict to see them anyway, or "
        "use a head trained on a zoo of such networks"
    )


def _head_name(head: Any) -> str:
    return str(head.source) if isinstance(head, LoadedHead) else str(head)


# ------------------------------------------------------------------------------------------ printing
def _number(x: float) -> str:
    if not math.isfinite(x):
        return "unbounded" if math.isinf(x) else "undefined"
    return f"{x:.4g}" if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4) else f"{x:.4f}"


def _describe(entry: Mapping[str, Any]) -> str:
    kind = entry["kind"]
    if entry.get("predicted") is None and entry.get("note"):
        return str(entry["note"])
    if kind == "binary":
        return f"{'yes' if entry['predicted'] else 'no'}  (p = {entry['probability']:.3f})"
    if kind == "categorical":
        ranked = sorted(entry["probabilities"].items(), key=lambda kv: -kv[1])
        others = [(c, p) for c, p in ranked if c != entry["predicted"]]
        rest = ", ".join(f"{c} {p:.2f}" for c, p in others[:3]) + (", ..." if len(others) > 3 else "")
        return f"{entry['predicted']}  (p = {entry['probability']:.3f}" + (f"; {rest})" if rest else ")")
    if entry.get("log10"):
        return f"{_number(entry['value'])}  (log10 = {entry['predicted']:.3f})"
    return _number(entry["predicted"])


def _describe_interval(entry: Mapping[str, Any]) -> str:
    interval = entry.get("interval")
    if interval is None or entry.get("predicted") is None:
        return ""
    if interval["low"] is None:
        return "unbounded"
    if entry.get("log10"):
        return f"{_number(interval['value_low'])} - {_number(interval['value_high'])}"
    return f"{_number(interval['low'])} - {_number(interval['high'])}"


def _describe_reliability(entry: Mapping[str, Any]) -> str:
    rel = entry.get("reliability")
    if rel is None:
        return "unknown"
    name = "R²" if rel["metric"] == "r2" else rel["metric"]
    if rel["test"] is None:
        return f"test {name} undefined"
    text = f"test {name} {rel['test']:.2f}"
    if rel.get("majority") is not None:
        text += f" (majority class {rel['majority']:.2f})"
    return text


def domain_lines(result: Mapping[str, Any]) -> list[str]:
    """``in domain: yes``, or ``OUT OF DOMAIN`` and one line per reason (or that the head has no domain)."""
    if result["in_domain"] is True:
        return ["in domain: yes (architecture, weight statistics and representation like the training zoo's)"]
    reasons = [f"  - {reason}" for reason in result["domain"]["reasons"]]
    if result["in_domain"] is None:
        return ["in domain: unknown", *reasons]
    return ["OUT OF DOMAIN: the predictions below are extrapolations, not estimates:", *reasons]


def format_predictions(
    results: Sequence[Mapping[str, Any]], *, level: float | None = None, title: str | None = None
) -> list[str]:
    """Terminal lines for `predict_files` results: per file its domain and one table (target, prediction,
    interval, test score). `title` (e.g. the head) is printed under each file name."""
    lines: list[str] = []
    for result in results:
        if lines:
            lines.append("")
        lines.append(str(result["file"]))
        lines += format_result(result, level=level, title=title)
    return lines


def result_rows(
    result: Mapping[str, Any], *, level: float | None = None
) -> tuple[tuple[str, str, str, str], list[tuple[str, str, str, str]]]:
    """(header, rows) of one file's result under one head: per target its prediction (with probabilities
    or natural units), interval and test score, as `format_result` prints them (the app shows the same)."""
    targets = result["targets"]
    rows = [
        (name, _describe(e), _describe_interval(e), _describe_reliability(e)) for name, e in targets.items()
    ]
    shown_level = level or next(
        (e["interval"]["level"] for e in targets.values() if e.get("interval")), DEFAULT_LEVEL
    )
    return ("target", "prediction", f"{shown_level:.0%} interval", "reliability"), rows


def predictions_document(
    heads: Sequence[tuple[str, str | None, LoadedHead, list[dict[str, Any]]]],
    level: float,
    unfinished: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON document of ``zooprobe predict --json`` (also the app's download): per head (source as
    given, revision, loaded head, its `predict_files_by_head` results) one document with ``head``,
    ``revision``, ``task``, ``kind``, ``level``, ``targets`` and ``predictions``; one head's document alone,
    several under ``{"heads": [...]}``. `unfinished` maps a head source to why its run is not finished."""
    docs = []
    for source, revision, head, results in heads:
        doc: dict[str, Any] = {
            "head": source,
            "revision": revision,
            "task": head.spec.task,
            "kind": head.kind,
            "level": level,
            "targets": head.spec.names,
            "predictions": results,
        }
        if unfinished and source in unfinished:
            doc["unfinished_run"] = unfinished[source]
        docs.append(doc)
    return docs[0] if len(docs) == 1 else {"heads": docs}


def format_result(
    result: Mapping[str, Any], *, level: float | None = None, title: str | None = None
) -> list[str]:
    """The lines of one file's result under one head (see `format_predictions`), indented."""
    lines = [f"  {title}"] if title else []
    lines += [f"  {line}" for line in domain_lines(result)]
    header, rows = result_rows(result, level=level)
    widths = [max(len(header[c]), *(len(r[c]) for r in rows)) for c in range(4)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    for note in result.get("notes", []):
        lines.append(f"  note: {note}")
    return lines


__all__ = [
    "CHECKPOINT_SUFFIXES",
    "CONTAINER_KEYS",
    "NOT_PREDICTABLE",
    "OutOfDomainError",
    "check_local_head",
    "default_heads",
    "domain_lines",
    "format_predictions",
    "format_result",
    "load_checkpoint",
    "load_heads",
    "predict",
    "predict_files",
    "predict_files_by_head",
    "predictions_document",
    "result_rows",
]
