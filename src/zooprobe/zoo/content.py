"""Content hashes of generated zoos: what a corpus manifest records and `zooprobe zoo verify` checks.

A row's digest is the sha256 of its metadata as canonical JSON (sorted keys, the values as Arrow stores
them) followed by its weights (the safetensors bytes); a cohort's hash is the sha256 of its rows' digests
in (model_id, checkpoint_epoch) order, so it is computed streaming, whatever file a row is in. Wall-clock
columns (``train_time_s``) are left out, so building the same configuration again on the same kind of
machine gives the same hashes; Parquet's encoding does not enter. The corpus hash is the
sha256 of the cohort hashes in cohort order.

`zoo build` records both in the zoo manifest (``content``); `verify_zoo` recomputes them from the zoo's
data and compares them with that manifest and, optionally, with another one (a committed corpus
manifest: ``zoo verify ZOO --against corpus_manifest.json``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from zooprobe.core.files import read_json
from zooprobe.errors import InvalidInputError, ZooFormatError

UNHASHED = frozenset({"train_time_s", "split"})
"""Columns left out of a row's hash: wall time varies between builds; the split is a column of the parts
only (the final zoo holds it as the file a row is in, and it is a function of the run's seed anyway)."""
WEIGHTS = "weights"
LATER = frozenset({"train_samples", "steps"})
"""Columns added after zoos were first hashed: left out of a row's hash where null, so the zoos built
before them (and the presets that do not record them) keep their hashes."""


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def row_digest(row: Mapping[str, Any]) -> str:
    """The digest of one row (see the module docs)."""
    digest = hashlib.sha256()
    meta = {
        k: _canonical(v)
        for k, v in row.items()
        if k not in UNHASHED and k != WEIGHTS and not (v is None and k in LATER)
    }
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    digest.update(bytes(row.get(WEIGHTS) or b""))
    return digest.hexdigest()


def rows_sha256(digests: Mapping[tuple[str, int], str]) -> str:
    """A cohort's hash from its rows' digests keyed by (model_id, checkpoint_epoch)."""
    digest = hashlib.sha256()
    for key in sorted(digests):
        digest.update(digests[key].encode())
    return digest.hexdigest()


def content_key(row: Mapping[str, Any]) -> tuple[str, int]:
    return str(row["model_id"]), int(row["checkpoint_epoch"])


def table_sha256(table: pa.Table) -> str:
    """The hash of one cohort's rows held in an Arrow table (a build part)."""
    return rows_sha256({content_key(r): row_digest(r) for r in _rows(table.to_batches(max_chunksize=64))})


def _rows(batches: Iterable[pa.RecordBatch]) -> Iterable[dict[str, Any]]:
    for batch in batches:
        yield from batch.to_pylist()


def corpus_sha256(cohorts: Mapping[int, str]) -> str:
    """The hash of every cohort hash, in cohort order."""
    digest = hashlib.sha256()
    for k in sorted(cohorts):
        digest.update(f"{k}:{cohorts[k]}\n".encode())
    return digest.hexdigest()


@dataclass
class Verification:
    """What `verify_zoo` found: the recomputed hashes and every mismatch, as lines for the user."""

    cohorts: dict[int, str]
    corpus: str
    problems: list[str] = field(default_factory=list)
    checked_against: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = f"{len(self.cohorts)} cohort(s), corpus sha256 {self.corpus[:16]}..."
        if self.ok:
            return f"{head}: matches {' and '.join(self.checked_against) or 'nothing (no recorded hashes)'}"
        return head + "\n" + "\n".join(f"  {p}" for p in self.problems)


def _recorded(manifest: Mapping[str, Any], where: str) -> tuple[dict[int, str], str | None]:
    content = manifest.get("content")
    if content is None:
        return {}, None
    if not isinstance(content, Mapping) or not isinstance(content.get("cohorts"), Mapping):
        raise InvalidInputError(f"{where}: 'content' must be an object with a 'cohorts' mapping")
    try:
        cohorts = {int(k): str(v) for k, v in content["cohorts"].items()}
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{where}: 'content.cohorts' keys must be cohort numbers ({e})") from None
    return cohorts, (str(content["corpus"]) if content.get("corpus") is not None else None)


def _compare(found: Verification, recorded: dict[int, str], corpus: str | None, name: str) -> None:
    if not recorded:
        found.problems.append(
            f"{name} records no content hashes (a zoo built before zooprobe 0.1 or imported)"
        )
        return
    missing = sorted(set(recorded) - set(found.cohorts))
    extra = sorted(set(found.cohorts) - set(recorded))
    differ = sorted(k for k in set(recorded) & set(found.cohorts) if recorded[k] != found.cohorts[k])
    if missing:
        found.problems.append(f"{len(missing)} cohort(s) of {name} are missing, e.g. {missing[:5]}")
    if extra:
        found.problems.append(f"{len(extra)} cohort(s) are not in {name}, e.g. {extra[:5]}")
    if differ:
        found.problems.append(f"{len(differ)} cohort(s) differ from {name}, e.g. {differ[:5]}")
    if corpus is not None and not (missing or extra or differ) and corpus != found.corpus:
        found.problems.append(f"the corpus hash differs from {name}")
    found.checked_against.append(name)


def verify_zoo(root: str | Path, against: str | Path | None = None) -> Verification:
    """Recompute the content hashes of the generated zoo at ``root`` and compare them with its manifest and,
    if given, with the manifest file ``against``."""
    import pyarrow.parquet as pq  # heavy: pyarrow's Parquet reader

    from zooprobe.zoo.store import MANIFEST, Zoo  # heavy: imports torch

    root = Path(root)
    zoo = Zoo.open(root)  # checks the folder, the manifest and the files
    if "cohort" not in zoo.columns:
        raise ZooFormatError(
            f"{root}: not a generated zoo (no cohort column); only generated zoos are hashed"
        )
    by_cohort: dict[int, dict[tuple[str, int], str]] = {}
    for path in zoo.files:
        for row in _rows(pq.ParquetFile(path).iter_batches(batch_size=64)):
            by_cohort.setdefault(int(row["cohort"]), {})[content_key(row)] = row_digest(row)
    own, own_corpus = _recorded(zoo.manifest, str(root / MANIFEST))
    # cohorts whose every run diverged have no rows: recorded with the hash of no rows
    cohorts = {k: rows_sha256({}) for k in own if k not in by_cohort}
    cohorts |= {k: rows_sha256(d) for k, d in by_cohort.items()}
    found = Verification(cohorts, corpus_sha256(cohorts))
    _compare(found, own, own_corpus, str(root / MANIFEST))
    if against is not None:
        other = read_json(against, "corpus manifest")
        theirs, their_corpus = _recorded(other, str(against))
        _compare(found, theirs, their_corpus, str(against))
    return found
