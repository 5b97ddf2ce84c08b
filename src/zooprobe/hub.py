"""One resolution step for every source: a local folder, a Hub repo id, or a built-in name.

Everything downstream reads a local folder. A Hub repo id is first snapshotted into the Hugging Face
cache (``snapshot_download``; with ``HF_HUB_OFFLINE=1`` only cached snapshots are used). A string that
names an existing folder is always that folder; a string that looks like a path but does not exist is an
error, never silently sent to the Hub as a repo id.

The other direction, `push_folder`, uploads a finished local folder (a zoo, an encoder) to a Hub repo in
one commit. huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HOME`` when it is imported:
set them before the first import.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml

from zooprobe._version import __version__
from zooprobe.core.outputs import LOCK, MARKER
from zooprobe.errors import ZooprobeError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_path(text: str) -> bool:
    """True for text a user means as a local path: it starts with ``.``, ``/`` or ``~``, holds a backslash,
    has other than exactly one ``/`` (a Hub repo id is ``OWNER/NAME``), or its parent folder exists here
    (``runs/pattern`` next to a local ``runs/`` is a mistyped run folder, not a Hub repo of user "runs")."""
    if text.startswith((".", "/", "~")) or "\\" in text or text.count("/") != 1:
        return True
    return Path(text).expanduser().parent.is_dir()


def is_repo_id(text: str | None) -> bool:
    """True if `text` is a Hub repo id ``OWNER/NAME`` and not a local path (existing or path-like); built-in
    names (``default``, ``builtin:...``) are not repo ids."""
    if not text or looks_like_path(text) or not REPO_ID.match(text):
        return False
    return not Path(text).expanduser().exists()


def check_repo_id(repo_id: str, what: str) -> str:
    """`repo_id` if it has the form ``OWNER/NAME``; otherwise a `ZooprobeError` naming `what` (the option)."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not REPO_ID.match(repo_id):
        raise ZooprobeError(f"{what}: {repo_id!r} is not a Hub repo id of the form OWNER/NAME")
    return repo_id


def resolve_source(
    source: str | Path,
    repo_type: Literal["dataset", "model"],
    revision: str | None = None,
    kind: str = "zoo",
) -> Path:
    """Local folder for ``source`` (downloading a Hub snapshot if it is a repo id)."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ZooprobeError(f"{kind} source {text!r} is a file; expected a folder or a Hub repo id")
    if path.is_symlink():  # a link to nothing: a loop, or a target that is gone
        try:
            path.resolve(strict=True)
        except (RuntimeError, OSError) as e:  # RuntimeError: Python 3.11's "Symlink loop"
            loop = isinstance(e, RuntimeError) or getattr(e, "errno", None) == errno.ELOOP
            what = "a symbolic link loop (its links point back at each other)" if loop else "a broken link"
            raise ZooprobeError(
                f"{kind} source {text!r} is {what}; give the real folder (or a Hub repo id)"
            ) from None
    try:
        where = path.resolve()
    except (RuntimeError, OSError):  # a loop in one of its parent folders
        raise ZooprobeError(
            f"{kind} source {text!r}: its path runs through a symbolic link loop; give the real folder"
        ) from None
    if looks_like_path(text) or not REPO_ID.match(text):
        raise ZooprobeError(
            f"{kind} source {text!r}: no such folder ({where}), and it is not a Hub repo id "
            "of the form OWNER/NAME"
        )
    return _snapshot(text, repo_type, revision, kind)


WEIGHT_PATTERNS = ("*.safetensors", "*.pt", "*.pth", "*.bin", "*.ckpt")
"""The files of a Hub model repo that `hub_checkpoint` downloads (nothing else of the repo is fetched)."""


def hub_checkpoint(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The weights file of Hub model repo `repo_id` (OWNER/NAME), downloaded into `cache_dir` (default: the
    Hugging Face cache): ``model.safetensors`` if it has one, else its one weights file. Only files matching
    `WEIGHT_PATTERNS` are fetched; a repo without weights, or with several that are not one model (shards),
    is a one-line error. The file is read later by the same safe reader as any checkpoint."""
    text = str(repo_id).strip()
    if looks_like_path(text) or not REPO_ID.match(text):
        raise ZooprobeError(f"checkpoint: {text!r} is not a Hub model repo id of the form OWNER/NAME")
    folder = _snapshot(
        text, "model", revision, "checkpoint", allow_patterns=list(WEIGHT_PATTERNS), cache_dir=cache_dir
    )
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    preferred = [p for p in files if p.name == "model.safetensors"]
    if preferred:
        return preferred[0]
    if not files:
        raise ZooprobeError(
            f"checkpoint: model repo {text!r} holds no weights file ({', '.join(WEIGHT_PATTERNS)})"
        )
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    chosen = safetensors or files
    if len(chosen) > 1:
        shown = ", ".join(p.relative_to(folder).as_posix() for p in chosen[:4])
        raise ZooprobeError(
            f"checkpoint: model repo {text!r} holds {len(chosen)} weights files ({shown}); zooprobe reads "
            "one network per file: download the one you mean and give it as a file"
        )
    return chosen[0]


