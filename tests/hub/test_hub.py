"""Hub integration against a real loopback Hub server (tests/hub_server.py).

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HOME`` when it is imported, and this test
process runs offline (conftest), so every client-side scenario runs in a fresh Python process with its own
environment: the endpoint of the server, its own ``HF_HOME``, and a token only where the scenario has one.
Each client prints one ``RESULT {json}`` line; the token must never appear in its output or in any file it
leaves under ``HF_HOME`` or in the pushed folders.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch

from hub_clients import _assert_no_token_in_files, _client, _hashes
from hub_server import HubServer
from zooprobe.api import load_zoo
from zooprobe.encoder import EncoderConfig, WeightEncoder
from zooprobe.encoder.encoder_loader import Preprocessing, save_encoder
from zooprobe.tokens import TokenizerConfig, WeightTokenizer


def _tiny_encoder(tok: WeightTokenizer, folder: Path, seed: int) -> Path:
    """A small random encoder saved with `save_encoder` (as tests/test_encoder_io.py builds them)."""
    torch.manual_seed(seed)
    config = EncoderConfig(
        token_size=8, d_model=16, n_layers=1, n_heads=2, d_ff=32, latent_dim=8, max_global_pos=64
    )
    return save_encoder(
        WeightEncoder(config), tok, {"note": f"seed {seed}"}, folder, preprocessing=Preprocessing(window=48)
    )


# ---------------------------------------------------------------------------------------------- tests
def test_cli_push_then_load_zoo_and_encoder_by_repo_id(
    hub_server: HubServer, tiny_zoo: Path, tmp_path: Path
) -> None:
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    before = _hashes(zoo)
    enc = tmp_path / "enc"
    result = _client(
        hub_server,
        f"""
        from zooprobe.cli import main
        from zooprobe.api import load_encoder
        from zooprobe.api import load_zoo

        zoo, enc = {str(zoo)!r}, {str(enc)!r}
        rc_zoo = main(["zoo", "build", "--preset", "tiny", "--output", zoo,
                       "--push_to_hub", "tester/tiny-zoo", "--progress", "false"])
        rc_enc = main(["encoder", "pretrain", "--preset", "tiny", "--zoo", zoo, "--output", enc,
                       "--push_to_hub", "tester/tiny-encoder", "--private", "true", "--progress", "false"])
        local, remote = load_zoo(zoo), load_zoo("tester/tiny-zoo")
        enc_local, enc_remote = load_encoder(enc), load_encoder("tester/tiny-encoder")
        sds = state_dicts(local)
        a, b = enc_local.encode(sds), enc_remote.encode(sds)
        print("RESULT " + json.dumps({{
            "rc": [rc_zoo, rc_enc],
            "remote_root": str(remote.root),
            "metadata_equal": local.metadata().equals(remote.metadata()),
            "manifest_equal": local.manifest == remote.manifest,
            "state_dicts_equal": same_state_dicts(local, remote),
            "embeddings_equal": bool((a == b).all()) and a.shape == b.shape,
            "n_models": len(sds),
        }}))
        """,
        tmp_path / "hf_home",
        token=hub_server.token,
    )
    assert result["rc"] == [0, 0]
    assert "zoo pushed to" in result["_output"] and "encoder pushed to" in result["_output"]
    assert Path(result["remote_root"]).is_relative_to(tmp_path / "hf_home")  # read from the Hub cache
    assert result["metadata_equal"] and result["manifest_equal"] and result["state_dicts_equal"]
    assert result["embeddings_equal"] and result["n_models"] > 0

    # The Hub holds exactly the local folders (bytes), each pushed in one commit.
    zoo_files = hub_server.files("tester/tiny-zoo", "dataset")
    assert {k: hashlib.sha256(v).hexdigest() for k, v in zoo_files.items() if k != ".gitattributes"} == before
    assert len(hub_server.history("tester/tiny-zoo", "dataset")) == 2  # the repo's initial commit + 1
    enc_files = hub_server.files("tester/tiny-encoder")
    assert {"config.json", "model.safetensors", "README.md"} <= set(enc_files)
    assert any(p.startswith("tensorboard/") for p in enc_files)
    assert not any(p.startswith("last/") or p == "training_state.safetensors" for p in enc_files)
    assert enc_files["model.safetensors"] == (enc / "model.safetensors").read_bytes()
    assert hub_server.repo("tester/tiny-encoder").private
    assert not hub_server.repo("tester/tiny-zoo", "dataset").private
    assert len(hub_server.history("tester/tiny-encoder")) == 2
    assert _hashes(zoo) == before  # pushing only reads the folder
    _assert_no_token_in_files(hub_server, tmp_path)


def test_revision_pinning_and_offline_cache(hub_server: HubServer, tiny_zoo: Path, tmp_path: Path) -> None:
    zoo = load_zoo(tiny_zoo).final()
    tok = WeightTokenizer(TokenizerConfig(token_size=8))
    tok.fit_normalization(zoo.state_dict(i) for i in range(8))
    enc_a = _tiny_encoder(tok, tmp_path / "enc_a", seed=0)
    enc_b = _tiny_encoder(tok, tmp_path / "enc_b", seed=1)
    hf_home = tmp_path / "hf_home"
    # An earlier push left a shard the new zoo does not have (Zoo.open reads every data/*.parquet).
    hub_server.create_repo("tester/zoo", "dataset")
    hub_server.upload(
        "tester/zoo", {"data/train-00001-of-00002.parquet": b"stale", "notes.md": b"kept"}, "dataset"
    )
    online = _client(
        hub_server,
        f"""
        from zooprobe.api import load_encoder
        from zooprobe.hub import push_folder
        from zooprobe.api import load_zoo

        sds = state_dicts(load_zoo({str(tiny_zoo)!r}))
        sha_a = push_folder({str(enc_a)!r}, "tester/enc", repo_type="model", commit_message="a")
        sha_b = push_folder({str(enc_b)!r}, "tester/enc", repo_type="model", commit_message="b")
        again = push_folder({str(enc_b)!r}, "tester/enc", repo_type="model", commit_message="b again")
        push_folder({str(tiny_zoo)!r}, "tester/zoo", repo_type="dataset", commit_message="zoo",
                    delete_patterns="data/**")
        sha_dev = push_folder({str(enc_a)!r}, "tester/enc", repo_type="model", commit_message="dev",
                              revision="dev")
        push_folder({str(enc_a)!r}, "tester/never-downloaded", repo_type="model", commit_message="x")
        main, pinned = load_encoder("tester/enc"), load_encoder("tester/enc", revision=sha_a)
        a, b = load_encoder({str(enc_a)!r}).encode(sds), load_encoder({str(enc_b)!r}).encode(sds)
        zoo = load_zoo("tester/zoo")
        print("RESULT " + json.dumps({{
            "sha_a": sha_a, "sha_b": sha_b, "again": again,
            "main_is_b": bool((main.encode(sds) == b).all()),
            "pinned_is_a": bool((pinned.encode(sds) == a).all()),
            "dev_is_a": bool((load_encoder("tester/enc", revision="dev").encode(sds) == a).all()),
            "sha_dev": sha_dev,
            "a_differs_from_b": not bool((a == b).all()),
            "zoo_rows": len(zoo),
        }}))
        """,
        hf_home,
        token=hub_server.token,
    )
    assert online["sha_a"] != online["sha_b"] and online["again"] == online["sha_b"]
    assert hub_server.head("tester/enc") == online["sha_b"]
    assert len(hub_server.history("tester/enc")) == 3  # initial + a + b: the unchanged re-push made none
    assert online["main_is_b"] and online["pinned_is_a"] and online["a_differs_from_b"]
    assert online["dev_is_a"] and hub_server.head("tester/enc", revision="dev") == online["sha_dev"]
    assert online["zoo_rows"] == len(load_zoo(tiny_zoo))
    zoo_files = set(hub_server.files("tester/zoo", "dataset"))
    assert "data/train-00001-of-00002.parquet" not in zoo_files and "notes.md" in zoo_files
    assert zoo_files - {".gitattributes", "notes.md"} == set(_hashes(tiny_zoo))

    n_requests = len(hub_server.requests)
    offline = _client(
        hub_server,
        f"""
        from zooprobe.api import load_encoder
        from zooprobe.api import load_zoo

        sds = state_dicts(load_zoo({str(tiny_zoo)!r}))
        a, b = load_encoder({str(enc_a)!r}).encode(sds), load_encoder({str(enc_b)!r}).encode(sds)
        sha_a = {online["sha_a"]!r}
        print("RESULT " + json.dumps({{
            "main_is_b": bool((load_encoder("tester/enc").encode(sds) == b).all()),
            "pinned_is_a": bool((load_encoder("tester/enc", revision=sha_a).encode(sds) == a).all()),
            "zoo_rows": len(load_zoo("tester/zoo")),
            "not_cached": error_of(lambda: load_encoder("tester/never-downloaded")),
            "not_cached_zoo": error_of(lambda: load_zoo("tester/never-downloaded")),
        }}))
        """,
        hf_home,
        offline=True,
    )
    assert len(hub_server.requests) == n_requests  # offline: not a single request reached the Hub
    assert offline["main_is_b"] and offline["pinned_is_a"]
    assert offline["zoo_rows"] == online["zoo_rows"]
    for key in ("not_cached", "not_cached_zoo"):
        message = offline[key]
        assert message is not None and "not in the local cache" in message and "HF_HUB_OFFLINE=1" in message
        assert "tester/never-downloaded" in message
    _assert_no_token_in_files(hub_server, tmp_path)


def test_failures_are_clear_and_change_nothing(hub_server: HubServer, tiny_zoo: Path, tmp_path: Path) -> None:
    """Not found, private, no/invalid/read-only token, HTTP 500 on commit (then a retry), a stalled commit."""
    hub_server.create_repo("tester/private-zoo", "dataset", private=True)
    hub_server.create_repo("tester/public-model", "model")
    hub_server.create_repo("tester/public-zoo", "dataset")
    hub_server.upload("tester/public-model", {"config.json": b"{}"})
    hub_server.fail_commits(1, repo_id="tester/fault")
    hub_server.stall_commits(4.0, repo_id="tester/slow")
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    before = _hashes(zoo)
    result = _client(
        hub_server,
        f"""
        from zooprobe.cli import main
        from zooprobe.hub import push_folder, resolve_source
        from zooprobe.api import load_zoo

        zoo = {str(zoo)!r}

        def push(repo, **kw):
            return push_folder(zoo, repo, repo_type="dataset", commit_message="zoo", **kw)

        out = {{
            "missing": error_of(lambda: load_zoo("tester/missing")),
            "private": error_of(lambda: load_zoo("tester/private-zoo")),
            "bad_revision": error_of(lambda: resolve_source("tester/public-model", "model", revision="v9")),
            "push_no_token": error_of(lambda: push("tester/new")),
            "push_bad_token": error_of(lambda: push("tester/new", token="hf_not_a_valid_token")),
            "push_read_only": error_of(lambda: push("tester/private-zoo", token=os.environ["READ_TOKEN"])),
            "push_bad_id": error_of(lambda: push("not a repo id")),
            "push_private_to_public": error_of(
                lambda: push("tester/public-zoo", token=os.environ["PUSH_TOKEN"], private=True)
            ),
            "cli_no_token": main(["zoo", "build", "--preset", "tiny", "--output", zoo + "-new",
                                  "--push_to_hub", "tester/z", "--progress", "false"]),
        }}
        # The token= argument path (HF_TOKEN is not set in this process).
        token = os.environ["PUSH_TOKEN"]
        out["failed"] = error_of(lambda: push("tester/fault", token=token))
        out["sha"] = push("tester/fault", token=token)
        start = time.monotonic()
        out["timed_out"] = error_of(lambda: push("tester/slow", token=token, timeout=1.0))
        out["timeout_s"] = time.monotonic() - start
        os.environ["HF_TOKEN"] = os.environ["READ_TOKEN"]  # a read token sees private repos
        out["private_with_token"] = str(resolve_source("tester/private-zoo", "dataset"))
        print("RESULT " + json.dumps(out))
        """,
        tmp_path / "hf_home",
        env={"READ_TOKEN": hub_server.read_token, "PUSH_TOKEN": hub_server.token},
    )
    # Reading: a missing and a private repo look the same without a token (as on the Hub).
    for key in ("missing", "private"):
        assert "not found on the Hub" in result[key] and "no token was found" in result[key]
    assert "revision not found" in result["bad_revision"]
    assert Path(result["private_with_token"]).is_dir()

    # Pushing without a usable token or permission: clear errors, nothing created or committed.
    assert "no Hugging Face token found" in result["push_no_token"]
    assert "rejected the token" in result["push_bad_token"]
    assert "no permission to write" in result["push_read_only"]
    assert "not a Hub repo id" in result["push_bad_id"]
    assert "already exists and is public; nothing was uploaded" in result["push_private_to_public"]
    assert len(hub_server.history("tester/public-zoo", "dataset")) == 1
    assert result["cli_no_token"] == 2 and "--push_to_hub: no Hugging Face token" in result["_output"]
    assert not Path(f"{zoo}-new").exists()  # the CLI checked before building anything
    assert ("dataset", "tester/new") not in hub_server.repos
    assert len(hub_server.history("tester/private-zoo", "dataset")) == 1

    # HTTP 500 on the commit: a clear error, the folder intact, no commit; the retry succeeds.
    failed = result["failed"]
    assert failed is not None and "HTTP 500" in failed and "nothing was changed locally, retry" in failed
    assert "tester/fault" in failed
    assert hub_server.head("tester/fault", "dataset") == result["sha"]
    assert len(hub_server.history("tester/fault", "dataset")) == 2  # initial + the retry
    stored = hub_server.files("tester/fault", "dataset")
    assert {k: hashlib.sha256(v).hexdigest() for k, v in stored.items() if k != ".gitattributes"} == before

    # A stalled commit: a timeout error after about the timeout, saying the commit may still land.
    timed_out = result["timed_out"]
    assert timed_out is not None and "timed out" in timed_out and "within 1 s" in timed_out
    assert "may still land" in timed_out
    assert result["timeout_s"] < 3.5

    assert _hashes(zoo) == before  # same files, same bytes, after every failure
    _assert_no_token_in_files(hub_server, tmp_path)


def test_token_masked_in_print_config(tmp_path: Path) -> None:
    from jsonargparse.typing import SecretStr

    from zooprobe.cli import build_parser

    secret = "hf_" + "s3cr3t" * 4
    parser = build_parser()
    args = ["zoo", "build", "--output", str(tmp_path), "--push_to_hub", "tester/x", "--token", secret]
    cfg = parser.parse_args(args)
    assert isinstance(cfg.zoo.build.token, SecretStr) and cfg.zoo.build.token.get_secret_value() == secret
    assert secret not in parser.dump(cfg)
