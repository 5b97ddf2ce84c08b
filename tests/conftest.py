"""Shared fixtures, each built once per test session: an isolated zooprobe cache, tiny zoos, a tiny
pretrained encoder and small trained heads (`trained_heads`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from trained_heads import TrainedHeads

if TYPE_CHECKING:
    from hub_server import HubServer

#: Torch threads of the test process and, through OMP_NUM_THREADS, of every process a test starts (unless the
#: test sets its own). One: the tests' tensors are tiny, so a second thread saves little even on an idle
#: machine, while on a shared one (other jobs, or a test's own worker processes) every parallel region waits
#: for a descheduled thread: head training ran 2.3x slower with two. The same count everywhere also keeps
#: float sums identical between a test and the processes it compares itself with.
#: ZOOPROBE_TEST_THREADS overrides it.
TEST_THREADS = int(os.environ.get("ZOOPROBE_TEST_THREADS", "1"))
os.environ["OMP_NUM_THREADS"] = str(TEST_THREADS)
torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep tests away from the user's cache (mnist1d arrays, built-in zoos)."""
    if "ZOOPROBE_TEST_CACHE" in os.environ:
        os.environ["ZOOPROBE_CACHE"] = os.environ["ZOOPROBE_TEST_CACHE"]
    else:
        os.environ["ZOOPROBE_CACHE"] = str(tmp_path_factory.mktemp("zooprobe-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_zoo(_isolated_cache: None) -> Path:
    """A tiny generated zoo (16 runs): the built-in ``builtin:tiny`` zoo of the test cache, which the tiny
    default encoder of the docs and demo tests is pretrained on too; built once, read-only for tests."""
    from zooprobe.api import builtin_zoo

    return builtin_zoo("tiny", progress=False)


@pytest.fixture
def hub_server() -> Iterator[HubServer]:
    """A loopback Hugging Face Hub (tests/hub_server.py) on 127.0.0.1, stopped after the test.

    It has ``.endpoint`` (give it to a client process as ``HF_ENDPOINT``), ``.token`` (write) and
    ``.read_token``, fault switches ``fail_commits(n, repo_id)`` / ``stall_commits(seconds, n, repo_id)``,
    and the stored repos (``files``, ``head``, ``history``, ``requests``).
    """
    from hub_server import HubServer

    with HubServer() as server:
        yield server


@pytest.fixture(scope="session")
def head_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-run tiny-preset zoo (38 train / 17 validation / 9 test models) for head-training tests."""
    from zooprobe import ZooConfig, build_zoo

    root = tmp_path_factory.mktemp("zoos") / "heads64"
    report = build_zoo(ZooConfig(preset="tiny", n_models=64, seed=3), root, progress=False)
    assert report.finalized
    return root


@pytest.fixture(scope="session")
def head_encoder(head_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny encoder pretrained on `head_zoo`'s train split (a few seconds), without summary tokens.

    Head tests assert that shape-level facts (conv layers, batch norm, MLP vs CNN) are read off perfectly.
    After 4 s of tiny pretraining, the pooled representation of an encoder WITHOUT summary tokens makes
    them linearly visible (logistic regression: 1.0 on this zoo's test split); WITH summary tokens it is
    not (0.89 for MLP vs CNN), so these tests would measure the tiny encoder instead of the heads.
    """
    from zooprobe.api import pretrain_encoder
    from zooprobe.training.pretrain import PretrainConfig

    out = tmp_path_factory.mktemp("encoders") / "heads64"
    cfg = PretrainConfig(preset="tiny", summary_tokens=False)
    return pretrain_encoder(cfg, head_zoo, out, progress=False)


@pytest.fixture(scope="session")
def trained_heads(
    head_zoo: Path, head_encoder: Path, tmp_path_factory: pytest.TempPathFactory
) -> TrainedHeads:
    """The session's shared head runs (`TrainedHeads`): ``trained_heads["accuracy"]`` is a run folder."""
    return TrainedHeads(head_zoo, head_encoder, tmp_path_factory.mktemp("trained-heads"))
