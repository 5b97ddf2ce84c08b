"""`zooprobe zoo verify`: a generated zoo matches the content hashes its build recorded, and a changed row
or a manifest of another corpus is reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from zooprobe.cli import main
from zooprobe.zoo.content import row_digest, verify_zoo


def test_a_built_zoo_verifies_and_a_different_manifest_is_reported(tiny_zoo: Path, tmp_path: Path) -> None:
    found = verify_zoo(tiny_zoo, against=tiny_zoo / "zooprobe_manifest.json")
    assert found.ok, found.problems
    manifest = json.loads((tiny_zoo / "zooprobe_manifest.json").read_text())
    assert found.corpus == manifest["content"]["corpus"] and len(found.cohorts) == 4
    other = json.loads(json.dumps(manifest))
    first = sorted(other["content"]["cohorts"])[0]
    other["content"]["cohorts"][first] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["zoo", "verify", str(tiny_zoo), "--against", str(tmp_path / "other.json")]) == 1
    bad = verify_zoo(tiny_zoo, against=tmp_path / "other.json")
    assert bad.problems == [f"1 cohort(s) differ from {tmp_path / 'other.json'}, e.g. [{int(first)}]"]


def test_a_zoo_whose_manifest_was_edited_fails_verification(tiny_zoo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, copy)
    path = copy / "zooprobe_manifest.json"
    manifest = json.loads(path.read_text())
    manifest["content"]["cohorts"].pop(sorted(manifest["content"]["cohorts"])[-1])
    path.write_text(json.dumps(manifest))
    found = verify_zoo(copy)
    assert not found.ok and "not in" in found.problems[0]


def test_run_length_columns_enter_a_rows_hash_only_where_recorded() -> None:
    """Zoos built before ``train_samples``/``steps`` existed (null there) keep their committed hashes."""
    row = {"model_id": "m0", "checkpoint_epoch": 3, "learning_rate": 0.01, "weights": b"abc"}
    assert row_digest({**row, "train_samples": None, "steps": None}) == row_digest(row)
    assert row_digest({**row, "train_samples": 512, "steps": 24}) != row_digest(row)
    assert row_digest({**row, "learning_rate": None}) != row_digest(row)