def _snapshot(
    repo_id: str,
    repo_type: str,
    revision: str | None,
    kind: str,
    *,
    allow_patterns: list[str] | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    from huggingface_hub import snapshot_download  # heavy: huggingface_hub
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )  # heavy: huggingface_hub

    where = f"{repo_type} repo {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        return Path(
            snapshot_download(
                repo_id,
                repo_type=repo_type,
                revision=revision,
                allow_patterns=allow_patterns,
                cache_dir=None if cache_dir is None else str(cache_dir),
            )
        )
    except RevisionNotFoundError as e:
        raise ZooprobeError(f"{kind}: revision not found in {where}") from e
    except GatedRepoError as e:
        raise ZooprobeError(f"{kind}: no permission to read {where} (log in or pass a token)") from e
    except RepositoryNotFoundError as e:
        from huggingface_hub import get_token  # heavy: huggingface_hub

        hint = (
            "if it is private, the token in use has no access to it"
            if get_token()
            else "if it is private, log in (`hf auth login`) or set HF_TOKEN: no token was found"
        )
        raise ZooprobeError(
            f"{kind}: {where} not found on the Hub (and no local folder {repo_id!r}); check the id; {hint}"
        ) from e
    except LocalEntryNotFoundError as e:
        from huggingface_hub import constants  # heavy: huggingface_hub

        why = (
            "offline mode is on (HF_HUB_OFFLINE=1)"
            if getattr(constants, "HF_HUB_OFFLINE", False)
            else "the Hub cannot be reached (no network, or the Hub failed)"
        )
        raise ZooprobeError(
            f"{kind}: {where} is not in the local cache and {why}; download it once with network access"
        ) from e
    except HfHubHTTPError as e:
        raise ZooprobeError(f"{kind}: could not fetch {where}: {e}") from e


# ---------------------------------------------------------------------------------------------- cards
def render_card(header: Mapping[str, Any] | Any, body: str | Sequence[str]) -> str:
    """A Hub card (the README.md of a repo): YAML front matter, then the markdown `body` (a text or lines).

    `header` is a mapping (dumped in its own key order) or a huggingface_hub ``CardData`` (``ModelCardData``
    renders ``eval_results`` as the ``model-index`` the Hub reads). The one card builder of zooprobe: zoo
    dataset cards, encoder model cards and head model cards are all written through it; the header is
    parsed back, so a malformed one is an error here rather than on the Hub.
    """
    text = header.to_yaml() if hasattr(header, "to_yaml") else yaml.safe_dump(dict(header), sort_keys=False)
    if not isinstance(yaml.safe_load(text), dict):
        raise ZooprobeError(f"a card header must be a YAML mapping, got {text[:80]!r}")
    lines = body if isinstance(body, str) else "\n".join(body)
    return f"---\n{text.rstrip()}\n---\n\n{lines.lstrip()}"


