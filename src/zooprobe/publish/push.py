"""Publishing a finished head-training run as a Hub model repo, in one commit.

`push_run` stages the run into a temporary folder, then uploads it with `zooprobe.hub.push_folder`::

    README.md              model card (`zooprobe.publish.card.head_model_card`)
    config.json            the head's config (head/config.json) at the repo root, so that
                           ``load_head("OWNER/NAME")`` finds it (`zooprobe.heads.head_loader.head_folder`)
    model.safetensors      the best checkpoint (head/model.safetensors)
    trust.json, domain.safetensors   the head's applicability domain, calibration and reliability
    gbm.json               a gbm head's LightGBM models (text format)
    content_hash.json      sha256 of the files above as staged (`zooprobe.heads.integrity`)
    config.yaml            the resolved training configuration
    metrics.json           history, best epoch, validation and test metrics
    predictions/           true and predicted values of the validation and test models
    tensorboard/           the TensorBoard event files
    report/                the run's report (index.html and plots), when the run has one

The resumable training state (``checkpoints/``) stays local. The run folder is only read. Pushing the same
run again to the same repo is safe (unchanged files are skipped); files of an earlier push under
``tensorboard/``, ``predictions/`` and ``report/`` that this run does not have are deleted in the same
commit, so curves and plots of two runs never mix.

The encoder: a head is only loadable where its encoder is. When head/config.json names a local encoder
folder or a cache-pretrained ``v2``/``v3``, the push still goes ahead but warns (`HeadEncoderWarning`);
``encoder_repo_id`` records a Hub repo of the same encoder instead, in the staged config.json only. That
repo is checked first: its encoder must have the fingerprint the head was trained with, and the pushed
config pins the revision (the one given, else the commit the check read), so a later push to the encoder
repo cannot silently break the head.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zooprobe._version import __version__
from zooprobe.api import SHIPPED_ENCODERS
from zooprobe.core.files import read_json
from zooprobe.encoder.folders import load_encoder_folder
from zooprobe.errors import ZooprobeError
from zooprobe.heads.integrity import HASH_FILE, check_content_hash, write_content_hash
from zooprobe.hub import (
    DEFAULT_PUSH_TIMEOUT,
    _request_timeout,
    _scrub,
    check_repo_id,
    is_repo_id,
    push_folder,
)
from zooprobe.publish.card import head_model_card
from zooprobe.training.run_folder import RunFolder

#: Files of a head folder besides config.json and model.safetensors, uploaded to the repo root when present.
HEAD_EXTRAS = ("trust.json", "domain.safetensors", "gbm.json")
#: Remote folders whose files of an earlier push are deleted when this run does not have them.
REPLACED_FOLDERS = ("tensorboard/**", "predictions/**", "report/**")


class HeadEncoderWarning(UserWarning):
    """The pushed head names an encoder that is not on the Hub: loaders elsewhere cannot fetch it."""


def encoder_warning(head_config: dict[str, Any]) -> str | None:
    """Why a head with this config will not load elsewhere (its encoder is not a Hub repo), or None."""
    enc = head_config.get("encoder") or {}
    source = str(enc.get("source", ""))
    if is_repo_id(source) or source in SHIPPED_ENCODERS:  # shipped: in every install of this version
        return None
    what = (
        f"the built-in encoder {source!r} (rebuilt by pretraining on each machine; the head loads only if "
        "that reproduces the training encoder bit for bit)"
        if source in ("v2", "v3")
        else f"the local encoder folder {source!r}"
    )
    return (
        f"the head's encoder is {what} (config.json encoder.source), not a Hub repo: loaders need that "
        "encoder (or must pass it to load_head(..., encoder=...)). Push the encoder folder to the Hub and "
        "pass --encoder_repo_id OWNER/NAME (encoder_repo_id=...) so that load_head(repo id) fetches it"
    )


def run_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(path in the repo, local file) of every run file that is uploaded as is (see the module docs)."""
    yield "model.safetensors", root / "head" / "model.safetensors"
    for name in HEAD_EXTRAS:
        if (root / "head" / name).is_file():
            yield name, root / "head" / name
    yield "config.yaml", root / "config.yaml"
    yield "metrics.json", root / "metrics.json"
    for folder in ("predictions", "tensorboard", "report"):
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(root)
            if not path.is_file() or any(p.startswith(".") for p in rel.parts) or path.suffix == ".tmp":
                continue  # temporary files of atomic writes, hidden files
            yield rel.as_posix(), path


