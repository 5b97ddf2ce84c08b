"""Clients of the loopback Hub (tests/hub_server.py) for the Hub and push tests: each runs in a fresh
process with its own HF_HOME, as a user on another machine would."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from hub_server import HubServer

PRELUDE = """
import json, os, sys, time
from pathlib import Path
from zooprobe.errors import ZooprobeError

def error_of(fn):
    try:
        fn()
    except ZooprobeError as e:
        return str(e)
    return None

def same_state_dicts(a, b):
    import torch
    if len(a) != len(b):
        return False
    for i in range(len(a)):
        x, y = a.state_dict(i), b.state_dict(i)
        if list(x) != list(y) or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True

def state_dicts(zoo):
    final = zoo.final()
    return [final.state_dict(i) for i in range(len(final))]
"""


def _client(
    hub: HubServer,
    code: str,
    hf_home: Path,
    *,
    token: str | None = None,
    offline: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> dict[str, Any]:
    """Run `code` in a fresh Python process talking to `hub`; returns its ``RESULT`` JSON."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_")) and k not in ("ZOOPROBE_TEST_CACHE",)
    }
    base.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1" if offline else "0",
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DOWNLOAD_TIMEOUT="5",
        HF_HUB_DISABLE_TELEMETRY="1",
        OMP_NUM_THREADS="1",
        ZOOPROBE_CACHE=os.environ["ZOOPROBE_CACHE"],
        **(env or {}),
    )
    if token is not None:
        base["HF_TOKEN"] = token
    script = PRELUDE + textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=base, capture_output=True, text=True, timeout=timeout
    )
    output = proc.stdout + proc.stderr
    for secret in (hub.token, hub.read_token):
        assert secret not in output, "a token appeared in the client's output"
    assert proc.returncode == 0, output[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, output[-4000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result["_output"] = output
    return result


def _hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file a push uploads: all but the local output-folder marker and lock."""
    from zooprobe.core.outputs import LOCK, MARKER

    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (MARKER, LOCK)
    }


def _assert_no_token_in_files(hub: HubServer, *roots: Path) -> None:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                for secret in (hub.token, hub.read_token):
                    assert secret.encode() not in data, f"a token was written to {path}"