# ---------------------------------------------------------------------------------------------- pushing
#: Never uploaded: version-control and Hugging Face cache folders (as `HfApi.upload_folder` skips them).
ALWAYS_IGNORED: tuple[str, ...] = (".git", ".git/*", "*/.git", "**/.git/**")
ALWAYS_IGNORED += (
    MARKER,
    f"*/{MARKER}",
    LOCK,
    f"*/{LOCK}",
)  # output-folder markers, locks: local bookkeeping
ALWAYS_IGNORED += (
    ".cache/huggingface",
    ".cache/huggingface/*",
    "*/.cache/huggingface",
    "**/.cache/huggingface/**",
)
DEFAULT_PUSH_TIMEOUT = 300.0


def repo_url(repo_id: str, repo_type: Literal["model", "dataset"]) -> str:
    """Web address of a repo on the configured Hub endpoint (``HF_ENDPOINT``, default huggingface.co)."""
    from huggingface_hub import constants  # heavy: huggingface_hub

    return f"{constants.ENDPOINT}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def folder_files(
    folder: str | Path,
    allow_patterns: str | list[str] | None = None,
    ignore_patterns: str | list[str] | None = None,
) -> list[str]:
    """Relative POSIX paths of the files `push_folder` would upload from `folder`, sorted.

    Patterns are fnmatch patterns on the relative path (``*`` also matches ``/``; a pattern ending in ``/``
    matches everything under that folder); `ALWAYS_IGNORED` is always added to `ignore_patterns`.
    """
    from huggingface_hub.utils import filter_repo_objects  # heavy: huggingface_hub

    root = Path(folder).expanduser()
    ignore = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return list(
        filter_repo_objects(paths, allow_patterns=allow_patterns, ignore_patterns=[*ignore, *ALWAYS_IGNORED])
    )


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    repo_type: Literal["model", "dataset"],
    commit_message: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    allow_patterns: str | list[str] | None = None,
    ignore_patterns: str | list[str] | None = None,
    delete_patterns: str | list[str] | None = None,
    timeout: float | None = DEFAULT_PUSH_TIMEOUT,
) -> str:
    """Upload a local folder to a Hub repo in one commit; returns the new commit's sha.

    The repo is created if missing (``private`` applies only then: an existing repo keeps its visibility,
    and a ``private=True`` push to an existing public repo is refused). ``revision`` names a branch, created
    from main if missing (default: main). Every file of `folder` selected by `folder_files`
    (``allow_patterns`` / ``ignore_patterns``) is uploaded; remote files matching ``delete_patterns`` that
    the upload does not contain are deleted in the same commit (``.gitattributes`` is always kept), so e.g.
    ``delete_patterns="data/**"`` leaves no stale shard of an earlier push behind. Files whose content is
    already on the Hub are skipped, so pushing the same folder again is safe (it creates no new commit and
    returns the current head).

    One commit, never split: this goes through ``HfApi.create_commit`` rather than ``upload_folder``, which
    (with ``hf_xet`` installed) splits large folders into several commits and splits and retries a failed
    commit, leaving partial states on the Hub.

    The token is `token`, else what huggingface_hub finds itself (``HF_TOKEN``, the saved login). It is only
    sent to the Hub: never printed, logged, written to a file or put into an error message.

    ``timeout`` (seconds, None: wait forever) bounds how long one request may wait for an answer; while the
    push runs it is set on huggingface_hub's shared HTTP client (downloads pass their own timeouts).

    The local folder is only read, whatever happens. Errors are `ZooprobeError` with what went wrong and
    what to do: not logged in, token rejected, no permission, repo or branch not found, server error
    (retry), timeout (the commit may still land: check, then retry), Hub unreachable, offline mode.
    """
    from huggingface_hub import HfApi  # heavy: huggingface_hub

    root = Path(folder).expanduser()
    _check_push(root, folder, repo_id, repo_type, timeout)
    files = folder_files(root, allow_patterns, ignore_patterns)
    if not files:
        raise ZooprobeError(f"push: no files to upload in {root} (after the allow/ignore patterns)")
    secret = _push_token(token)
    where = f"{repo_type} repo {repo_id!r}" + (f" (branch {revision!r})" if revision else "")
    try:
        with _request_timeout(timeout):
            api = HfApi(token=secret, library_name="zooprobe", library_version=__version__)
            _prepare_repo(api, repo_id, repo_type, private, revision, where)
            operations = _operations(api, root, files, repo_id, repo_type, revision, delete_patterns)
            commit = {"commit_message": commit_message, "repo_type": repo_type, "revision": revision}
            info = api.create_commit(repo_id, operations, **commit)
    except ZooprobeError:
        raise
    except Exception as e:
        _raise_push_error(e, secret, where, repo_id, repo_type, timeout)
    return str(info.oid)