def stage_run(
    run_dir: str | Path,
    repo_id: str,
    folder: str | Path,
    *,
    head_config: dict[str, Any] | None = None,
    encoder_config: dict[str, Any] | None = None,
) -> list[str]:
    """Write the repo content of the finished run `run_dir` into the empty folder `folder`.

    `head_config` replaces head/config.json (written as config.json); returns the repo paths written.
    """
    root = RunFolder(run_dir).check_finished("push").path
    out = Path(folder)
    written = []
    for rel, src in run_files(root):
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        written.append(rel)
    if head_config is None:
        shutil.copyfile(root / "head" / "config.json", out / "config.json")
    else:
        (out / "config.json").write_text(json.dumps(head_config, indent=2, sort_keys=True) + "\n")
    check_content_hash(root / "head")  # a head modified since training is not published as it
    write_content_hash(out)  # of the staged files (config.json may name the Hub encoder)
    written.append(HASH_FILE)
    card = head_model_card(root, repo_id, head_config=head_config, encoder_config=encoder_config)
    (out / "README.md").write_text(card, encoding="utf-8")
    return sorted([*written, "config.json", "README.md"])


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    encoder_repo_id: str | None = None,
    encoder_revision: str | None = None,
    verify_encoder: bool = True,
    timeout: float | None = DEFAULT_PUSH_TIMEOUT,
) -> str:
    """Upload the finished run `run_dir` to the Hub model repo `repo_id` in one commit; returns its sha.

    See the module docs for what is uploaded. `private`, `revision` (branch), `token` and `timeout` are
    `zooprobe.hub.push_folder`'s. `encoder_repo_id` (with `encoder_revision`) records a Hub repo of the
    head's encoder in the pushed config.json; with `verify_encoder` it is downloaded first and must be the
    exact encoder the head was trained with. Without it, a head whose encoder is a local folder or a
    cache-pretrained ``v2``/``v3`` is pushed with a `HeadEncoderWarning` (a shipped one, ``default`` or
    ``foundation``, is in every install of this zooprobe version). A run that is not finished is refused
    (`ZooprobeError`), and so is any failure, with the run folder untouched.
    """

    root = RunFolder(run_dir).check_finished("push").path
    check_repo_id(repo_id, "push")
    head_config = read_json(root / "head" / "config.json", "head config")
    staged_config: dict[str, Any] | None = None
    encoder_config: dict[str, Any] | None = None
    if encoder_repo_id is not None:
        check_repo_id(encoder_repo_id, "push: --encoder_repo_id")
        staged_config = copy.deepcopy(head_config)
        pinned = encoder_revision
        if verify_encoder:
            pinned, encoder_config = _check_hub_encoder(
                encoder_repo_id, encoder_revision, head_config, token, timeout
            )
            pinned = encoder_revision or pinned
        staged_config["encoder"]["source"] = encoder_repo_id
        staged_config["encoder"]["revision"] = pinned
    else:
        message = encoder_warning(head_config)
        if message is not None:
            warnings.warn(message, HeadEncoderWarning, stacklevel=2)
    with tempfile.TemporaryDirectory(prefix="zooprobe-push-") as tmp:
        stage_run(root, repo_id, tmp, head_config=staged_config, encoder_config=encoder_config)
        task = head_config.get("task", {}).get("task", "")
        return push_folder(
            tmp,
            repo_id,
            repo_type="model",
            commit_message=commit_message or f"Upload zooprobe {task} head with zooprobe {__version__}",
            private=private,
            revision=revision,
            token=token,
            delete_patterns=list(REPLACED_FOLDERS),
            timeout=timeout,
        )


def _check_hub_encoder(
    repo_id: str,
    revision: str | None,
    head_config: dict[str, Any],
    token: str | None,
    timeout: float | None,
) -> tuple[str, dict[str, Any]]:
    """Download the encoder `repo_id` at `revision` and check its fingerprint against the head's.

    Returns the commit sha that was checked and the encoder's config.json content.
    """
    where = f"encoder repo {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    sha, folder = _download_encoder(repo_id, revision, token, timeout, where)
    try:
        loaded = load_encoder_folder(folder)
    except ZooprobeError as e:
        raise ZooprobeError(f"push: {where} does not hold a loadable zooprobe encoder: {e}") from e
    expected = head_config.get("encoder", {}).get("fingerprint")
    if loaded.fingerprint() != expected:
        raise ZooprobeError(
            f"push: the encoder in {where} (commit {sha}) is not the encoder this head was trained with "
            f"(its weights, tokenizer or preprocessing differ from fingerprint {str(expected)[:16]}); push "
            "the training encoder folder there, or pass the repo that holds it; nothing was uploaded"
        )
    return sha, read_json(Path(folder) / "config.json", "head config")


def _download_encoder(
    repo_id: str, revision: str | None, token: str | None, timeout: float | None, where: str
) -> tuple[str, str]:
    """The commit sha of `revision` of the encoder repo, and a local snapshot of its config.json and
    weights; a failure is one `ZooprobeError` saying nothing was uploaded (the token never shows)."""
    from huggingface_hub import (  # heavy: huggingface_hub
        HfApi,
        constants,
        get_token,
        snapshot_download,
    )
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )  # heavy: huggingface_hub

    if getattr(constants, "HF_HUB_OFFLINE", False):
        raise ZooprobeError("push: offline mode is on (HF_HUB_OFFLINE=1); unset it to push to the Hub")
    secret = token or get_token() or ""
    try:
        with _request_timeout(timeout):
            api = HfApi(token=token, library_name="zooprobe")
            info = api.model_info(repo_id, revision=revision)
            sha = str(info.sha)
            folder = snapshot_download(
                repo_id, revision=sha, token=token, allow_patterns=["config.json", "model.safetensors"]
            )
    except RevisionNotFoundError:
        raise ZooprobeError(f"push: revision not found in {where}; nothing was uploaded") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise ZooprobeError(
            f"push: {where} was not found or cannot be read with this token; push the encoder folder "
            "there first (e.g. `zooprobe encoder pretrain ... --push_to_hub`), or check --encoder_repo_id; "
            "nothing was uploaded"
        ) from None
    except HfHubHTTPError as e:
        raise ZooprobeError(
            _scrub(f"push: could not read {where} to check it ({e}); nothing was uploaded", secret)
        ) from None
    except Exception as e:
        if isinstance(e, TimeoutError | ConnectionError) or any(
            n in {"TimeoutException", "ConnectError", "NetworkError", "TransportError"}
            for n in (c.__name__ for c in type(e).__mro__)
        ):
            raise ZooprobeError(
                f"push: could not reach the Hub to read {where} ({type(e).__name__}); retry; nothing was "
                "uploaded"
            ) from None
        raise
    return sha, folder


__all__ = [
    "HEAD_EXTRAS",
    "REPLACED_FOLDERS",
    "HeadEncoderWarning",
    "encoder_warning",
    "push_run",
    "run_files",
    "stage_run",
]
