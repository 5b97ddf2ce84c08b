"""One place for the guards (issue 28): every reader goes through `zooprobe.core.guards`.

- The source is enumerated: a raw loader (``torch.load``, ``np.load``, ``pickle.load``, ``yaml.safe_load``,
  ``safe_open``, ...) called anywhere outside the guard modules fails the test, naming the line.
- The readers are run: ``torch.load`` and ``np.load`` are watched while predict and every importer read real
  files; each call must come from a guard module.
- The memory bomb of the issue (``torch.zeros(1).expand(40000, 40000)``, 1.3 kB on disk, 6.4 GB copied) is
  refused by every torch reader under an address-space limit, in a subprocess, before anything is copied.
- Paths named by metadata (``..``, absolute, symbolic links out of the folder) and ``.npy`` headers that lie
  are refused by the guards with one line naming the file.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import assert_unchanged, run_cli, snapshot
from safetensors.torch import save_file

import zooprobe
from files import WIDTH, json_layout, metadata_rows, write_csv
from zooprobe.bench.imports import write_synthetic_cnnzoo
from zooprobe.core import guards
from zooprobe.errors import InvalidInputError

SRC = Path(zooprobe.__file__).parent
QUIET = ("--progress", "false")

#: Calls only a guard module may make (dotted as written in the source).
RAW_LOADERS = {
    "torch.load", "torch.jit.load", "np.load", "numpy.load", "np.fromfile", "pickle.load", "pickle.loads",
    "pickle.Unpickler", "dill.load", "joblib.load", "pd.read_pickle", "pandas.read_pickle", "yaml.load",
    "yaml.safe_load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.safe_load_all",
    "safe_open", "safetensors.safe_open", "safetensors.torch.load", "safetensors.torch.load_file",
    "load_file", "json.load", "marshal.loads", "shelve.open",
}  # fmt: skip
#: ``json.loads`` reads only zooprobe's own bytes in these modules (a payload it just encoded, its worker
#: pipes, the metadata of Parquet parts it wrote); everywhere else JSON goes through `guards.parse_json`.
OWN_JSON = {
    "zooprobe.zoo.flat", "zooprobe.zoo.importers.writer", "zooprobe.zoo.workers",
    "zooprobe.zoo.cohort_worker", "zooprobe.zoo.build",
    "zooprobe.cli.encoder", "zooprobe.cli.train", "zooprobe.bench.transfer",
}  # fmt: skip
#: ``yaml.safe_load`` parses only YAML zooprobe itself just dumped here (a card header it renders, which may
#: hold anchors of its own): everywhere else YAML goes through `guards.load_yaml_text` (aliases refused).
OWN_YAML = {"zooprobe.hub"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        yield ".".join(rel.parts).removesuffix(".__init__"), path


def test_no_reader_bypasses_the_guards() -> None:
    """A user expects every file zooprobe did not write to be read by the guards. Any raw loader call
    outside `guards.GUARD_MODULES`, or ``allow_pickle=True`` anywhere, fails here with its line."""
    bypasses = []
    for module, path in _modules():
        if module in guards.GUARD_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            where = f"{path.relative_to(SRC.parent)}:{node.lineno}: {name}"
            own = {"json.loads": module in OWN_JSON, "yaml.safe_load": module in OWN_YAML}.get(name, False)
            if (name in RAW_LOADERS and not own) or (name == "json.loads" and not own):
                bypasses.append(where)
            pickles = [k for k in node.keywords if k.arg == "allow_pickle"]
            if any(getattr(k.value, "value", False) is True for k in pickles):
                bypasses.append(where + "(allow_pickle=True)")
    assert not bypasses, "readers bypassing zooprobe.core.guards:\n" + "\n".join(bypasses)


def test_the_guard_modules_exist_and_export_the_readers() -> None:
    """The guard module is the documented entry point: each guard module is importable and `guards`
    re-exports every safe reader."""
    for module in guards.GUARD_MODULES:
        __import__(module)
    for name in ("read_checkpoint", "read_safetensors_header", "load_npy", "read_yaml", "read_json",
                 "contained_path", "check_inside", "refuse_pickle"):  # fmt: skip
        assert callable(getattr(guards, name)) and name in guards.__all__


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The module of each caller of ``torch.load`` / ``np.load`` while the test runs."""
    callers: list[str] = []
    for owner, attr in ((torch, "load"), (np, "load")):
        real = getattr(owner, attr)

        def spy(*args: object, _real: object = real, **kwargs: object) -> object:
            callers.append(sys._getframe(1).f_globals.get("__name__", "?"))
            return _real(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(owner, attr, spy)
    return callers


def _state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in torch.nn.Linear(3, 2).state_dict().items()}


