"""The app's functions without a browser: the page's predictions are ``zooprobe predict --json``'s, bad
files give the command line's one-line errors, uploads are deleted, the figures draw the training zoo."""

from __future__ import annotations

import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from zooprobe.app import core
from zooprobe.app.config import AppConfig
from zooprobe.app.core import (
    NO_SHIPPED_HEADS,
    AppHeads,
    audit_files,
    audits_html,
    compare_html,
    document,
    load_app_heads,
    remove_uploads,
)
from zooprobe.app.plots import corpus_figure, layer_figure, reference_statistics
from zooprobe.cli import app as cli_app
from zooprobe.cli import main
from zooprobe.errors import ConfigError, ZooprobeError
from zooprobe.heads.uncertainty import DEFAULT_LEVEL
from zooprobe.tokens.statistics import featurize


@pytest.fixture(scope="module")
def heads(app_heads: list[str]) -> AppHeads:
    return load_app_heads(app_heads)


def test_page_predictions_are_predict_json(
    heads: AppHeads,
    app_heads: list[str],
    upload_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    files = [upload_files["model"], upload_files["resnet"]]
    audits = audit_files(heads, files)
    assert [a.error for a in audits] == [None, None]
    page = json.loads(json.dumps(document(heads, audits)))  # as the download writes it (strict JSON)
    monkeypatch.chdir(files[0].parent)  # the CLI names files as given: their names, like the page
    out = tmp_path / "cli.json"
    args = ["predict", "--head", app_heads[0], "--head", app_heads[1], *(f.name for f in files)]
    assert main([*args, "--json", str(out)]) == 0
    cli = json.loads(out.read_text())
    assert page == cli
    assert [h["task"] for h in page["heads"]] == ["accuracy", "hyperparameters"]
    # one head: the document of that head alone, as predict --json with one --head
    one = AppHeads(heads.sources[:1], heads.heads[:1], heads.corpora[:1])
    single = json.loads(json.dumps(document(one, audit_files(one, files[:1]))))
    assert main(["predict", "--head", app_heads[0], files[0].name, "--json", str(out)]) == 0
    assert single == json.loads(out.read_text())


def test_page_shows_domain_flags_reasons_and_predictions(
    heads: AppHeads, upload_files: dict[str, Path]
) -> None:
    files = [upload_files["model"], upload_files["resnet"]]
    model, resnet = audit_files(heads, files, show_unpredictable=True)
    assert model.results is not None and resnet.results is not None
    assert all(r["in_domain"] is True for r in model.results)
    assert all(r["in_domain"] is False for r in resnet.results)
    text = audits_html(heads, [model, resnet])
    assert text.count('data-in-domain="in"') == 2 and text.count('data-in-domain="out"') == 2
    assert "OUT OF DOMAIN" in text
    assert "input size (fan-in of the first layer) 147 outside the training zoo" in html.unescape(text)
    for name in heads.heads[0].spec.names + heads.heads[1].spec.names:
        assert f'data-target="{name}"' in text
    # the accuracy head's prediction as the CLI prints it, with its interval
    acc = model.results[0]["targets"]["test_accuracy"]
    low, high = acc["interval"]["low"], acc["interval"]["high"]
    assert f"{acc['predicted']:.4f}" in text and f"{low:.4f} - {high:.4f}" in text
    optimizer = model.results[1]["targets"]["optimizer"]
    assert f"{optimizer['predicted']}  (p = {optimizer['probability']:.3f}" in html.unescape(text)
    for source in heads.sources:
        assert source in text


def test_bad_files_give_the_cli_one_line_error(
    heads: AppHeads, upload_files: dict[str, Path], tmp_path: Path
) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a checkpoint")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    audits = audit_files(heads, [upload_files["payload"], text_file, broken])
    for audit, name in zip(audits, ("payload.pt", "notes.txt", "broken.safetensors"), strict=True):
        assert audit.results is None and audit.error is not None
        assert audit.error.startswith(f"zooprobe: error: {name}") or f" {name}" in audit.error
        assert "\n" not in audit.error and "Traceback" not in audit.error
        assert str(tmp_path) not in audit.error  # the upload's temporary path is not shown
    assert "weights_only" in audits[0].error or "refused" in audits[0].error
    assert not upload_files["marker"].exists()  # the pickle payload never ran
    page = audits_html(heads, audits)
    assert page.count('class="zp-error"') == 3 and "Traceback" not in page
    assert json.loads(json.dumps(document(heads, audits)))["heads"][0]["predictions"] == []


def test_upload_limit(heads: AppHeads, tmp_path: Path) -> None:
    big = tmp_path / "big.safetensors"
    save_file({"w": torch.zeros(2**19)}, str(big))  # 2 MiB
    (audit,) = audit_files(heads, [big], max_upload_mb=1)
    assert audit.results is None
    assert audit.error is not None and "over the page's upload limit of 1 MiB" in audit.error


def test_compare_side_by_side(heads: AppHeads, upload_files: dict[str, Path]) -> None:
    a, b = audit_files(heads, [upload_files["model"], upload_files["resnet"]])
    text = compare_html(heads, a, b)
    assert "model.safetensors" in text and "resnet.safetensors" in text
    rows = sum(len(h.spec.names) for h in heads.heads)
    assert text.count('class="zp-target"') == rows and text.count("zp-domain-row") == 2
    assert 'data-in-domain="in"' in text and 'data-in-domain="out"' in text


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_figures_show_the_training_zoo(
    heads: AppHeads, head_zoo: Path, upload_files: dict[str, Path]
) -> None:
    assert all(c.metadata is not None for c in heads.corpora)  # the zoo folder the heads name is here
    audits = audit_files(heads, [upload_files["model"], upload_files["resnet"]])
    fig = corpus_figure(heads, audits)
    titles = [ax.get_title() for ax in fig.axes]
    assert "test_accuracy: prediction in the zoo" in titles
    assert any("distance to the zoo: weight statistics" in t for t in titles)
    hist = next(ax for ax in fig.axes if ax.get_title() == "test_accuracy: prediction in the zoo")
    counted = sum(p.get_height() for p in hist.patches)
    assert counted == len(heads.corpora[0].metadata)  # every train model of the zoo is in the histogram
    assert _png(fig)[:4] == b"\x89PNG"
    # the reference statistics are the training models' own weight statistics (un-standardized)
    reference = reference_statistics(heads)
    assert reference is not None
    meta = heads.corpora[0].metadata
    from zooprobe.api import load_zoo

    train = load_zoo(head_zoo).final().split("train")
    from zooprobe.symmetry import canonical_state_dicts

    own = featurize(list(canonical_state_dicts(train.state_dicts())))  # the form training reads them in
    assert reference.shape == own.shape and len(meta) == len(train)
    np.testing.assert_allclose(np.sort(reference, axis=0), np.sort(own, axis=0), rtol=1e-6, atol=1e-6)
    layers = layer_figure(heads, audits)
    assert len(layers.axes) == 4 and "training zoo's 25-75%" in layers.get_suptitle()
    assert _png(layers)[:4] == b"\x89PNG"
    # without the zoo on this machine: the prediction alone, said so
    moved = AppHeads(heads.sources, heads.heads, [core.Corpus("elsewhere", None, "not here")] * 2)
    titles = [ax.get_title() for ax in corpus_figure(moved, audits).axes]
    assert "test_accuracy (zoo not here)" in titles


def test_uploads_are_removed_only_inside_the_upload_folder(tmp_path: Path) -> None:
    root = tmp_path / "uploads"
    (root / "abc").mkdir(parents=True)
    inside = root / "abc" / "model.safetensors"
    inside.write_bytes(b"x")
    outside = tmp_path / "mine.safetensors"
    outside.write_bytes(b"x")
    remove_uploads([inside, outside], root)
    assert not inside.exists() and not (root / "abc").exists() and root.is_dir()
    assert outside.exists()


def test_config_and_shipped_heads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = AppConfig()
    assert cfg.host == "127.0.0.1" and cfg.level == DEFAULT_LEVEL and cfg.check() is cfg
    for bad in ({"port": 0}, {"max_upload_mb": 0}, {"level": 1.5}, {"heads": []}):
        with pytest.raises(ConfigError):
            AppConfig(**bad).check()  # type: ignore[arg-type]
    monkeypatch.setattr(core, "list_shipped_heads", lambda: [])  # an installation without shipped heads
    with pytest.raises(ZooprobeError, match=NO_SHIPPED_HEADS):
        load_app_heads(None)
    before = os.environ.get("GRADIO_TEMP_DIR")
    assert main(["app", "--port", "1"]) == 2
    assert capsys.readouterr().err.strip() == f"zooprobe: error: {NO_SHIPPED_HEADS}"
    assert os.environ.get("GRADIO_TEMP_DIR") == before  # the app's upload folder setting is undone
    # without the optional extra: how to install it, not a traceback
    monkeypatch.setattr(cli_app, "has_gradio", lambda: False)
    assert main(["app", "--heads", "runs/acc"]) == 2
    assert capsys.readouterr().err.strip() == f"zooprobe: error: {cli_app.NO_GRADIO}"
