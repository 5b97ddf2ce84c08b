"""One resolution step for every source: a local folder, a Hub repo id, or a built-in name.

Everything downstream reads a local folder. A Hub repo id is first snapshotted into the Hugging Face
cache (``snapshot_download``; with ``HF_HUB_OFFLINE=1`` only cached snapshots are used). A string that
names an existing folder is always that folder; a string that looks like a path but does not exist is an
error, never silently sent to the Hub as a repo id.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from .errors import ZooprobeError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
BUILTIN_PREFIX = "builtin:"


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
    if kind == "zoo" and (text == "default" or text.startswith(BUILTIN_PREFIX)):
        from .zoo.build import builtin_zoo

        return builtin_zoo(text.removeprefix(BUILTIN_PREFIX) if text != "default" else "small")
    looks_like_path = text.startswith((".", "/", "~")) or "\\" in text or text.count("/") != 1
    if looks_like_path or not REPO_ID.match(text):
        raise ZooprobeError(
            f"{kind} source {text!r}: no such folder ({path.resolve()}), and it is not a Hub repo id "
            "of the form OWNER/NAME"
        )
    return _snapshot(text, repo_type, revision, kind)


def _snapshot(repo_id: str, repo_type: str, revision: str | None, kind: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_type} repo {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision))
    except RevisionNotFoundError as e:
        raise ZooprobeError(f"{kind}: revision not found in {where}") from e
    except GatedRepoError as e:
        raise ZooprobeError(f"{kind}: no permission to read {where} (log in or pass a token)") from e
    except RepositoryNotFoundError as e:
        raise ZooprobeError(
            f"{kind}: {where} not found on the Hub (and no local folder {repo_id!r}); "
            "check the id, or log in if it is private"
        ) from e
    except LocalEntryNotFoundError as e:
        raise ZooprobeError(
            f"{kind}: {where} is not in the local cache and the Hub cannot be reached "
            "(offline mode or no network); download it once with network access"
        ) from e
    except HfHubHTTPError as e:
        raise ZooprobeError(f"{kind}: could not fetch {where}: {e}") from e
