"""What the app's page shows, without Gradio: heads, audits of uploaded files, HTML, errors.

A prediction on the page is the one of ``zooprobe predict --json`` for the same file: `audit_files` reads
each file with `zooprobe.inference.predict_files_by_head` (the same reader, limits and results) and
`document` builds the JSON download with `zooprobe.inference.predictions_document` (the same schema). The
one difference is the ``file`` field, which holds the name of the uploaded file, not the temporary path it
was stored under. A file that cannot be read gives the command line's one-line message
(`zooprobe.errors.error_message`) with the temporary path replaced by the file's name, never a traceback.
"""

from __future__ import annotations

import html
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zooprobe import inference
from zooprobe.app.config import DEFAULT_MAX_UPLOAD_MB
from zooprobe.core.checkpoints import (
    DEFAULT_MAX_PARAMS,
    check_checkpoint_file,
    load_checkpoint,
)
from zooprobe.errors import ZooprobeError, error_message
from zooprobe.heads.head_loader import LoadedHead
from zooprobe.heads.shipped import CorpusReference, list_shipped_heads, load_reference, shipped_head_folder
from zooprobe.heads.uncertainty import DEFAULT_LEVEL
from zooprobe.inference import domain_lines, predict_files_by_head, predictions_document, result_rows
from zooprobe.tokens.statistics import featurize
from zooprobe.zoo.store import Zoo

NO_SHIPPED_HEADS = "no shipped heads yet: pass --heads"


# ------------------------------------------------------------------------------------------ heads
@dataclass
class Corpus:
    """What a head's training zoo looks like: its final train models' metadata, when the zoo is on this
    machine (the folder its config.json names), else None and a note saying why."""

    source: str | None
    metadata: pd.DataFrame | None
    note: str = ""


@dataclass
class AppHeads:
    """The heads the page predicts with: the source each was given as, the loaded head, its corpus."""

    sources: list[str]
    heads: list[LoadedHead]
    corpora: list[Corpus] = field(default_factory=list)
    reference: CorpusReference | None = None
    """The shipped corpus reference (nearest corpus models), when a shipped head is among the heads."""

    def reference_head(self) -> LoadedHead | None:
        """A head whose encoder's representations the reference holds (a shipped head), or None."""
        if self.reference is None:
            return None
        return next((h for h in self.heads if _is_shipped(h)), None)

    def titles(self) -> list[str]:
        return [f"head {s} ({h.spec.task}, {h.kind})" for s, h in zip(self.sources, self.heads, strict=True)]


def shipped_heads() -> list[tuple[str, LoadedHead]]:
    """The heads shipped with zooprobe (`zooprobe.heads.shipped`), as (name, loaded head) sharing one
    encoder; a `ZooprobeError` "no shipped heads yet: pass --heads" where this installation has none."""
    names = list_shipped_heads()
    if not names:
        raise ZooprobeError(NO_SHIPPED_HEADS)
    return list(zip(names, inference.load_heads(names), strict=True))


def load_corpus(head: LoadedHead) -> Corpus:
    """The training zoo's final train models' metadata: for a shipped head, the shipped corpus reference;
    otherwise from the zoo folder the head names, when it exists here."""
    source = (head.config.get("zoo") or {}).get("source")
    if _is_shipped(head):
        reference = load_reference()
        if reference is not None:
            return Corpus(f"{source} (the foundation corpus, shipped reference)", reference.metadata)
    if not source:
        return Corpus(None, None, "the head does not record its training zoo")
    path = Path(str(source)).expanduser()
    if not path.is_dir():
        return Corpus(str(source), None, f"its training zoo {source} is not on this machine")
    try:
        zoo = Zoo.open(path).final()
        meta = zoo.split("train").metadata() if "train" in zoo.splits else zoo.metadata()
    except ZooprobeError as e:
        return Corpus(str(source), None, f"its training zoo {source} cannot be read ({e})")
    return Corpus(str(source), meta.reset_index(drop=True))


def _is_shipped(head: LoadedHead) -> bool:
    folder = Path(head.source).resolve()
    return any(folder == shipped_head_folder(n).resolve() for n in list_shipped_heads())


