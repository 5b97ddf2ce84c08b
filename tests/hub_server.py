"""A loopback Hugging Face Hub for tests: the part of the Hub protocol that ``huggingface_hub`` calls.

`HubServer` runs a `ThreadingHTTPServer` on 127.0.0.1 (random port) and keeps repos in memory. It
implements what the client uses to create a repo, push a commit and download a snapshot:

- ``POST /api/repos/create`` (409 if the repo exists), ``POST /api/validate-yaml``, ``GET /api/whoami-v2``;
- ``POST /api/{models|datasets}/{id}/preupload/{rev}``: every file is ``uploadMode: "regular"`` (so its
  content arrives base64-encoded inside the commit) and carries the remote git oid, which the client uses
  to skip unchanged files;
- ``POST /api/{type}s/{id}/commit/{rev}``: NDJSON (``header``, ``file``, ``deletedFile``, ``deletedFolder``);
  each commit gets a new sha; ``parentCommit`` is checked (412 on mismatch);
- ``POST /api/{type}s/{id}/branch/{name}`` (create a branch from ``startingPoint`` or main);
- ``GET /api/{type}s/{id}`` and ``.../revision/{rev}`` (repo info with ``sha`` and ``siblings``);
- ``GET /api/{type}s/{id}/tree/{rev}[/{path}]`` (``recursive=true`` lists every file and folder);
- ``HEAD|GET /[datasets/]{id}/resolve/{rev}/{file}`` with ``X-Repo-Commit``, ``ETag`` (the git blob sha1)
  and ``Content-Length``; ``Range: bytes=N-`` is honoured.

Errors look like the Hub's: 404 with ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound``;
a request without a token for a private or missing repo gets 401 with ``X-Error-Code: RepoNotFound`` (the
Hub does not tell "private" from "missing" to anonymous users); an unknown token gets 401 "Invalid
credentials in Authorization header"; `read_token` can read everything but writing with it is a 403.

Fault injection: `fail_commits` (the next N commits answer HTTP 500 and change nothing) and
`stall_commits` (the next N commits wait S seconds before being applied and answered), both optionally
limited to one repo. Tokens are never logged; `requests` records method, path and whether the request
was authenticated.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

RepoType = Literal["model", "dataset"]
GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with content `data` (what the Hub reports as a file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    """One commit: its sha, parent, message and the full file tree after it."""

    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    date: str


@dataclass
class Repo:
    """A repo: visibility, branches (name -> sha) and every commit by sha."""

    repo_type: RepoType
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    created: str = ""


@dataclass
class _Fault:
    remaining: int
    repo_id: str | None
    seconds: float = 0.0
    status: int = 500


class HubError(Exception):
    """An HTTP error answer (status, JSON message and Hub error code header)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class HubServer:
    """In-memory Hub on 127.0.0.1; use as a context manager or call `start` / `stop`.

    Attributes:
        endpoint: base URL to give the client as ``HF_ENDPOINT``.
        token: a write token of user `user`.
        read_token: a read-only token of the same user.
        requests: ``(method, path, authenticated)`` for every request, in order.
    """

    def __init__(self, user: str = "tester") -> None:
        self.user = user
        self.token = "hf_" + secrets.token_hex(16)
        self.read_token = "hf_" + secrets.token_hex(16)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str, bool]] = []
        self._lock = threading.RLock()
        self._faults: list[_Fault] = []
        self._stop = threading.Event()
        self._counter = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> HubServer:
        """Bind a random port on 127.0.0.1 and serve in a background thread."""
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (stalled commits are woken up and dropped)."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------- test API
    def fail_commits(self, n: int = 1, repo_id: str | None = None, status: int = 500) -> None:
        """The next `n` commits (to `repo_id`, or to any repo) answer `status` and change nothing."""
        with self._lock:
            self._faults.append(_Fault(n, repo_id, status=status))

    def stall_commits(self, seconds: float, n: int = 1, repo_id: str | None = None) -> None:
        """The next `n` commits (to `repo_id`, or any) wait `seconds`, then are applied and answered."""
        with self._lock:
            self._faults.append(_Fault(n, repo_id, seconds=seconds, status=0))

    def create_repo(self, repo_id: str, repo_type: RepoType = "model", private: bool = False) -> Repo:
        """Create a repo directly (with the Hub's initial ``.gitattributes`` commit)."""
        with self._lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo", None)
            repo = Repo(repo_type, repo_id, private, created=_now())
            self.repos[key] = repo
            self._commit(repo, "main", "initial commit", {".gitattributes": GITATTRIBUTES}, [])
            return repo

    def upload(
        self,
        repo_id: str,
        files: dict[str, bytes],
        repo_type: RepoType = "model",
        message: str = "upload",
        branch: str = "main",
    ) -> str:
        """Commit `files` to an existing repo directly (test setup); returns the new commit sha."""
        with self._lock:
            return self._commit(self.repo(repo_id, repo_type), branch, message, files, []).sha

    def repo(self, repo_id: str, repo_type: RepoType = "model") -> Repo:
        """The stored repo (KeyError if absent)."""
        return self.repos[(repo_type, repo_id)]

    def head(self, repo_id: str, repo_type: RepoType = "model", revision: str = "main") -> str:
        """Commit sha that `revision` of the repo points to."""
        with self._lock:
            return self._resolve(self.repo(repo_id, repo_type), revision).sha

    def files(self, repo_id: str, repo_type: RepoType = "model", revision: str = "main") -> dict[str, bytes]:
        """Every stored file (path -> bytes) of the repo at `revision`."""
        with self._lock:
            return dict(self._resolve(self.repo(repo_id, repo_type), revision).files)

    def history(self, repo_id: str, repo_type: RepoType = "model", revision: str = "main") -> list[Commit]:
        """Commits reachable from `revision`, oldest first."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            out: list[Commit] = []
            commit: Commit | None = self._resolve(repo, revision)
            while commit is not None:
                out.append(commit)
                commit = repo.commits[commit.parent] if commit.parent else None
            return out[::-1]

    # ------------------------------------------------------------------------------------------- model
    def _resolve(self, repo: Repo, revision: str) -> Commit:
        if revision in repo.branches:
            return repo.commits[repo.branches[revision]]
        if revision in repo.commits:
            return repo.commits[revision]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _commit(
        self, repo: Repo, branch: str, message: str, added: dict[str, bytes], deleted: list[tuple[str, bool]]
    ) -> Commit:
        parent = repo.branches.get(branch)
        files = dict(repo.commits[parent].files) if parent else {}
        for path, is_folder in deleted:
            if is_folder:
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            elif files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        files.update(added)
        digest = hashlib.sha1(f"{repo.repo_id}:{next(self._counter)}:{parent}:{message}".encode())
        for path in sorted(files):
            digest.update(path.encode() + git_blob_sha1(files[path]).encode())
        commit = Commit(digest.hexdigest(), parent, message, files, _now())
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit

    def _take_fault(self, repo_id: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.repo_id in (None, repo_id):
                    fault.remaining -= 1
                    return fault
        return None


# ------------------------------------------------------------------------------------------------ HTTP
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: HubServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet; never logs headers (tokens)
        return

    # ------------------------------------------------------------------------------------------- plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, e: HubError) -> None:
        headers = {"X-Error-Message": e.message}
        if e.code:
            headers["X-Error-Code"] = e.code
        self._json(e.status, {"error": e.message}, headers)

    def _auth(self) -> Literal["anonymous", "read", "write"]:
        hub = self.server_hub
        value = self.headers.get("Authorization")
        if value is None:
            return "anonymous"
        token = value.removeprefix("Bearer ").strip()
        if secrets.compare_digest(token, hub.token):
            return "write"
        if secrets.compare_digest(token, hub.read_token):
            return "read"
        raise HubError(401, "Invalid credentials in Authorization header")

    def _dispatch(self) -> None:
        hub = self.server_hub
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        body = self._body() if self.command in ("POST", "PUT") else b""
        try:
            access = "anonymous"
            try:
                access = self._auth()
            finally:
                with hub._lock:
                    hub.requests.append((self.command, split.path, access != "anonymous"))
            self._route(parts, query, body, access)
        except HubError as e:
            self._error(e)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_HEAD = do_POST = _dispatch

    # ------------------------------------------------------------------------------------------- routing
    def _repo(self, repo_type: str, repo_id: str, access: str) -> Repo:
        hub = self.server_hub
        repo = hub.repos.get((repo_type, repo_id))  # type: ignore[arg-type]
        if repo is None or (repo.private and access == "anonymous"):
            status = 401 if access == "anonymous" else 404
            raise HubError(status, "Repository not found", "RepoNotFound")
        return repo

    def _route(self, parts: list[str], query: dict[str, str], body: bytes, access: str) -> None:
        hub = self.server_hub
        method = self.command
        if parts[:1] == ["api"]:
            rest = parts[1:]
            if rest == ["repos", "create"] and method == "POST":
                return self._create(json.loads(body or b"{}"), access)
            if rest == ["validate-yaml"] and method == "POST":
                return self._json(200, {"errors": [], "warnings": []})
            if rest == ["whoami-v2"] and method == "GET":
                if access == "anonymous":
                    raise HubError(401, "Invalid credentials in Authorization header")
                role = "write" if access == "write" else "read"
                return self._json(
                    200,
                    {"type": "user", "name": hub.user, "auth": {"accessToken": {"role": role}}, "orgs": []},
                )
            if len(rest) >= 3 and rest[0] in ("models", "datasets"):
                repo_type = rest[0][:-1]
                repo_id = "/".join(rest[1:3])
                action, args = (rest[3], rest[4:]) if len(rest) > 3 else ("info", [])
                with hub._lock:
                    repo = self._repo(repo_type, repo_id, access)
                if action == "info" and method == "GET":
                    return self._info(repo, "main")
                if action == "revision" and method == "GET" and args:
                    return self._info(repo, "/".join(args))
                if action == "tree" and method == "GET" and args:
                    return self._tree(repo, args[0], "/".join(args[1:]), query)
                if action in ("preupload", "commit", "branch") and method == "POST" and args:
                    if access != "write":
                        raise HubError(
                            403, "You don't have the rights to write to this repo (read-only token)"
                        )
                    if action == "preupload":
                        return self._preupload(repo, args[0], json.loads(body or b"{}"))
                    if action == "commit":
                        return self._commit(repo, args[0], body)
                    return self._branch(repo, args[0], json.loads(body or b"{}"))
            raise HubError(404, f"Not found: {self.path}")
        if method in ("GET", "HEAD"):
            repo_type = "model"
            if parts[:1] == ["datasets"]:
                repo_type, parts = "dataset", parts[1:]
            if len(parts) >= 5 and parts[2] == "resolve":
                with hub._lock:
                    repo = self._repo(repo_type, "/".join(parts[:2]), access)
                return self._resolve_file(repo, parts[3], "/".join(parts[4:]))
        raise HubError(404, f"Not found: {self.path}")

    # ------------------------------------------------------------------------------------------- endpoints
    def _create(self, payload: dict[str, Any], access: str) -> None:
        hub = self.server_hub
        if access == "anonymous":
            raise HubError(401, "You must be authenticated to create a repo")
        repo_type = payload.get("type") or "model"
        if repo_type not in ("model", "dataset"):
            raise HubError(400, f"Unsupported repo type {repo_type!r}")
        repo_id = f"{payload.get('organization') or hub.user}/{payload['name']}"
        if access != "write":
            raise HubError(403, f'You don\'t have the rights to create a {repo_type} under "{repo_id}"')
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        url = f"{hub.endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        with hub._lock:
            if (repo_type, repo_id) in hub.repos:  # the Hub answers 409 with the url of the existing repo
                message = f"You already created this {repo_type} repo"
                return self._json(409, {"error": message, "url": url}, {"X-Error-Message": message})
            hub.create_repo(repo_id, repo_type, private)
        self._json(200, {"url": url, "name": repo_id})

    def _info(self, repo: Repo, revision: str) -> None:
        hub = self.server_hub
        with hub._lock:
            commit = hub._resolve(repo, revision)
            data = {
                "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": commit.sha,
                "lastModified": commit.date,
                "createdAt": repo.created,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            }
        self._json(200, data)

    def _tree(self, repo: Repo, revision: str, path: str, query: dict[str, str]) -> None:
        hub = self.server_hub
        recursive = query.get("recursive", "false").lower() in ("1", "true")
        with hub._lock:
            files = hub._resolve(repo, revision).files
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for p in sorted(files):
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix) :].split("/")
            depth = len(rel) if recursive else 1
            for i in range(1, min(depth, len(rel) - 1) + 1):
                folder = prefix + "/".join(rel[:i])
                oid = hashlib.sha1(folder.encode()).hexdigest()
                entries.setdefault(folder, {"type": "directory", "oid": oid, "path": folder})
            if recursive or len(rel) == 1:
                data = files[p]
                entries[p] = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": p}
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        self._json(200, list(entries.values()))

    def _preupload(self, repo: Repo, revision: str, payload: dict[str, Any]) -> None:
        hub = self.server_hub
        with hub._lock:
            commit = hub._resolve(repo, revision)
            answer = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(commit.files[f["path"]]) if f["path"] in commit.files else None,
                }
                for f in payload.get("files", [])
            ]
        self._json(200, {"files": answer, "commitOid": commit.sha})

    def _commit(self, repo: Repo, branch: str, body: bytes) -> None:
        hub = self.server_hub
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line")
        header = lines[0]["value"]
        added: dict[str, bytes] = {}
        deleted: list[tuple[str, bool]] = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                added[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append((value["path"], key == "deletedFolder"))
            else:
                raise HubError(400, f"Unsupported commit operation {key!r} (this test Hub has no LFS)")
        fault = hub._take_fault(repo.repo_id)
        if fault is not None and fault.status:
            raise HubError(
                fault.status, "Internal Error - We're working hard to fix this as soon as possible!"
            )
        if fault is not None and fault.seconds and hub._stop.wait(fault.seconds):
            return  # the server is stopping: drop the request
        with hub._lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            parent = header.get("parentCommit")
            if parent and parent != repo.branches[branch]:
                raise HubError(412, f"Parent commit {parent} is not the head of {branch}")
            commit = hub._commit(repo, branch, header.get("summary", ""), added, deleted)
        prefix = "datasets/" if repo.repo_type == "dataset" else ""
        url = f"{hub.endpoint}/{prefix}{repo.repo_id}/commit/{commit.sha}"
        self._json(200, {"success": True, "commitOid": commit.sha, "commitUrl": url, "hookOutput": ""})

    def _branch(self, repo: Repo, branch: str, payload: dict[str, Any]) -> None:
        hub = self.server_hub
        with hub._lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            start = hub._resolve(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = start.sha
        self._json(200, {})

    def _resolve_file(self, repo: Repo, revision: str, path: str) -> None:
        hub = self.server_hub
        with hub._lock:
            commit = hub._resolve(repo, revision)
            data = commit.files.get(path)
        if data is None:
            raise HubError(404, "Entry not found", "EntryNotFound")
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{git_blob_sha1(data)}"',
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
            start = min(int(rng[6:].split("-")[0]), len(data))
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._send(206 if start else 200, data[start:], headers)


__all__ = ["Commit", "HubError", "HubServer", "Repo", "git_blob_sha1"]