@pytest.mark.parametrize("reader", ["import-folder", "import-modelzoos", "import-flat", "import-cnnzoo"])
def test_every_importer_reads_through_the_guards(reader: str, tmp_path: Path, watched: list[str]) -> None:
    """Each importer, run on good files, loads torch and numpy files only through a guard module."""
    out = tmp_path / "zoo"
    if reader == "import-folder":
        folder = tmp_path / "ckpts"
        folder.mkdir()
        torch.save(_state_dict(), folder / "a.pt")
        meta = write_csv(tmp_path / "m.csv", [{"file": "a.pt", "test_accuracy": 0.5}])
        args: tuple[str | Path, ...] = ("import-folder", folder, "--metadata", meta)
    elif reader == "import-modelzoos":
        run = tmp_path / "zoos" / "run_000" / "checkpoint_000001"
        run.mkdir(parents=True)
        (run.parent / "params.json").write_text(json.dumps({"seed": 0}))
        (run.parent / "result.json").write_text(json.dumps({"training_iteration": 1, "test_acc": 0.5}) + "\n")
        torch.save(_state_dict(), run / "checkpoints")
        args = ("import-modelzoos", tmp_path / "zoos")
    elif reader == "import-flat":
        rows = metadata_rows(2)
        weights = np.random.default_rng(0).normal(size=(len(rows), WIDTH)).astype(np.float32)
        np.save(tmp_path / "w.npy", weights)
        args = ("import-flat", tmp_path / "w.npy", "--layout", json_layout(tmp_path / "l.json"),
                "--metadata", write_csv(tmp_path / "m.csv", rows))  # fmt: skip
    else:
        args = ("import-cnnzoo", write_synthetic_cnnzoo(tmp_path / "cifar10", n_runs=2, steps=(86,)))
    r = run_cli("zoo", *args, "--output", out, *QUIET)
    assert r.code == 0, r.err
    assert watched, "the reader loaded no torch or numpy file"
    assert set(watched) <= set(guards.GUARD_MODULES), watched


def test_predict_reads_through_the_guards(run_dir: Path, tmp_path: Path, watched: list[str]) -> None:
    """``zooprobe predict`` on a ``.pt`` file: read only through a guard module."""
    path = tmp_path / "model.pt"
    torch.save(_state_dict(), path)
    run_cli("predict", "--head", run_dir, path)  # the architecture may not suit the head: only reading counts
    assert watched and set(watched) <= set(guards.GUARD_MODULES), watched


# ------------------------------------------------------------------------------------------ the memory bomb
BOMB_SCRIPT = textwrap.dedent(
    """
    import json, os, resource, sys
    from pathlib import Path
    import torch
    from zooprobe.cli import main
    import zooprobe.inference, zooprobe.zoo.importers, zooprobe.zoo.flat  # imported before the cap

    root, run_dir = Path(sys.argv[1]), sys.argv[2]
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    cap = pages * os.sysconf("SC_PAGE_SIZE") + 1_500_000_000  # 1.5 GB more: the bomb copied is 6.4 GB
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    results = {}
    for name, args in json.loads(sys.argv[3]).items():
        import contextlib, io
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(args)
            except BaseException as e:  # a crash is a finding, reported as such
                code, err = -1, io.StringIO(f"CRASH {type(e).__name__}: {e}")
        results[name] = [code, err.getvalue()]
    print(json.dumps(results))
    """
)


