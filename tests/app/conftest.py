"""Fixtures of the app's tests: two tiny heads trained on `head_zoo` (an accuracy head, gradient boosting, and
a hyperparameters head, neural), and the files a user would upload: a zoo model, a ResNet-shaped network
(torchvision's names, tiny widths), and a pickle payload that writes a marker file when unpickled."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from trained_heads import TrainedHeads
from zooprobe.api import load_zoo


@pytest.fixture(scope="session")
def app_heads(trained_heads: TrainedHeads) -> list[str]:
    """Run folders of an accuracy head (gbm) and a hyperparameters head (mlp), as --heads takes them (the
    session's shared runs, tests/conftest.py)."""
    return [str(trained_heads["accuracy-gbm"]), str(trained_heads["hyperparameters"])]


def _save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"order": json.dumps(list(sd))})
    return path


def resnet_shaped(seed: int = 0, width: int = 8, classes: int = 10) -> dict[str, torch.Tensor]:
    """A state dict with torchvision ResNet names and shapes (conv stem, two basic blocks, the second with
    a downsample, fc), tiny widths, random values."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, c_out: int, c_in: int, k: int) -> None:
        sd[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * math.sqrt(2.0 / (c_in * k * k))

    def bn(name: str, c: int) -> None:
        sd[f"{name}.weight"] = 1.0 + 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.running_var"] = 1.0 + 0.1 * torch.rand(c, generator=g)
        sd[f"{name}.num_batches_tracked"] = torch.tensor(100, dtype=torch.int64)

    conv("conv1", width, 3, 7)
    bn("bn1", width)
    c_in = width
    for stage, c in ((1, width), (2, 2 * width)):
        prefix = f"layer{stage}.0"
        conv(f"{prefix}.conv1", c, c_in, 3)
        bn(f"{prefix}.bn1", c)
        conv(f"{prefix}.conv2", c, c, 3)
        bn(f"{prefix}.bn2", c)
        if c != c_in:
            conv(f"{prefix}.downsample.0", c, c_in, 1)
            bn(f"{prefix}.downsample.1", c)
        c_in = c
    sd["fc.weight"] = torch.randn(classes, c_in, generator=g) / math.sqrt(c_in)
    sd["fc.bias"] = torch.zeros(classes)
    return sd


class _Payload:
    """Unpickling this runs `exec`, which writes the marker file: what a malicious .pt would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.fixture(scope="session")
def upload_files(head_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``model`` (a test-split zoo model), ``resnet`` (ResNet-shaped), ``payload`` (a pickle payload .pt
    whose unpickling would write ``marker``), ``marker`` (must never exist)."""
    root = tmp_path_factory.mktemp("app-uploads")
    zoo = load_zoo(head_zoo).final().split("test")
    marker = root / "marker.txt"
    payload = root / "payload.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": _Payload(marker)}, payload)
    return {
        "model": _save(zoo.state_dict(0), root / "model.safetensors"),
        "other": _save(zoo.state_dict(1), root / "other.safetensors"),
        "resnet": _save(resnet_shaped(), root / "resnet.safetensors"),
        "payload": payload,
        "marker": marker,
    }