def _push_token(token: str | None) -> str:
    """`token`, else the one huggingface_hub finds (``HF_TOKEN``, the saved login)."""
    from huggingface_hub import get_token  # heavy: huggingface_hub

    secret = token or get_token()
    if not secret:
        raise ZooprobeError(
            "push: no Hugging Face token found; pass a token (--token), set HF_TOKEN, or log in once "
            "with `hf auth login`"
        )
    return secret


def _raise_push_error(
    e: Exception,
    secret: str,
    where: str,
    repo_id: str,
    repo_type: Literal["model", "dataset"],
    timeout: float | None,
) -> NoReturn:
    """Raise the `ZooprobeError` for `e` raised while pushing (`e` itself when it is not a known Hub
    failure); the token never shows in what is raised, nor in what it is chained to."""
    error = _push_error(e, where, repo_id, repo_type, timeout)
    if error is None:
        raise e
    message = _scrub(str(error), secret)
    if message != str(error) or secret in str(e):  # never chain an exception that shows the token
        raise ZooprobeError(message) from None
    raise error from e


def _check_push(root: Path, folder: str | Path, repo_id: str, repo_type: str, timeout: float | None) -> None:
    """The arguments of `push_folder` that can be checked before talking to the Hub."""
    from huggingface_hub import constants  # heavy: huggingface_hub

    if not root.is_dir():
        raise ZooprobeError(f"push: {str(folder)!r} is not a folder")
    check_repo_id(repo_id, "push")
    if repo_type not in ("model", "dataset"):
        raise ZooprobeError(f"push: repo_type must be 'model' or 'dataset', got {repo_type!r}")
    if timeout is not None and not timeout > 0:
        raise ZooprobeError(f"push: timeout must be a positive number of seconds or None, got {timeout!r}")
    if getattr(constants, "HF_HUB_OFFLINE", False):
        raise ZooprobeError("push: offline mode is on (HF_HUB_OFFLINE=1); unset it to push to the Hub")


def _prepare_repo(
    api: Any, repo_id: str, repo_type: str, private: bool, revision: str | None, where: str
) -> None:
    """Create the repo if missing (refusing a private push to an existing public repo) and the branch."""
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    if private and not api.repo_info(repo_id, repo_type=repo_type).private:
        raise ZooprobeError(
            f"push: a private push was asked for, but {where} already exists and is public; nothing "
            "was uploaded (make the repo private on the Hub first, or push to another repo)"
        )
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)


