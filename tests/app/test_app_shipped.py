"""The app on the shipped heads (its default): every shipped head's predictions, the nearest corpus models,
a Hub model id instead of an upload (against the loopback Hub), and the one-line error offline."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from hub_clients import _client
from hub_server import HubServer
from zooprobe.app.core import audit_file, audit_hub_model, audits_html, load_app_heads
from zooprobe.heads.shipped import SHIPPED_HEADS
from zooprobe.inference import load_heads, predict_files_by_head


def _net(path: Path) -> Path:
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.Tanh(), torch.nn.Linear(24, 5))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def test_the_app_defaults_to_the_shipped_heads_and_lists_nearest_corpus_models(tmp_path: Path) -> None:
    heads = load_app_heads(None)
    assert heads.sources == list(SHIPPED_HEADS) and heads.reference is not None
    assert all(c.metadata is not None for c in heads.corpora)  # the plots have the corpus without its zoo
    path = _net(tmp_path / "upload.safetensors")
    audit = audit_file(heads, path, name="net.safetensors")
    assert audit.error is None and len(audit.results) == len(SHIPPED_HEADS)
    # the page's prediction is the command line's
    cli = predict_files_by_head(load_heads(list(SHIPPED_HEADS)), [path])
    for on_page, by_cli in zip(audit.results, cli, strict=True):
        assert on_page["targets"] == by_cli[0]["targets"] and on_page["in_domain"] == by_cli[0]["in_domain"]
    assert audit.nearest is not None and len(audit.nearest) == 5
    assert audit.nearest["similarity"].is_monotonic_decreasing
    page = audits_html(heads, [audit])
    assert "nearest corpus models" in page and page.count('class="zp-neighbour"') == 5
    assert str(audit.nearest["model_id"].iloc[0]) in page


def test_a_hub_model_id_is_predicted_like_an_upload(hub_server: HubServer, tmp_path: Path) -> None:
    path = _net(tmp_path / "model.safetensors")
    root = tmp_path / "app-tmp"
    result = _client(
        hub_server,
        f"""
        from huggingface_hub import HfApi
        from zooprobe.app.core import audit_file, audit_hub_model, load_app_heads
        api = HfApi(token={hub_server.token!r})
        api.create_repo("someone/tiny-net")
        api.upload_file(path_or_fileobj={str(path)!r}, path_in_repo="model.safetensors",
                        repo_id="someone/tiny-net")
        heads = load_app_heads(None)
        root = Path({str(root)!r})
        root.mkdir()
        hub = audit_hub_model(heads, "someone/tiny-net", root)
        local = audit_file(heads, {str(path)!r})
        missing = audit_hub_model(heads, "someone/nothing-here", root)
        print("RESULT " + json.dumps({{
            "name": hub.name, "error": hub.error,
            "same": [a["targets"] == b["targets"] for a, b in zip(hub.results, local.results)],
            "missing": missing.error,
            "left": [str(p) for p in root.rglob("*")],
        }}))
        """,
        tmp_path / "hf_home",
    )
    assert result["error"] is None and result["name"] == "someone/tiny-net/model.safetensors"
    assert result["same"] == [True] * len(SHIPPED_HEADS)
    assert result["missing"].startswith("zooprobe: error:") and "not found on the Hub" in result["missing"]
    assert "Traceback" not in result["missing"]
    assert all(not Path(p).is_file() for p in result["left"])  # downloads removed after the prediction


def test_a_hub_id_offline_or_malformed_is_a_one_line_error(tmp_path: Path) -> None:
    heads = load_app_heads(None)
    offline = audit_hub_model(heads, "someone/tiny-net", tmp_path)  # the test process runs offline
    assert offline.error.startswith("zooprobe: error:") and "not in the local cache" in offline.error
    bad = audit_hub_model(heads, "../../etc/passwd", tmp_path)
    assert "not a Hub model repo id" in bad.error and bad.results is None
