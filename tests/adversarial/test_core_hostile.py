"""Hostile files met by zooprobe's core readers and writers (issue 31, and the memory bomb of issue 28).

A safetensors header that lies (negative offsets, float shapes, a list instead of an object), YAML aliases
that expand to billions of values, JSON nested 100k levels, a manifest that is a list, an unknown key in a
``--config`` file, a full disk while saving, two builds into one folder at once: each must be a one-line
error (exit code 2) that names the file, with the user's files unchanged.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from harness import assert_unchanged, run_cli, snapshot
from safetensors import SafetensorError

SRC = Path(__file__).resolve().parents[2] / "src" / "zooprobe"

# --------------------------------------------------------------------------------- 1. safetensors headers
WIDTH = 12 + 3  # one Linear(4, 3)


def _flat_inputs(folder: Path) -> tuple[Path, Path]:
    layout = folder / "layout.json"
    layout.write_text(
        json.dumps(
            [
                {"name": "0.weight", "shape": [3, 4], "offset": 0},
                {"name": "0.bias", "shape": [3], "offset": 12},
            ]
        )
    )
    meta = folder / "meta.csv"
    meta.write_text("test_accuracy\n0.5\n0.6\n")
    return layout, meta


def _raw_safetensors(path: Path, header: object, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def _entry(shape: object, offsets: object, dtype: str = "F32") -> dict[str, object]:
    return {"w": {"dtype": dtype, "shape": shape, "data_offsets": offsets}}


HOSTILE_HEADERS = {
    # header bytes read as weights: begin < 0, a header long enough to hold the 2 x 15 values
    "negative-offset": (
        {**_entry([2, 15], [-120, 0]), "__metadata__": {"pad": "x" * 200}},
        b"",
        "data_offsets [-120, 0]",
    ),
    "negative-offset-small": (_entry([2, 15], [-120, 0]), b"", "data_offsets [-120, 0]"),
    "float-shape": (_entry([2, 7.5], [0, 60]), bytes(60), "shape [2, 7.5]"),
    "negative-shape": (_entry([-2, 15], [0, 120]), bytes(120), "shape [-2, 15]"),
    "header-list": ([1, 2], bytes(8), "json list"),
    "header-null": (None, bytes(8), "json null"),
    "string-shape": (_entry(["a", 15], [0, 60]), bytes(60), "shape ['a', 15]"),
    "null-shape": (_entry(None, [0, 60]), bytes(60), "shape None"),
    "string-offsets": (_entry([2, 15], "xy"), bytes(120), "data_offsets 'xy'"),
    "bool-shape": (_entry([True, 15], [0, 60]), bytes(60), "shape [True, 15]"),
    "metadata-not-strings": (
        {**_entry([2, 15], [0, 120]), "__metadata__": {"a": 1}},
        bytes(120),
        "__metadata__",
    ),
    "huge-shape": (_entry([2**40, 2**40], [0, 120]), bytes(120), "refused before reading"),
    "overlap": (
        {
            "w": {"dtype": "F32", "shape": [2, 15], "data_offsets": [0, 120]},
            "v": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
        },
        bytes(120),
        "overlap",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
def test_import_flat_refuses_a_lying_safetensors_header(case: str, tmp_path: Path) -> None:
    header, data, fragment = HOSTILE_HEADERS[case]
    weights = _raw_safetensors(tmp_path / "w.safetensors", header, data)
    layout, meta = _flat_inputs(tmp_path)
    args = ["--weights_key", "w"] if case == "overlap" else []
    before = snapshot(tmp_path)
    out = tmp_path / "zoo"
    r = run_cli("zoo", "import-flat", weights, "--layout", layout, "--metadata", meta, "--output", out, *args)
    r.assert_clear_error(str(weights), fragment)
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize(
    "case", ["negative-offset", "float-shape", "negative-shape", "header-list", "string-offsets", "overlap"]
)
def test_predict_and_every_reader_refuse_a_lying_header(case: str, tmp_path: Path) -> None:
    """The same validator behind the checkpoint reader, training states, encoders, tokenized models, zoo
    rows and the representation cache."""
    from zooprobe.core.checkpoints import read_checkpoint
    from zooprobe.core.tensorfile import load_safetensors, open_safetensors, read_state
    from zooprobe.errors import InvalidInputError
    from zooprobe.zoo.store import decode_weights

    header, data, fragment = HOSTILE_HEADERS[case]
    path = _raw_safetensors(tmp_path / "x.safetensors", header, data)
    readers = [
        lambda: read_checkpoint(path),
        lambda: read_state(path, require_meta=False),
        lambda: load_safetensors(path),
        lambda: open_safetensors(path).__enter__(),
        lambda: decode_weights(path.read_bytes(), str(path)),
    ]
    for read in readers:
        with pytest.raises(
            InvalidInputError, match=re.escape(fragment) if case != "header-list" else "JSON list"
        ):
            read()


#: How src/ may reach the safetensors library: only core/tensorfile.py does; everyone else goes through it.
_ENTRY_POINTS = re.compile(
    r"safe_open|load_file|safetensors\.torch|from safetensors\b|import safetensors|deserialize|"
    r"\bst_load\b|\bst_save\b|save_file\(|int\.from_bytes\([^)]*(?:\[:8\]|read\(8\))[^)]*little"
)
_ALLOWED = re.compile(r"from safetensors import SafetensorError$")


def test_every_safetensors_reader_goes_through_the_validator() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "core" / "tensorfile.py":
            continue
        for no, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if code.strip().startswith(('"', "'", "`")) or _ALLOWED.search(code.strip()):
                continue
            if _ENTRY_POINTS.search(code) and "`" not in code:
                offenders.append(f"{path.relative_to(SRC)}:{no}: {line.strip()}")
    # The flat importer's fast encoder parses a header it wrote itself; everything else is a bypass.
    own = ("zoo/flat.py", "zoo/importers/writer.py")
    offenders = [o for o in offenders if not o.startswith(own) or "payload[:8]" not in o]
    assert not offenders, "safetensors read or parsed outside core/tensorfile.py:\n" + "\n".join(offenders)


# --------------------------------------------------------------------------------- 2. YAML aliases
_LAUGHS = "".join(
    f"  {chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}" if i else '"lol"'] * 9) + "]\n"
    for i in range(9)
)


def _subprocess(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "zooprobe", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "COLUMNS": "200"},
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"zooprobe {' '.join(args)} hung for {timeout} s: {e}")


def test_billion_laughs_in_a_zoo_build_config_is_refused_not_expanded(tmp_path: Path) -> None:
    config = tmp_path / "laughs.yaml"
    config.write_text("preset: tiny\noptimizers:\n" + _LAUGHS)
    assert config.stat().st_size < 400
    r = _subprocess(["zoo", "build", "--config", str(config), "--output", str(tmp_path / "zoo")])
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and str(config) in r.stderr and "aliases" in r.stderr
    assert not (tmp_path / "zoo").exists()
    inline = _subprocess(["zoo", "build", "--config", config.read_text(), "--output", str(tmp_path / "zoo")])
    assert inline.returncode == 2 and "aliases" in inline.stderr and "Traceback" not in inline.stderr


def test_billion_laughs_in_a_run_config_is_refused_by_evaluate(tmp_path: Path) -> None:
    from zooprobe.core.files import read_yaml
    from zooprobe.errors import InvalidInputError

    path = tmp_path / "config.yaml"
    path.write_text("task: accuracy\ntargets:\n" + _LAUGHS)
    start = time.monotonic()
    with pytest.raises(InvalidInputError, match="aliases"):
        read_yaml(path, "run configuration")  # what `evaluate` reads a run folder's config.yaml with
    assert time.monotonic() - start < 5


# --------------------------------------------------------------------------------- 3./4. JSON
_DEEP = "[" * 200_000 + "]" * 200_000


def test_deeply_nested_json_is_an_error_not_a_recursion_error(tmp_path: Path) -> None:
    from zooprobe.core.files import read_json
    from zooprobe.errors import InvalidInputError

    path = tmp_path / "config.json"
    path.write_text(_DEEP)
    with pytest.raises(InvalidInputError, match="nested too deeply"):
        read_json(path, "head config")


def test_deeply_nested_layout_is_a_clear_error(tmp_path: Path) -> None:
    weights = tmp_path / "w.npy"
    np.save(weights, np.zeros((2, WIDTH), dtype=np.float32))
    _, meta = _flat_inputs(tmp_path)
    layout = tmp_path / "layout.json"
    layout.write_text(_DEEP)
    r = run_cli(
        "zoo", "import-flat", weights, "--layout", layout, "--metadata", meta, "--output", tmp_path / "zoo"
    )
    r.assert_clear_error(str(layout), "nested too deeply")


@pytest.mark.parametrize("manifest", [_DEEP, "[1, 2, 3]"])
def test_a_manifest_that_is_not_an_object(manifest: str, tiny_zoo: Path, tmp_path: Path) -> None:
    import shutil

    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    (zoo / "zooprobe_manifest.json").write_text(manifest)
    r = run_cli("zoo", "summary", zoo)
    r.assert_clear_error("zooprobe_manifest.json")


# --------------------------------------------------------------------------------- 5. unknown config key
def test_zoo_build_config_with_an_unknown_key_names_it(tmp_path: Path) -> None:
    config = tmp_path / "build.yaml"
    config.write_text("preset: tiny\nn_modles: 4\n")
    r = run_cli("zoo", "build", "--config", config, "--output", tmp_path / "zoo")
    r.assert_clear_error(str(config), "'n_modles'", "allowed keys", "n_models", "optimizers")
    assert not (tmp_path / "zoo").exists()


# --------------------------------------------------------------------------------- 6. full disk
_ENOSPC = (
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
)


def test_a_full_disk_while_saving_is_an_os_error_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zooprobe.core.tensorfile import read_state, save_state

    path = tmp_path / "checkpoints" / "last.safetensors"
    save_state(path, {"w": torch.ones(3)}, {"epoch": 1})
    before = snapshot(tmp_path)

    def full(*args: object, **kwargs: object) -> None:
        raise SafetensorError(_ENOSPC)

    monkeypatch.setattr(safetensors.torch, "serialize_file", full)
    with pytest.raises(OSError, match="No space left on device") as info:
        save_state(path, {"w": torch.zeros(3)}, {"epoch": 2})
    assert info.value.errno == 28 and info.value.filename == str(path)
    assert_unchanged(before, tmp_path)  # the previous checkpoint intact, no temporary file left
    assert read_state(path)[1] == {"epoch": 1}


def test_a_full_disk_during_train_is_a_one_line_error(
    head_zoo: Path, head_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise SafetensorError(_ENOSPC)

    monkeypatch.setattr(safetensors.torch, "serialize_file", full)
    r = run_cli("train", "--task", "accuracy", "--zoo", head_zoo, "--encoder", head_encoder, "--output",
                tmp_path / "run", "--optim.epochs", "1", "--progress", "false")  # fmt: skip
    r.assert_clear_error("no space left on device", "safetensors")


# --------------------------------------------------------------------------------- 7. one writer at a time
def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    from zooprobe.core.outputs import LOCK

    out = tmp_path / "zoo"
    build = [sys.executable, "-m", "zooprobe", "zoo", "build", "--preset", "tiny", "--n_models", "16"]
    first = subprocess.Popen(
        [*build, "--output", str(out), "--progress", "false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (out / LOCK).is_file() or not (out / LOCK).read_text().strip():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first build never took the lock"
            time.sleep(0.05)
        # frozen while it holds the lock (SIGSTOP): the second writer surely meets a running first one
        first.send_signal(signal.SIGSTOP)
        try:
            second = _subprocess([*build[3:], "--output", str(out)])
        finally:
            first.send_signal(signal.SIGCONT)
        assert second.returncode == 2, second.stderr
        assert "Traceback" not in second.stderr
        assert str(out) in second.stderr and f"PID {first.pid}" in second.stderr, second.stderr
        assert first.wait(timeout=300) == 0, first.communicate()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    parts = sorted(p.name for p in (out / "data").glob("*.parquet"))
    assert parts and not (out / ".parts").exists()
    # the lock is released with the process: the same build again is a plain resume of a finished zoo
    again = _subprocess(
        ["zoo", "build", "--preset", "tiny", "--n_models", "16", "--output", str(out)], timeout=120
    )
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("command", ["merge", "import-flat"])
def test_a_second_merge_or_import_into_a_folder_in_use_is_refused(
    command: str, tiny_shards: tuple[Path, Path], flat_inputs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """While one process writes a zoo folder (here: this test, holding its lock as ``zoo merge`` would), a
    real second ``zoo merge`` / ``zoo import-flat`` into it is refused at once, naming the folder and the
    holder's PID, and writes nothing there."""
    from zooprobe.core.outputs import claim_output, holding_outputs_block
    from zooprobe.zoo.store import ZOO_OUTPUT

    out = tmp_path / "zoo"
    weights, layout, meta = flat_inputs
    args = {
        "merge": ["zoo", "merge", str(out), *map(str, tiny_shards)],
        "import-flat": ["zoo", "import-flat", str(weights), "--layout", str(layout), "--metadata", str(meta),
                        "--output", str(out), "--progress", "false"],
    }[command]  # fmt: skip
    with holding_outputs_block():
        claim_output(out, ZOO_OUTPUT)
        before = snapshot(out)
        second = _subprocess(args, timeout=120)
        assert_unchanged(before, out)
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stderr
    assert str(out) in second.stderr and f"PID {os.getpid()}" in second.stderr, second.stderr


def test_a_stale_lock_file_does_not_block(tmp_path: Path) -> None:
    from zooprobe.core.outputs import LOCK, OutputKind, claim_output, holding_outputs_block

    kind = OutputKind("thing", ("*.txt",))
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text("999999\n")  # left by a killed process: no flock is held on it
    with holding_outputs_block():
        assert claim_output(out, kind) == "empty"
        assert (out / LOCK).read_text().strip() == str(os.getpid())