def test_the_issue_memory_bomb_is_refused_by_every_reader_under_a_memory_limit(
    run_dir: Path, tmp_path: Path
) -> None:
    """The 1.3 kB ``.pt`` of issue 28 (a stride-0 ``torch.zeros(1).expand(40000, 40000)``, 6.4 GB when
    copied), plain, in a training-checkpoint container and in the legacy format, given to predict,
    import-folder and import-modelzoos in a process limited to 1.5 GB more address space: each is refused by
    the size check ("broadcast or overlapping view"), never by running out of memory."""
    bomb = torch.zeros(1).expand(40000, 40000)
    folder = tmp_path / "ckpts"
    folder.mkdir()
    torch.save({"w": bomb}, folder / "bomb.pt")
    torch.save({"state_dict": {"w": bomb}, "epoch": 1}, folder / "container.ckpt")
    torch.save({"w": bomb}, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    assert all(p.stat().st_size < 2000 for p in folder.iterdir())
    run = tmp_path / "zoos" / "run_000" / "checkpoint_000001"
    run.mkdir(parents=True)
    (run.parent / "params.json").write_text(json.dumps({"seed": 0}))
    (run.parent / "result.json").write_text(json.dumps({"training_iteration": 1, "test_acc": 0.5}) + "\n")
    torch.save({"w": bomb}, run / "checkpoints")
    cases: dict[str, list[str]] = {}
    for name in ("bomb.pt", "container.ckpt", "legacy.pt"):
        cases[f"predict {name}"] = ["predict", "--head", str(run_dir), str(folder / name)]
        meta = write_csv(tmp_path / f"{name}.csv", [{"file": name, "test_accuracy": 0.5}])
        cases[f"import-folder {name}"] = ["zoo", "import-folder", str(folder), "--metadata", str(meta),
                                          "--output", str(tmp_path / f"zoo-{name}"), *QUIET]  # fmt: skip
    cases["import-modelzoos"] = ["zoo", "import-modelzoos", str(tmp_path / "zoos"), "--output",
                                 str(tmp_path / "zoo-mz"), *QUIET]  # fmt: skip
    before = snapshot(folder)
    proc = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, str(tmp_path), str(run_dir), json.dumps(cases)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (code, err) in results.items():
        assert code == 2, f"{name}: exit {code}: {err}"
        assert "broadcast or overlapping view" in err and "6.4 GB" in err, f"{name}: {err}"
        assert "out of memory" not in err.lower() and "Traceback" not in err, f"{name}: {err}"
    assert len(results) == len(cases)
    assert_unchanged(before, folder)
    assert not any((tmp_path / f"zoo-{n}").exists() for n in ("bomb.pt", "container.ckpt", "legacy.pt"))


# ------------------------------------------------------------------------------------------ paths
@pytest.mark.parametrize(
    "name",
    ["../outside.pt", "/etc/passwd", "sub/../../outside.pt", "C:\\Windows\\model.pt", "..\\outside.pt", ""],
    ids=["dotdot", "absolute", "nested dotdot", "drive", "backslash dotdot", "empty"],
)
def test_contained_path_refuses_names_that_leave_the_folder(name: str, tmp_path: Path) -> None:
    """A metadata cell naming a file outside the folder is refused, naming the cell's text."""
    with pytest.raises(InvalidInputError, match=r"relative|no file named"):
        guards.contained_path(tmp_path, name)


def test_contained_path_follows_symbolic_links(tmp_path: Path) -> None:
    """A link inside the folder to a file inside is fine; a link (file or folder) leading out is refused."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "a.pt").write_bytes(b"x")
    (tmp_path / "out" / "secret.pt").write_bytes(b"x")
    (tmp_path / "in" / "ok.pt").symlink_to(tmp_path / "in" / "a.pt")
    (tmp_path / "in" / "link.pt").symlink_to(tmp_path / "out" / "secret.pt")
    (tmp_path / "in" / "dir").symlink_to(tmp_path / "out", target_is_directory=True)
    assert guards.contained_path(tmp_path / "in", "ok.pt") == tmp_path / "in" / "ok.pt"
    for name in ("link.pt", "dir/secret.pt"):
        with pytest.raises(InvalidInputError, match="symbolic link"):
            guards.contained_path(tmp_path / "in", name)


@pytest.mark.parametrize(
    "name",
    ["../outside.safetensors", "/ABS/outside.safetensors", "sub/../../outside.safetensors",
     "linked/outside.safetensors"],
    ids=["dotdot", "absolute", "nested dotdot", "folder symlink out"],
)  # fmt: skip
def test_import_folder_refuses_metadata_paths_out_of_the_folder(name: str, tmp_path: Path) -> None:
    """``import-folder`` with a metadata row naming a file outside the checkpoint folder (traversal, an
    absolute path, a linked folder leading out): the row and the path are named, nothing is read or
    written, the outside file is untouched."""
    outside = tmp_path / "outside.safetensors"
    save_file(_state_dict(), str(outside))
    folder = tmp_path / "ckpts"
    (folder / "sub").mkdir(parents=True)
    (folder / "linked").symlink_to(tmp_path, target_is_directory=True)
    save_file(_state_dict(), str(folder / "good.safetensors"))
    name = name.replace("/ABS", str(tmp_path))
    meta = write_csv(tmp_path / "meta.csv", [{"file": "good.safetensors", "test_accuracy": 0.5},
                                             {"file": name, "test_accuracy": 0.6}])  # fmt: skip
    before = snapshot(tmp_path)
    r = run_cli("zoo", "import-folder", folder, "--metadata", meta, "--output", tmp_path / "zoo", *QUIET)
    r.assert_clear_error("row 2", "inside")
    assert_unchanged(before, tmp_path)


def test_import_modelzoos_refuses_a_checkpoint_linked_out_of_the_root(tmp_path: Path) -> None:
    """A Model Zoos run whose ``checkpoints`` file is a symbolic link to a file outside the root: that run
    is named and refused (the guards' `check_inside`), the outside file is not read."""
    secret = tmp_path / "secret.pt"
    torch.save(_state_dict(), secret)
    for m in range(2):
        ckpt = tmp_path / "zoos" / f"run_{m:03d}" / "checkpoint_000001"
        ckpt.mkdir(parents=True)
        (ckpt.parent / "params.json").write_text(json.dumps({"seed": m}))
        result = {"training_iteration": 1, "test_acc": 0.5}
        (ckpt.parent / "result.json").write_text(json.dumps(result) + "\n")
        if m == 0:
            torch.save(_state_dict(), ckpt / "checkpoints")
        else:
            (ckpt / "checkpoints").symlink_to(secret)
    r = run_cli("zoo", "import-modelzoos", tmp_path / "zoos", "--output", tmp_path / "zoo", *QUIET)
    r.assert_clear_error("run_001", "outside", "symbolic link")
    assert not (tmp_path / "zoo").exists()


# ------------------------------------------------------------------------------------------ .npy headers
def _npy_with_header(path: Path, shape: tuple[int, ...], payload: bytes = b"") -> Path:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(payload)
    return path


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("huge declared shape", ("declares", "holds only", "refused before reading")),
        ("truncated", ("declares", "holds only")),
        ("empty file", ("not a readable .npy",)),
        ("not npy", ("not a readable .npy",)),
    ],
)
def test_import_flat_refuses_a_lying_npy(case: str, fragments: tuple[str, ...], tmp_path: Path) -> None:
    """``import-flat`` on a ``.npy`` whose header lies about its size, or that is empty or not a ``.npy``:
    refused from the header alone, naming the file (nothing allocated on the header's word)."""
    rows = metadata_rows(2)
    weights = tmp_path / "w.npy"
    if case == "huge declared shape":
        _npy_with_header(weights, (1_000_000, 1_000_000))
    elif case == "truncated":
        _npy_with_header(weights, (len(rows), WIDTH), b"\0" * 16)
    elif case == "empty file":
        weights.write_bytes(b"")
    else:
        weights.write_text("w1,w2\n1,2\n")
    r = run_cli("zoo", "import-flat", weights, "--layout", json_layout(tmp_path / "l.json"), "--metadata",
                write_csv(tmp_path / "m.csv", rows), "--output", tmp_path / "zoo", *QUIET)  # fmt: skip
    r.assert_clear_error(str(weights), *fragments)
    assert not (tmp_path / "zoo").exists()


def test_npz_object_arrays_are_refused_naming_the_safe_format(tmp_path: Path) -> None:
    """`guards.load_npz` (zooprobe's data cache) refuses an object array, naming the file and np.save."""
    path = tmp_path / "cache.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InvalidInputError, match=r"refused for safety.*np\.save"):
        guards.load_npz(path)
