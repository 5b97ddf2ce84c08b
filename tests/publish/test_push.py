"""Publishing a head-training run on a real loopback Hub (tests/hub_server.py), then loading it by repo id.

As in tests/test_hub.py, every client-side step runs in a fresh Python process (`_client`) with the
server's endpoint, its own ``HF_HOME`` and a token only where the scenario has one; the token must never
appear in any output or file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hub_clients import _assert_no_token_in_files, _client, _hashes
from hub_server import HubServer
from zooprobe.api import train
from zooprobe.errors import ZooprobeError
from zooprobe.publish.card import NOT_SCORES
from zooprobe.publish.push import push_run
from zooprobe.training.config import OptimConfig, StopConfig, TrainConfig

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))  # binary content, as report plots are


def _train_run(head_zoo: Path, head_encoder: Path, out: Path, epochs: int = 3, **kw: object) -> Path:
    cfg = TrainConfig(
        task="hyperparameters",
        zoo=str(head_zoo),
        encoder=str(head_encoder),
        optim=OptimConfig(epochs=epochs, batch_size=8, lr=3e-3),
        stop=StopConfig(patience=5),
    )
    train(cfg, out, progress=False, **kw)  # type: ignore[arg-type]
    return out


def _finite_test_metrics(run: Path) -> dict[str, float]:
    test = json.loads((run / "metrics.json").read_text())["test"]
    return {
        k: v
        for k, v in test.items()
        if k not in NOT_SCORES and isinstance(v, int | float) and math.isfinite(v)
    }


def test_push_run_then_load_by_repo_id(
    hub_server: HubServer, head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    """Encoder and run pushed (CLI), head loaded from the Hub in a fresh process; card, commit, faults."""
    from huggingface_hub import ModelCard

    run = _train_run(head_zoo, head_encoder, tmp_path / "run")
    (run / "report").mkdir()  # what `zooprobe report RUN_DIR` leaves: index.html and its plots
    (run / "report" / "index.html").write_text("<html><body><img src='loss.png'></body></html>")
    (run / "report" / "loss.png").write_bytes(PNG)
    before = _hashes(run)
    hub_server.fail_commits(1, repo_id="tester/head")
    hub_server.stall_commits(4.0, repo_id="tester/slow")
    pushed = _client(
        hub_server,
        f"""
        import contextlib, io, warnings
        from zooprobe.cli import main
        from zooprobe.publish.push import HeadEncoderWarning, push_run
        from zooprobe.hub import push_folder

        run = {str(run)!r}
        enc_sha = push_folder({str(head_encoder)!r}, "tester/enc", repo_type="model", commit_message="enc",
                              ignore_patterns=["last/", "training_state.safetensors"])
        push = ["push", run, "--repo_id", "tester/head", "--encoder_repo_id", "tester/enc"]
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc_failed = main(push)
        rc_ok = main(push)
        start = time.monotonic()
        timed_out = error_of(lambda: push_run(run, "tester/slow", encoder_repo_id="tester/enc", timeout=1.0))
        timeout_s = time.monotonic() - start
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            push_run(run, "tester/head-local")
        missing_encoder = error_of(lambda: push_run(run, "tester/x", encoder_repo_id="tester/no-such-enc"))
        # the natural path: train on a Hub encoder and push at the end of training
        rc_train = main(["train", "--task", "accuracy", "--zoo", {str(head_zoo)!r}, "--encoder", "tester/enc",
                         "--optim.epochs", "2", "--optim.batch_size", "8", "--progress", "false",
                         "--output", {str(tmp_path / "run2")!r}, "--push_to_hub", "tester/acc-head"])
        print("RESULT " + json.dumps({{
            "enc_sha": enc_sha, "failure": err.getvalue() + out.getvalue(),
            "rc_failed": rc_failed, "rc_ok": rc_ok, "rc_train": rc_train,
            "timed_out": timed_out, "timeout_s": timeout_s, "missing_encoder": missing_encoder,
            "warnings": [str(w.message) for w in caught if issubclass(w.category, HeadEncoderWarning)],
        }}))
        """,
        tmp_path / "hf_home",
        token=hub_server.token,
    )
    output, failure = pushed["_output"], pushed["failure"]

    # HTTP 500 on the commit: a clear error, no commit, the run folder unchanged; the retry succeeds.
    assert pushed["rc_failed"] == 2 and "HTTP 500" in failure and "tester/head" in failure
    assert "retry" in failure and "head pushed to" not in failure
    assert pushed["rc_ok"] == 0 and "head pushed to" in output
    assert _hashes(run) == before  # same files, same bytes: pushing only reads the run folder

    # One commit holds every file of the run that loaders and readers need (and nothing else).
    history = hub_server.history("tester/head")
    assert len(history) == 2  # the repo's initial commit + the one push (the failed one made none)
    files = hub_server.files("tester/head")
    expected = {
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
        "config.yaml",
        "metrics.json",
        "predictions/test.json",
        "predictions/validation.json",
        "report/index.html",
        "report/loss.png",
        "trust.json",  # the head's applicability domain, calibration and reliability
        "domain.safetensors",
        "content_hash.json",  # sha256 of the head's files as pushed (config.json names the Hub encoder)
        *(f"tensorboard/{p.name}" for p in (run / "tensorboard").iterdir()),
    }
    assert set(files) == expected and set(history[-1].files) == expected
    assert files["model.safetensors"] == (run / "head" / "model.safetensors").read_bytes()
    assert files["report/loss.png"] == PNG and files["metrics.json"] == (run / "metrics.json").read_bytes()
    assert files["config.yaml"] == (run / "config.yaml").read_bytes()
    pushed_cfg, run_cfg = json.loads(files["config.json"]), json.loads((run / "head/config.json").read_text())
    assert pushed_cfg["encoder"]["source"] == "tester/enc"
    assert pushed_cfg["encoder"]["revision"] == pushed["enc_sha"]  # pinned to the checked commit
    assert run_cfg["encoder"]["source"] == str(head_encoder)  # the run's own config is untouched
    del pushed_cfg["encoder"]["source"], pushed_cfg["encoder"]["revision"]
    del run_cfg["encoder"]["source"], run_cfg["encoder"]["revision"]
    assert pushed_cfg == run_cfg

    # The model card: metadata the Hub reads, the test metrics in model-index, no placeholder text.
    text = files["README.md"].decode()
    card = ModelCard(text)
    assert card.data.library_name == "zooprobe" and card.data.license == "mit"
    assert card.data.base_model == "tester/enc" and "zooprobe" in card.data.tags
    assert not card.data.get("datasets")  # the zoo is a local folder, not a Hub dataset
    results = card.data.eval_results
    test = _finite_test_metrics(run)
    assert sorted(r.metric_value for r in results) == sorted(test.values())
    assert {r.dataset_split for r in results} == {"test"} and card.data.model_name == "head"
    assert any(r.metric_type == "r_squared" and "log10 learning_rate" in r.metric_name for r in results)
    body = card.text
    for needle in (
        'load_head("tester/head")',
        "head.predict([state_dict])",
        "log10",
        "`adamw`",
        "Limitations",
    ):
        assert needle in body, needle
    for placeholder in ("More Information Needed", "TODO", "OWNER/NAME", "None", "{", "}", " nan"):
        assert placeholder not in body, placeholder

    # A stalled commit: a timeout error after about the timeout, saying the commit may still land.
    assert "timed out" in pushed["timed_out"] and "may still land" in pushed["timed_out"]
    assert pushed["timeout_s"] < 3.5

    # A local encoder without --encoder_repo_id: pushed, with a warning naming what loaders need.
    assert len(pushed["warnings"]) == 1 and "local encoder folder" in pushed["warnings"][0]
    local_cfg = json.loads(hub_server.files("tester/head-local")["config.json"])
    assert local_cfg["encoder"]["source"] == str(head_encoder)
    assert "is not a Hub repo" in hub_server.files("tester/head-local")["README.md"].decode()
    assert (
        "tester/no-such-enc" in pushed["missing_encoder"]
        and "nothing was uploaded" in pushed["missing_encoder"]
    )
    assert ("model", "tester/x") not in hub_server.repos

    # `zooprobe train --push_to_hub` with a Hub encoder: pushed at the end, no warning needed.
    assert pushed["rc_train"] == 0
    acc = hub_server.files("tester/acc-head")
    assert json.loads(acc["config.json"])["encoder"]["source"] == "tester/enc"
    assert ModelCard(acc["README.md"].decode()).data.base_model == "tester/enc"
    assert "warning:" not in output  # neither push printed the local-encoder warning

    # A fresh process with an empty HF_HOME and no token: the head and its encoder come from the Hub, and
    # reproduce the run's stored test predictions.
    loaded = _client(
        hub_server,
        f"""
        import numpy as np
        from zooprobe.api import load_head
        from zooprobe.api import load_zoo

        head = load_head("tester/head")
        local = load_head({str(run)!r})  # the run folder itself, as tests/test_training.py loads it
        zoo = load_zoo({str(head_zoo)!r}).final().split("test")
        preds, local_preds = head.predict(zoo.state_dicts()), local.predict(zoo.state_dicts())
        stored = json.loads(Path({str(run / "predictions" / "test.json")!r}).read_text())
        names = head.spec.names
        print("RESULT " + json.dumps({{
            "head_folder": str(head.source), "encoder_folder": str(head.model.loaded.source),
            "same_as_local": all(np.array_equal(preds[n], local_preds[n]) for n in names),
            "diffs": {{n: float(np.max(np.abs(np.asarray(preds[n], dtype=np.float64)
                                              - np.asarray(stored["targets"][n]["predicted"]))))
                       for n in names}},
            "stored": {{n: stored["targets"][n]["predicted"] for n in names}},
            "predicted": {{n: np.asarray(preds[n], dtype=np.float64).tolist() for n in names}},
            "n": len(zoo), "n_stored": len(stored["model_ids"]),
        }}))
        """,
        tmp_path / "hf_home_fresh",
    )
    fresh = tmp_path / "hf_home_fresh"
    assert Path(loaded["head_folder"]).is_relative_to(fresh)
    assert Path(loaded["encoder_folder"]).is_relative_to(fresh)  # fetched by its repo id
    assert loaded["n"] == loaded["n_stored"] > 0
    # bit for bit what the run folder's own head predicts; the stored predictions (computed from cached
    # representations, batched differently) within float32 rounding, as tests/test_training.py checks
    assert loaded["same_as_local"]
    for name, stored in loaded["stored"].items():
        np.testing.assert_allclose(loaded["predicted"][name], stored, rtol=1e-6, atol=1e-7)

    _assert_no_token_in_files(hub_server, tmp_path)
    for repo in hub_server.repos.values():
        for commit in repo.commits.values():
            for data in commit.files.values():
                assert hub_server.token.encode() not in data and hub_server.read_token.encode() not in data


def test_gbm_head_pushed_and_loaded_by_repo_id_predicts_exactly_as_local(
    hub_server: HubServer, head_zoo: Path, head_encoder: Path, tmp_path: Path
) -> None:
    """A gradient-boosting head trained from the command line (on a Hub encoder), pushed at the end of
    training, then loaded by repo id in a fresh process: `zooprobe predict` gives byte-identical JSON."""
    import torch
    from safetensors.torch import save_file

    from zooprobe.api import load_zoo

    zoo = load_zoo(head_zoo).final().split("test")
    files = []
    for i, sd in enumerate([zoo.state_dict(0), zoo.state_dict(1), torch.nn.LSTM(16, 32).state_dict()]):
        files.append(tmp_path / f"m{i}.safetensors")
        save_file(
            {k: v.contiguous() for k, v in sd.items()}, files[-1], metadata={"order": json.dumps(list(sd))}
        )
    run = tmp_path / "gbm-run"
    trained = _client(
        hub_server,
        f"""
        from zooprobe.cli import main
        from zooprobe.hub import push_folder

        push_folder({str(head_encoder)!r}, "tester/enc", repo_type="model", commit_message="enc",
                    ignore_patterns=["last/", "training_state.safetensors"])
        rc_train = main(["train", "--task", "hyperparameters", "--head.kind", "gbm", "--head.features",
                         "stats+rep", "--zoo", {str(head_zoo)!r}, "--encoder", "tester/enc", "--progress",
                         "false", "--output", {str(run)!r}, "--push_to_hub", "tester/gbm-head"])
        rc_predict = main(["predict", "--head", {str(run)!r}, *{[str(f) for f in files]!r}, "--json",
                           {str(tmp_path / "local.json")!r}])
        rc_evaluate = main(["evaluate", {str(run)!r}])
        print("RESULT " + json.dumps({{"rc": [rc_train, rc_predict, rc_evaluate]}}))
        """,
        tmp_path / "hf_home",
        token=hub_server.token,
    )
    assert trained["rc"] == [0, 0, 0], trained["_output"][-3000:]
    assert "learning_rate/coverage" in trained["_output"] and "in_domain" in trained["_output"]
    pushed = hub_server.files("tester/gbm-head")
    assert {"config.json", "model.safetensors", "gbm.json", "trust.json", "domain.safetensors"} <= set(pushed)
    gbm = json.loads(pushed["gbm.json"])  # LightGBM's own text format, no pickle anywhere
    assert gbm["features"] == "stats+rep"
    assert all(m["model"] is None or m["model"].startswith("tree\n") for m in gbm["models"].values())
    assert not any(b"pickle" in data or data[:2] == b"\x80\x04" for data in pushed.values())
    card = pushed["README.md"].decode()
    assert "gradient boosting (LightGBM" in card and "`gbm.json`" in card and "applicability domain" in card

    fresh = _client(
        hub_server,
        f"""
        from zooprobe.cli import main

        rc = main(["predict", "--head", "tester/gbm-head", *{[str(f) for f in files]!r}, "--json",
                   {str(tmp_path / "hub.json")!r}])
        print("RESULT " + json.dumps({{"rc": rc}}))
        """,
        tmp_path / "hf_home_fresh",
    )
    assert fresh["rc"] == 0
    local = json.loads((tmp_path / "local.json").read_text())
    from_hub = json.loads((tmp_path / "hub.json").read_text())
    assert from_hub["head"] == "tester/gbm-head" and local["head"] == str(run)
    assert from_hub["predictions"] == local["predictions"]  # every value, interval and domain distance
    assert [p["in_domain"] for p in local["predictions"]] == [True, True, False]
    values = [p["targets"]["family"].get("predicted") for p in local["predictions"]]
    assert values[0] in ("mlp", "cnn") or local["predictions"][0]["targets"]["family"]["predictable"] is False
    _assert_no_token_in_files(hub_server, tmp_path)


def test_unfinished_run_is_refused(head_zoo: Path, head_encoder: Path, tmp_path: Path) -> None:
    run = _train_run(head_zoo, head_encoder, tmp_path / "run", epochs=1)
    (run / "metrics.json").unlink()  # what a run still training (or killed) looks like: a head, no metrics
    assert (run / "head" / "model.safetensors").is_file() and not (run / "metrics.json").exists()
    before = _hashes(run)
    with pytest.raises(ZooprobeError, match=r"not a finished training run.*metrics\.json"):
        push_run(run, "tester/head")
    with pytest.raises(ZooprobeError, match="not a run folder"):
        push_run(tmp_path, "tester/head")
    assert _hashes(run) == before


def test_push_command_line_masks_the_token(tmp_path: Path) -> None:
    from zooprobe.cli import build_parser

    secret = "hf_" + "s3cr3t" * 4
    parser = build_parser()
    cfg = parser.parse_args(["push", str(tmp_path), "--repo_id", "tester/h", "--token", secret])
    assert cfg.push.token.get_secret_value() == secret and secret not in parser.dump(cfg)
    cfg = parser.parse_args(
        ["train", "--output", str(tmp_path), "--push_to_hub", "tester/h", "--token", secret]
    )
    assert cfg.train.push_to_hub == "tester/h" and secret not in parser.dump(cfg)


def test_a_head_on_a_shipped_encoder_pushes_without_a_warning() -> None:
    from zooprobe.publish.card_body import describe_source
    from zooprobe.publish.push import encoder_warning

    for shipped in ("default", "foundation"):  # in every install of this zooprobe version
        assert encoder_warning({"encoder": {"source": shipped}}) is None
        assert "foundation encoder shipped with zooprobe" in describe_source(shipped, None, "encoder")
    warning = encoder_warning({"encoder": {"source": "v2"}})
    assert warning is not None and "rebuilt by pretraining on each machine" in warning
    assert "local encoder folder" in (encoder_warning({"encoder": {"source": "/tmp/enc"}}) or "")