def load_app_heads(sources: Sequence[str] | None) -> AppHeads:
    """Load the heads given (or the shipped ones) and their corpora, once, when the app starts."""
    if sources is None:
        pairs = shipped_heads()
    else:
        pairs = list(zip(map(str, sources), inference.load_heads([str(s) for s in sources]), strict=True))
    heads = AppHeads([s for s, _ in pairs], [h for _, h in pairs])
    heads.corpora = [load_corpus(h) for h in heads.heads]
    if any(_is_shipped(h) for h in heads.heads):
        heads.reference = load_reference()
    return heads


# ------------------------------------------------------------------------------------------ audits
@dataclass
class FileAudit:
    """One uploaded file: its results under each head (as `predict_files_by_head` gives them, ``file``
    being the uploaded name), its weight statistics (for the plots), or the one-line error."""

    name: str
    results: list[dict[str, Any]] | None = None
    statistics: np.ndarray | None = None
    error: str | None = None
    nearest: pd.DataFrame | None = None
    """The most similar corpus models (`CorpusReference.nearest`), when the heads have a reference."""


def upload_name(path: str | Path) -> str:
    """The name a user uploaded a file as (Gradio keeps it as the stored file's name)."""
    return Path(path).name


def _size_error(name: str, size: int, max_upload_mb: int) -> str | None:
    if size > max_upload_mb * 2**20:
        return (
            f"zooprobe: error: {name}: the file is {size / 2**20:.1f} MiB, over the page's upload limit of "
            f"{max_upload_mb} MiB (start the app with a larger --max_upload_mb)"
        )
    return None


def audit_file(
    heads: AppHeads,
    path: str | Path,
    *,
    name: str | None = None,
    level: float = DEFAULT_LEVEL,
    max_params: int = DEFAULT_MAX_PARAMS,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    show_unpredictable: bool = False,
) -> FileAudit:
    """Predict with every head on one file (`predict_files_by_head`, as ``zooprobe predict``); an error is
    kept as its one-line message naming the file by `name` (default: its file name)."""
    path = Path(path)
    name = name or upload_name(path)
    audit = FileAudit(name)
    try:
        size = check_checkpoint_file(path)
        audit.error = _size_error(name, size, max_upload_mb)
        if audit.error is not None:
            return audit
        by_head = predict_files_by_head(
            heads.heads, [path], max_params=max_params, level=level, show_unpredictable=show_unpredictable
        )
        audit.results = [_renamed(results[0], str(path), name) for results in by_head]
        state_dict = load_checkpoint(path, max_params=max_params)
        audit.statistics = featurize([state_dict])[0]
        audit.nearest = _nearest(heads, state_dict)
    except (ZooprobeError, MemoryError, OSError) as e:
        audit.results, audit.statistics = None, None
        audit.error = str(error_message(e)).replace(str(path), name)
    return audit


NEAREST = 5
"""How many nearest corpus models the page lists per file."""


def _nearest(heads: AppHeads, state_dict: Any) -> pd.DataFrame | None:
    head = heads.reference_head()
    if head is None or heads.reference is None:
        return None
    rep = head.run([state_dict]).representations[0]  # the canonical form's, as the predictions read
    return heads.reference.nearest(rep, NEAREST)


