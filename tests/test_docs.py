"""Docs that cannot drift: every shell and Python block of README.md and docs/*.md runs here, on tiny inputs.

Each file's blocks run in order, in a fresh working folder, so a later block can use what an earlier one
made (a zoo, a run folder). The rules that make them tiny (also stated in docs/architecture.md):

- presets: ``--preset small`` / ``--preset bench`` become ``--preset tiny``, ``builtin:small`` /
  ``builtin:bench`` become ``builtin:tiny``, and the built-in default zoo and encoder are the tiny ones;
- length: ``zooprobe train`` runs 2 epochs (``--optim.epochs 2``), ``zooprobe encoder pretrain`` 1
  (``--epochs 1``), ``zooprobe bench`` fine-tunes for 1 epoch; and no head training of a block (a
  command, Python, or one a bench or `Probe` starts) runs more than 2 epochs, whatever it asks for;
- shared work: a zoo a block builds (``zooprobe zoo build``, `build_zoo`) with a configuration this
  session already built (the tiny preset is the session's `tiny_zoo`) is copied from that build into the
  block's folder first, so the command finds it finished (the path of a finished folder built again);
  building itself is tested in tests/zoo;
- placeholders: files a block names that a user brings (``my_model.safetensors``, ``other.pt``, a
  checkpoint folder ``ckpts/`` with ``meta.csv``) are made from the tiny zoo before the blocks run, and
  Python blocks see ``my_model`` / ``model`` (a tiny trained subject model) and ``models`` (three of them).

A block that cannot run in a test says so on its first line, ``# not run in tests: <why>`` (bench-sized
work, the Hub, torchrun, ``make``). Shell lines starting with ``zooprobe`` run in this process
(``zooprobe.cli.main``); any other command must be marked.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"^#\s*not run in tests?:\s*(.+)$", re.IGNORECASE)
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    path: Path
    line: int
    language: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        first = next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")
        match = SKIP.match(first)
        return match.group(1) if match else None


def blocks(path: Path) -> list[Block]:
    """The fenced ``bash``/``sh``/``shell``/``python`` blocks of a Markdown file, in order."""
    out: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        language, start = match.group(1).lower(), i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
        if language in ("bash", "sh", "shell", "python"):
            out.append(
                Block(path, start, "python" if language == "python" else "shell", "\n".join(lines[start:end]))
            )
        i = end + 1
    return out


def tiny(text: str) -> str:
    """The substitution rules of the module docs."""
    text = re.sub(r"--preset (small|bench)\b", "--preset tiny", text)
    text = re.sub(r"builtin:(small|bench)\b", "builtin:tiny", text)
    text = re.sub(r'preset="(small|bench)"', 'preset="tiny"', text)
    return text


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block (continuation lines joined, comments and blank lines dropped)."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.strip().startswith("#") else ""
        if line:
            commands.append(line)
    return commands


def zooprobe_args(command: str) -> list[str]:
    args = shlex.split(tiny(command))[1:]
    if args[:1] == ["train"] and "--optim.epochs" not in args:
        args += ["--optim.epochs", "2"]
    if args[:2] == ["encoder", "pretrain"] and "--epochs" not in args:
        args += ["--epochs", "1"]
    no_finetuning = args[1:2] in (["heads"], ["symmetry"])
    if args[:1] == ["bench"] and not no_finetuning and "--finetune_epochs" not in args:
        args += ["--finetune_epochs", "1"]
    return args


#: Head training in a block: at most this many epochs (the length rule of the module docs).
MAX_EPOCHS = 2


class BuiltZoos:
    """The zoos the blocks of this session built, by configuration (the shared-work rule)."""

    def __init__(self, root: Path, tiny_zoo: Path) -> None:
        self.root, self.folders = root, {}
        from zooprobe.zoo.space import ZooConfig

        self.folders[self.key(ZooConfig(preset="tiny"), None, None)] = tiny_zoo

    @staticmethod
    def key(config: object, shard: str | None, row_group_size: int | None) -> str:
        import json

        resolved = config.resolved().to_dict()  # type: ignore[attr-defined]
        return json.dumps([resolved, shard or None, row_group_size], sort_keys=True, default=str)

    def build_zoo(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def build(config: Any, output: str | Path, shard: str | None = None, **kwargs: Any) -> Any:
            key, out = self.key(config, shard, kwargs.get("row_group_size")), Path(output)
            if key in self.folders and not out.exists() and not kwargs.get("overwrite"):
                shutil.copytree(self.folders[key], out, symlinks=True)
            report = real(config, output, shard=shard, **kwargs)
            if key not in self.folders and report.finalized:
                self.folders[key] = self.root / f"zoo-{len(self.folders)}"
                shutil.copytree(out, self.folders[key], symlinks=True)  # blocks may change theirs later
            return report

        return build


@pytest.fixture(scope="session")
def built_zoos(tmp_path_factory: pytest.TempPathFactory, tiny_zoo: Path) -> BuiltZoos:
    return BuiltZoos(tmp_path_factory.mktemp("docs-zoos"), tiny_zoo)


@pytest.fixture
def docs_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_zoo: Path, built_zoos: BuiltZoos
) -> Path:
    """A working folder with the placeholders of the module docs, and tiny built-in defaults."""
    import json
    from dataclasses import replace

    import torch
    from safetensors.torch import save_file

    import zooprobe.api as api
    import zooprobe.zoo.build as build
    from zooprobe.zoo.store import Zoo

    real_builtin = api.builtin_zoo
    monkeypatch.setattr(api, "builtin_zoo", lambda preset="small", progress=True: real_builtin("tiny", False))
    monkeypatch.setattr(api, "DEFAULT_ENCODER_PRESET", "tiny")
    monkeypatch.setattr(api, "DEFAULT_ENCODER_ZOO", "builtin:tiny")

    def short(config: Any) -> Any:
        if config.optim.epochs <= MAX_EPOCHS:
            return config
        return replace(config, optim=replace(config.optim, epochs=MAX_EPOCHS))

    # every head training (`api.train`) checks its run folder, then fits: both see the shortened config, so
    # a run trained again (a bench re-scoring it) matches the config it recorded
    real_check, real_fit = api.check_run_output, api.fit
    monkeypatch.setattr(api, "check_run_output", lambda output, c, *a: real_check(output, short(c), *a))
    monkeypatch.setattr(api, "fit", lambda c, *a, **k: real_fit(short(c), *a, **k))
    monkeypatch.setattr(build, "build_zoo", built_zoos.build_zoo(build.build_zoo))
    monkeypatch.chdir(tmp_path)
    zoo = Zoo.open(tiny_zoo).final()
    sd = zoo.state_dict(0)
    save_file(sd, tmp_path / "my_model.safetensors", metadata={"order": json.dumps(list(sd))})
    torch.save(zoo.state_dict(1), tmp_path / "other.pt")
    (tmp_path / "ckpts").mkdir()
    rows = ["file,test_accuracy,optimizer,split"]
    for i in range(len(zoo)):
        save_file(zoo.state_dict(i), tmp_path / "ckpts" / f"m{i}.safetensors")
        meta = zoo.metadata().iloc[i]
        rows.append(f"m{i}.safetensors,{meta['test_accuracy']},{meta['optimizer']},{meta['split']}")
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_code_block_runs(path: Path, docs_world: Path, tiny_zoo: Path) -> None:
    from zooprobe.cli import main
    from zooprobe.zoo.store import Zoo

    zoo = Zoo.open(tiny_zoo).final()
    namespace: dict[str, object] = {
        "__name__": "__docs__",
        "my_model": zoo.model(0),
        "model": zoo.model(0),
        "models": [zoo.model(i) for i in range(3)],
    }
    for block in blocks(path):
        if block.skip_reason:
            continue
        if block.language == "python":
            try:
                exec(compile(tiny(block.code), block.where, "exec"), namespace)  # the docs' own code
            except Exception as e:
                pytest.fail(f"{block.where}: the Python block fails: {type(e).__name__}: {e}")
            continue
        for command in shell_commands(block.code):
            if not command.startswith("zooprobe "):
                pytest.fail(
                    f"{block.where}: `{command}` is not a zooprobe command; mark the block "
                    "'# not run in tests: <why>' if it cannot run here"
                )
            code = main(zooprobe_args(command))
            assert code == 0, f"{block.where}: `{command}` exited with {code}"


def test_the_docs_have_blocks_and_every_skip_says_why() -> None:
    found = [b for path in DOCS for b in blocks(path)]
    assert len(found) >= 20
    for block in found:
        if block.skip_reason is not None:
            assert len(block.skip_reason) > 5, f"{block.where}: say why the block is not run"