def _operations(
    api: Any,
    root: Path,
    files: list[str],
    repo_id: str,
    repo_type: str,
    revision: str | None,
    delete_patterns: str | list[str] | None,
) -> list[Any]:
    """The commit's operations: delete the remote files matching `delete_patterns` that the upload does not
    contain (``.gitattributes`` kept), then add every file."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete  # heavy: huggingface_hub
    from huggingface_hub.utils import filter_repo_objects  # heavy: huggingface_hub

    operations: list[CommitOperationAdd | CommitOperationDelete] = []
    if delete_patterns is not None:
        remote = api.list_repo_files(repo_id, repo_type=repo_type, revision=revision)
        keep = {*files, ".gitattributes"}
        operations += [
            CommitOperationDelete(path_in_repo=path, is_folder=False)
            for path in filter_repo_objects(remote, allow_patterns=delete_patterns)
            if path not in keep
        ]
    operations += [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(root / rel)) for rel in files]
    return operations


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _class_names(e: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(e).__mro__}


def _push_error(
    e: Exception, where: str, repo_id: str, repo_type: Literal["model", "dataset"], timeout: float | None
) -> ZooprobeError | None:
    """The `ZooprobeError` for an exception raised while pushing (None: not a known Hub failure)."""
    from huggingface_hub import constants  # heavy: huggingface_hub
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )  # heavy: huggingface_hub

    unchanged = "the local folder was not changed"
    names = _class_names(e)
    if isinstance(e, OfflineModeIsEnabled):
        return ZooprobeError("push: offline mode is on (HF_HUB_OFFLINE=1); unset it to push to the Hub")
    if isinstance(e, GatedRepoError):
        return ZooprobeError(f"push: no permission to write to {where} (gated repo); {unchanged}")
    if isinstance(e, RepositoryNotFoundError):
        return ZooprobeError(
            f"push: {where} was not found or the token has no access to it (check the id and that the token "
            f"belongs to an account that can write to {repo_id.split('/')[0]!r}); {unchanged}"
        )
    if isinstance(e, RevisionNotFoundError):
        return ZooprobeError(f"push: the branch of {where} was not found; {unchanged}")
    if isinstance(e, HfHubHTTPError) and e.response is not None:
        return _http_error(e, where, repo_id, unchanged)
    if isinstance(e, TimeoutError) or any("Timeout" in n for n in names):
        limit = f"within {timeout:g} s" if timeout is not None else "in time"
        return ZooprobeError(
            f"push: the upload to {where} timed out: no answer from the Hub {limit}. "
            f"{unchanged.capitalize()}; the commit may still land on the Hub: check "
            f"{repo_url(repo_id, repo_type)} and retry (pushing the same folder again is safe: files "
            "already there are skipped)"
        )
    if isinstance(e, ConnectionError) or names & {"ConnectError", "NetworkError", "TransportError"}:
        return ZooprobeError(
            f"push: cannot reach the Hub at {constants.ENDPOINT} ({type(e).__name__}); check the network "
            f"(or HF_ENDPOINT) and retry; {unchanged}"
        )
    if isinstance(e, ValueError) and "README.md" in str(e):
        return ZooprobeError(f"push: the Hub rejected the README.md metadata of the folder: {e}")
    return None


def _http_error(e: Any, where: str, repo_id: str, unchanged: str) -> ZooprobeError:
    """The `ZooprobeError` for an HTTP error answer of the Hub (by status)."""
    status = e.response.status_code
    detail = (e.server_message or "").strip().splitlines()[:1]
    said = f" (the Hub said: {detail[0]})" if detail else ""
    if status == 401:
        return ZooprobeError(
            f"push: the Hub rejected the token (invalid or expired){said}; log in again with "
            f"`hf auth login`, set HF_TOKEN or pass another token; {unchanged}"
        )
    if status == 403:
        return ZooprobeError(
            f"push: no permission to write to {where}{said}: use a token with write access to "
            f"{repo_id.split('/')[0]!r}; {unchanged}"
        )
    if status in (409, 412):
        return ZooprobeError(f"push: {where} changed while pushing{said}; {unchanged}, retry")
    if status == 429:
        return ZooprobeError(f"push: the Hub is rate limiting requests{said}; {unchanged}, retry later")
    if status >= 500:
        return ZooprobeError(
            f"push: the upload to {where} failed: the Hub answered HTTP {status} (server error), so no "
            f"commit was made; nothing was changed locally, retry"
        )
    return ZooprobeError(f"push: the upload to {where} failed with HTTP {status}{said}; {unchanged}")


@contextmanager
def _request_timeout(seconds: float | None) -> Iterator[None]:
    """Set `seconds` as the default timeout of huggingface_hub's shared HTTP client for the block."""
    if seconds is None:
        yield
        return
    from huggingface_hub.utils import get_session  # heavy: huggingface_hub

    session = get_session()
    previous = getattr(session, "timeout", None)
    session.timeout = seconds
    try:
        yield
    finally:
        session.timeout = previous