def audit_hub_model(heads: AppHeads, repo_id: str, root: str | Path, **options: Any) -> FileAudit:
    """`audit_file` of a Hub model repo's weights file (`zooprobe.hub.hub_checkpoint`), downloaded into a
    folder under `root` (the app's temporary folder) and removed afterwards; offline, a missing repo or
    one without a single weights file is the one-line error, named by the repo id."""
    from zooprobe.hub import hub_checkpoint  # heavy: huggingface_hub

    name = str(repo_id).strip()
    folder = Path(root) / "hub" / uuid.uuid4().hex
    try:
        path = hub_checkpoint(name, cache_dir=folder)
        return audit_file(heads, path, name=f"{name}/{path.name}", **options)
    except ZooprobeError as e:
        return FileAudit(name, error=str(error_message(e)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _renamed(value: Any, old: str, new: str) -> Any:
    """`value` (a JSON-ready result) with the temporary path `old` replaced by the upload's name `new`."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _renamed(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, old, new) for v in value]
    return value


def audit_files(heads: AppHeads, paths: Sequence[str | Path], **options: Any) -> list[FileAudit]:
    """`audit_file` of each path, in order (a bad file does not stop the others)."""
    return [audit_file(heads, p, **options) for p in paths]


def document(heads: AppHeads, audits: Sequence[FileAudit], level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """The JSON download: ``zooprobe predict --json``'s document (`predictions_document`) of the files
    that could be read."""
    ok = [a for a in audits if a.results is not None]
    per_head = [
        (source, None, head, [a.results[k] for a in ok])  # type: ignore[index]
        for k, (source, head) in enumerate(zip(heads.sources, heads.heads, strict=True))
    ]
    return predictions_document(per_head, level)


def remove_uploads(paths: Sequence[str | Path], root: str | Path) -> None:
    """Delete uploaded files (and the folders Gradio made for them) inside the upload folder `root`;
    nothing outside it is touched."""
    root = Path(root).resolve()
    for p in paths:
        path = Path(p).resolve()
        if root not in path.parents:
            continue
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != root and root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


# ------------------------------------------------------------------------------------------ HTML
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def domain_state(result: dict[str, Any]) -> str:
    """``in`` / ``out`` / ``unknown``: the result's applicability-domain flag."""
    flag = result["in_domain"]
    return "in" if flag is True else "out" if flag is False else "unknown"


def _domain_html(result: dict[str, Any]) -> str:
    state = domain_state(result)
    first, *reasons = domain_lines(result)
    label = {"in": "IN DOMAIN", "out": "OUT OF DOMAIN", "unknown": "DOMAIN UNKNOWN"}[state]
    items = "".join(f'<li class="zp-reason">{_e(r.strip().removeprefix("- "))}</li>' for r in reasons)
    return (
        f'<div class="zp-domain zp-domain-{state}" data-in-domain="{state}">'
        f'<strong class="zp-flag">{label}</strong> <span>{_e(first.split(":", 1)[-1].strip())}</span>'
        + (f'<ul class="zp-reasons">{items}</ul>' if items else "")
        + "</div>"
    )


def _table_html(result: dict[str, Any], level: float) -> str:
    header, rows = result_rows(result, level=level)
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="zp-target" data-target="{_e(name)}"><td>{_e(name)}</td>'
        f'<td class="zp-prediction">{_e(pred)}</td><td class="zp-interval">{_e(interval)}</td>'
        f"<td>{_e(rel)}</td></tr>"
        for name, pred, interval, rel in rows
    )
    return f'<table class="zp-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


CSS = """
.zp-file{border:1px solid #ccc;border-radius:6px;padding:8px 12px;margin:8px 0}
.zp-domain-in .zp-flag{color:#176b2c}.zp-domain-out .zp-flag{color:#a4161a}
.zp-domain-unknown .zp-flag{color:#8a6d00}.zp-error{color:#a4161a;font-family:monospace}
"""
"""The page's style sheet (`zooprobe.app.ui` gives it to Gradio)."""


def audits_html(heads: AppHeads, audits: Sequence[FileAudit], level: float = DEFAULT_LEVEL) -> str:
    """The page's results: per file, per head its domain flag with reasons and its predictions table; a
    file that could not be read shows its one-line error."""
    if not audits:
        return (
            '<p class="zp-empty">Upload one or more checkpoints (.safetensors, .pt) to see predictions.</p>'
        )
    parts: list[str] = []
    for audit in audits:
        parts.append(f'<div class="zp-file" data-file="{_e(audit.name)}"><h3>{_e(audit.name)}</h3>')
        if audit.error is not None:
            parts.append(f'<p class="zp-error">{_e(audit.error)}</p></div>')
            continue
        for title, result in zip(heads.titles(), audit.results or [], strict=True):
            parts.append(f'<div class="zp-head"><h4>{_e(title)}</h4>')
            parts.append(_domain_html(result) + _table_html(result, level))
            parts += [f'<p class="zp-note">note: {_e(n)}</p>' for n in result.get("notes", [])]
            parts.append("</div>")
        if audit.nearest is not None:
            parts.append(nearest_html(audit.nearest))
        parts.append("</div>")
    return "".join(parts)


NEAREST_COLUMNS = (
    "model_id",
    "dataset",
    "family",
    "activation",
    "optimizer",
    "learning_rate",
    "test_accuracy",
)


def nearest_html(nearest: pd.DataFrame) -> str:
    """The nearest corpus models of one file as a table (similarity, then the models' recipe)."""
    columns = ["similarity", *(c for c in NEAREST_COLUMNS if c in nearest.columns)]

    def cell(column: str, value: Any) -> str:
        if column in ("similarity", "test_accuracy") and isinstance(value, float):
            return f"{value:.3f}"
        if column == "learning_rate" and isinstance(value, float):
            return f"{value:.2g}"
        return str(value)

    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    rows = "".join(
        '<tr class="zp-neighbour">' + "".join(f"<td>{_e(cell(c, row[c]))}</td>" for c in columns) + "</tr>"
        for _, row in nearest.iterrows()
    )
    return (
        '<div class="zp-nearest"><h4>nearest corpus models (foundation representation, cosine)</h4>'
        f'<table class="zp-table"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
    )


def compare_html(heads: AppHeads, a: FileAudit, b: FileAudit, level: float = DEFAULT_LEVEL) -> str:
    """Two files side by side: per head and target the two predictions, and both domain flags."""
    errors = [f'<p class="zp-error">{_e(x.error)}</p>' for x in (a, b) if x.error is not None]
    if errors:
        return "".join(errors)
    parts: list[str] = []
    for k, title in enumerate(heads.titles()):
        ra, rb = a.results[k], b.results[k]  # type: ignore[index]
        _, rows_a = result_rows(ra, level=level)
        _, rows_b = result_rows(rb, level=level)
        parts.append(f'<div class="zp-head"><h4>{_e(title)}</h4><table class="zp-table zp-compare"><thead>')
        parts.append(f"<tr><th>target</th><th>{_e(a.name)}</th><th>{_e(b.name)}</th></tr></thead><tbody>")
        parts.append(
            f'<tr class="zp-domain-row"><td>applicability domain</td>'
            f"<td>{_domain_html(ra)}</td><td>{_domain_html(rb)}</td></tr>"
        )
        for (name, pa, ia, _), (_, pb, ib, _) in zip(rows_a, rows_b, strict=True):
            cell_a = _e(pa) + (f"<br><small>{_e(ia)}</small>" if ia else "")
            cell_b = _e(pb) + (f"<br><small>{_e(ib)}</small>" if ib else "")
            parts.append(
                f'<tr class="zp-target" data-target="{_e(name)}"><td>{_e(name)}</td>'
                f'<td class="zp-a">{cell_a}</td><td class="zp-b">{cell_b}</td></tr>'
            )
        parts.append("</tbody></table></div>")
    return "".join(parts)


def heads_html(heads: AppHeads) -> str:
    """The heads the page predicts with, each with its training zoo (or why the plots lack it)."""
    items = []
    for title, corpus in zip(heads.titles(), heads.corpora, strict=True):
        zoo = f"training zoo {corpus.source}" if corpus.metadata is not None else corpus.note
        items.append(f"<li>{_e(title)}: {_e(zoo)}</li>")
    return f'<ul class="zp-heads">{"".join(items)}</ul>'


__all__ = [
    "NO_SHIPPED_HEADS",
    "AppHeads",
    "Corpus",
    "FileAudit",
    "audit_file",
    "audit_files",
    "audit_hub_model",
    "audits_html",
    "compare_html",
    "document",
    "domain_state",
    "heads_html",
    "load_app_heads",
    "load_corpus",
    "nearest_html",
    "remove_uploads",
    "shipped_heads",
    "upload_name",
]
