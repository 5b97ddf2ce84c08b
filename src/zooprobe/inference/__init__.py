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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zooprobe.api import load_head
from zooprobe.core.guards import (
    CHECKPOINT_SUFFIXES,
    CONTAINER_KEYS,
    DEFAULT_MAX_PARAMS,
    load_checkpoint,
)
from zooprobe.core.progress import Progress
from zooprobe.errors import InvalidInputError, ZooprobeError
from zooprobe.heads.head_loader import (
    HeadOutputs,
    LoadedHead,
    head_folder,
    read_head_config,
)
from zooprobe.heads.integrity import HASH_FILE, check_content_hash
from zooprobe.heads.shipped import local_head_path, require_shipped_heads
from zooprobe.heads.uncertainty import DEFAULT_LEVEL, check_level
from zooprobe.inference.assess import (
    NOT_PREDICTABLE,
    _assess_chunk,
    _read_chunks,
)
from zooprobe.inference.text import (
    domain_lines,
    format_predictions,
    format_result,
    predictions_document,
    result_rows,
)

if TYPE_CHECKING:
    import pandas as pd


class OutOfDomainError(ZooprobeError):
    """``strict`` prediction met networks outside a head's applicability domain (the message lists them)."""


# ------------------------------------------------------------------------------------------ predicting
HeadSource = LoadedHead | str | Path


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
        key = _frozen_encoder_key(local) if revision is None and local is not None else None
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
    local = local_head_path(source)
    if not local.exists():
        return None
    folder = head_folder(local)
    if (folder / HASH_FILE).is_file() or (folder / "config.json").is_file():  # else: no head (yet) to check
        check_content_hash(folder, trust=trust)
    return folder


def _frozen_encoder_key(folder: Path) -> tuple[str, str | None, str | None] | None:
    """(encoder source, revision, fingerprint) the config of a local frozen head's folder (as
    `check_local_head` resolved it) names; None otherwise (a fine-tuned head, an unreadable config: loaded on
    its own, its errors raised by `load_head`)."""
    try:
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
