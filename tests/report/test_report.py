"""``zooprobe report``: a self-contained HTML page per finished run (all three tasks), errors, CLI."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from pathlib import Path

import pytest

from zooprobe.api import load_encoder, train
from zooprobe.cli import main
from zooprobe.errors import InvalidInputError
from zooprobe.heads.prediction_heads import HeadConfig
from zooprobe.report import write_report
from zooprobe.report.html import fmt
from zooprobe.training.config import OptimConfig, StopConfig, TrainConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TASKS = ("patterns", "accuracy", "hyperparameters")
#: Monitors other than the loss on two tasks, so the learning curves draw the two-panel layout too.
MONITORS = {"patterns": "macro_f1", "accuracy": "r2", "hyperparameters": "loss"}

#: A small head keeps the runs fast (the report and predictions do not depend on its size).
SMALL_HEAD = HeadConfig(hidden_sizes=[32], branch_hidden=16)


@pytest.fixture(scope="module")
def runs(head_zoo: Path, head_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny finished run folder per task (2 epochs each)."""
    root = tmp_path_factory.mktemp("report-runs")
    encoder = load_encoder(head_encoder)
    out = {}
    for task in TASKS:
        cfg = TrainConfig(
            task=task,  # type: ignore[arg-type]
            zoo=str(head_zoo),
            encoder=str(head_encoder),
            head=SMALL_HEAD,
            optim=OptimConfig(epochs=2, batch_size=8, lr=3e-3),
            stop=StopConfig(monitor=MONITORS[task], patience=5),
        )
        train(cfg, root / task, progress=False, encoder=encoder)
        out[task] = root / task
    return out


def _check_self_contained(text: str, folder: Path) -> None:
    """No external resource: every src is a data: URI of a PNG that is also written next to the page."""
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    sources = re.findall(r"""src=["']?([^"' >]+)""", text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources), sources
    assert not re.search(r"""(href|src)=["']?file:""", text)
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    on_disk = {p.read_bytes() for p in folder.glob("*.png")}
    assert embedded == on_disk  # the page embeds exactly the PNG files written next to it


def _check_png(path: Path) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    image = imread(path)  # decodes the whole file: a truncated or corrupt PNG raises
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.parametrize("task", TASKS)
def test_report_of_each_task(runs: dict[str, Path], task: str) -> None:
    run = runs[task]
    index = write_report(run)
    assert index == run / "report" / "index.html"
    text = index.read_text()
    _check_self_contained(text, index.parent)
    for png in index.parent.glob("*.png"):
        _check_png(png)

    metrics = json.loads((run / "metrics.json").read_text())
    table = text.split("<h2>Metrics (best checkpoint)</h2>")[1].split("</table>")[0]
    rows = {
        k: (v, t)
        for k, v, t in re.findall(r"<tr><td>([^<]+)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", table)
    }
    for split, column in (("validation", 0), ("test", 1)):
        for key, value in metrics[split].items():
            digits = 0 if key in ("n", "n_undefined") else 4
            assert rows[key][column] == (fmt(value, digits) if value is not None else "undefined"), key

    predictions = json.loads((run / "predictions" / "test.json").read_text())["targets"]
    for name, target in predictions.items():
        if target["kind"] == "continuous":
            assert (index.parent / f"scatter_{name}.png").is_file()
            assert f"{name}: predicted vs true" in text
        elif target["kind"] == "categorical":
            assert (index.parent / f"confusion_{name}.png").is_file()
            assert f"{name}: confusion matrix" in text
    if task == "patterns":
        assert (index.parent / "f1_patterns.png").is_file() and "Per-pattern F1" in text
    if task == "accuracy":
        assert "log10(" not in text  # test accuracy is not a log target
    assert (index.parent / "learning_curves.png").is_file()
    assert html.escape((run / "config.yaml").read_text()) in text
    assert "Overlap check: no evaluation model was seen" in text and "Missing targets" in text
    # where the head stands: statistics + LightGBM, trained on the same zoo and split, scored the same way
    section = text.split("Where this head stands: statistics + LightGBM on the same split</h2>")[1]
    section = section.split("</table>")[0]
    compared = re.findall(r"<tr><td>([^<]+)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", section)
    assert compared and {k for k, _, _ in compared} >= {"r2", "macro_f1", "score"} & set(metrics["test"])
    assert all(head == fmt(metrics["test"][k]) for k, head, _ in compared)
    assert any(re.fullmatch(r"-?\d+\.\d{4}", base) for _, _, base in compared)


def test_undefined_metrics_escaping_and_output_folder(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["patterns"], run, ignore=shutil.ignore_patterns("report"))
    metrics = json.loads((run / "metrics.json").read_text())
    name = next(k for k in metrics["test"] if k.startswith("f1/"))
    metrics["test"][name] = None  # what an undefined F1 (NaN) looks like in metrics.json
    (run / "metrics.json").write_text(json.dumps(metrics))
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config + "# <script>alert('x')</script> & more\n")

    index = write_report(run, tmp_path / "elsewhere")
    assert index == tmp_path / "elsewhere" / "index.html"
    assert not (run / "report").exists()
    text = index.read_text()
    val = fmt(metrics["validation"][name])
    assert f"<tr><td>{name}</td><td>{val}</td><td>undefined</td></tr>" in text
    assert "<script>" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in text
    _check_self_contained(text, index.parent)


def test_not_a_finished_run_is_a_clear_error(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such folder"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match=r"no metrics\.json, so this is not a finished run"):
        write_report(tmp_path / "empty")
    partial = tmp_path / "partial"
    shutil.copytree(runs["accuracy"], partial, ignore=shutil.ignore_patterns("predictions", "report"))
    with pytest.raises(InvalidInputError, match=r"no predictions/test\.json"):
        write_report(partial)
    (partial / "predictions").mkdir()
    (partial / "predictions" / "test.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        write_report(partial)
    assert not (tmp_path / "empty" / "report").exists()


def test_cli_report_prints_the_path(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli-report"
    assert main(["report", str(runs["accuracy"]), "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    assert (out / "index.html").is_file() and (out / "scatter_test_accuracy.png").is_file()
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "zooprobe: error:" in err and "not a finished run" in err and str(tmp_path) in err
