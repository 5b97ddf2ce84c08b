"""The loader layer: every source a user names becomes a loaded object here.

A *source* is a local folder, a Hub repo id (``OWNER/NAME``, at an optional revision) or a built-in name
(``default``; for zoos also ``builtin:PRESET``). The stages below (zoo, tokens, encoder, representations,
heads) and training work on loaded objects and never resolve names; the applications above (command
line, benchmarks, demo, report, predict) call this module. That keeps every arrow pointing down: the
built-in default zoo is built by the zoo stage and the v2/v3 encoders pretrained by training, both on
demand, from here (the default encoder, ``foundation``, ships inside the package).

- `load_zoo`, `builtin_zoo`: zoos (the built-in ones are generated once into the cache);
- `load_encoder`, `list_encoders`, `default_encoder_path`: encoders by name (`zooprobe.encoder.registry`;
  ``default`` is the foundation encoder shipped inside the package, ``v2`` and ``v3`` are pretrained once
  into the cache), folder or Hub id;
- `load_head`: a trained head and the encoder it was trained with;
- `list_presets`: every preset of zoos, encoders and head training, with its values;
- the verbs that take sources: `pretrain_encoder`, `train`, `evaluate`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from zooprobe.core.files import cache_dir
from zooprobe.core.outputs import check_output
from zooprobe.encoder.auto import load_encoder as load_encoder_folder
from zooprobe.encoder.base import CONFIG_FILE, ENCODER_OUTPUT, WEIGHTS_FILE, WeightSpaceEncoder
from zooprobe.encoder.encoder_loader import FORMAT_VERSION
from zooprobe.encoder.registry import list_pretrained, packaged_folder, pretrained_entry, register_pretrained
from zooprobe.errors import InvalidInputError
from zooprobe.heads.head_loader import (
    LoadedHead,
    head_folder,
    load_head_folder,
    read_head_config,
)
from zooprobe.heads.integrity import check_content_hash
from zooprobe.heads.shipped import local_head_path
from zooprobe.hub import resolve_source
from zooprobe.training import distributed
from zooprobe.training.adapt import AdaptConfig, adapt
from zooprobe.training.config import HEAD_PRESETS, TrainConfig
from zooprobe.training.evaluator import evaluate_run
from zooprobe.training.pretrain import NEURON_PRESETS, PretrainConfig, pretrain
from zooprobe.training.pretrain import PRESETS as PRETRAIN_PRESETS
from zooprobe.training.run_folder import RunFolder
from zooprobe.training.trainer import TrainResult, check_run_output, fit
from zooprobe.zoo.build import build_zoo, finished_zoo
from zooprobe.zoo.config import PRESETS as ZOO_PRESETS
from zooprobe.zoo.config import ZooConfig
from zooprobe.zoo.schema import FORMAT_VERSION as ZOO_FORMAT_VERSION
from zooprobe.zoo.store import Zoo
from zooprobe.zoo.train import GENERATOR_VERSION

BUILTIN_PREFIX = "builtin:"

#: The encoders pretrained once into the cache (``v2``, ``v3``): the ``small`` pretraining preset on the
#: ``small`` built-in zoo. Tests monkeypatch these two names to keep that path fast. (``default`` is the
#: shipped foundation encoder and pretrains nothing.)
DEFAULT_ENCODER_PRESET = "small"
DEFAULT_ENCODER_ZOO = "builtin:small"
#: Names of encoders shipped inside the package: the same files wherever this zooprobe version is installed.
SHIPPED_ENCODERS = ("default", "foundation")


# ------------------------------------------------------------------------------------------ zoos
def builtin_zoo(preset: str = "small", progress: bool = True) -> Path:
    """Folder of a built-in zoo, generated once into the cache (resuming if interrupted)."""
    cfg = ZooConfig(preset=preset).resolved()  # type: ignore[arg-type]
    key = {"config": cfg.to_dict(), "generator": GENERATOR_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    root = cache_dir() / "zoos" / f"{preset}-v{ZOO_FORMAT_VERSION}-{digest}"
    if not finished_zoo(root):
        build_zoo(cfg, root, progress=progress)
    return root


def load_zoo(source: str | Path | Zoo = "default", revision: str | None = None) -> Zoo:
    """Open a zoo: a local folder, a Hub dataset repo id (with optional revision), ``default`` (the built-in
    small zoo) or ``builtin:PRESET``. A `Zoo` is returned as it is."""
    if isinstance(source, Zoo):
        return source
    text = str(source)
    if text == "default" or text.startswith(BUILTIN_PREFIX):
        preset = "small" if text == "default" else text.removeprefix(BUILTIN_PREFIX)
        root = builtin_zoo(preset)
    else:
        root = resolve_source(source, repo_type="dataset", revision=revision, kind="zoo")
    return Zoo.open(root, source=text)


# ------------------------------------------------------------------------------------------ encoders
def default_encoder_path(progress: bool = True, architecture: str = "tokens") -> Path:
    """Folder of the cache-pretrained encoder ``v2`` (or ``v3``), pretrained once into the cache and reused
    afterwards (the name is older than the shipped default: ``load_encoder("default")`` is the foundation
    encoder and never comes here).

    The ``small`` pretraining preset on the ``small`` built-in zoo (`DEFAULT_ENCODER_PRESET`,
    `DEFAULT_ENCODER_ZOO`); `architecture` ``tokens`` is the v2 token encoder (``v2``), ``neurons`` the v3
    neuron encoder (``v3``). An interrupted pretraining resumes on the next call; the
    finished folder appears under its final name only once complete (it is renamed into place), so a later
    call never sees a half-trained encoder.
    """
    cfg = PretrainConfig(preset=DEFAULT_ENCODER_PRESET, architecture=architecture).resolved()  # type: ignore[arg-type]
    key = json.dumps(
        {
            "config": cfg.to_dict(),
            "zoo": DEFAULT_ENCODER_ZOO,
            "generator": GENERATOR_VERSION,  # the built-in zoo it is pretrained on
            "format_version": FORMAT_VERSION,
        },
        sort_keys=True,
    )
    kind = "" if architecture == "tokens" else f"{architecture}-"
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    name = f"{DEFAULT_ENCODER_PRESET}-{kind}v{FORMAT_VERSION}-{digest}"
    root = cache_dir() / "encoders"
    final = root / name
    if (final / CONFIG_FILE).is_file() and (final / WEIGHTS_FILE).is_file():
        return final
    work = root / f".building-{name}"
    pretrain(cfg, load_zoo(DEFAULT_ENCODER_ZOO), work, resume=True, progress=progress)
    try:
        work.rename(final)
    except OSError:  # another process finished first: use its folder
        if not (final / CONFIG_FILE).is_file():
            raise
        shutil.rmtree(work, ignore_errors=True)
    return final


def _v2_encoder(progress: bool = True) -> Path:
    return default_encoder_path(progress=progress)  # looked up at call time (tests replace its settings)


def _v3_encoder(progress: bool = True) -> Path:
    return default_encoder_path(progress=progress, architecture="neurons")


# The named pretrained encoders (`zooprobe.encoder.registry`): `load_encoder(name)` and `list_encoders`.
# A folder shipped inside the package is registered with `packaged_folder` (importlib.resources).
register_pretrained(
    "default",
    packaged_folder("zooprobe.encoder", "pretrained", "foundation"),
    "the foundation encoder (the same as 'foundation'), shipped inside the package: nothing is pretrained",
    replace=True,
)
register_pretrained(
    "v2",
    _v2_encoder,
    "the token encoder (v2): the small preset pretrained once into the cache on the small built-in zoo",
    replace=True,
)
register_pretrained(
    "v3",
    _v3_encoder,
    "the neuron-level encoder (v3): the small preset pretrained once into the cache on the small built-in "
    "zoo",
    replace=True,
)
register_pretrained(
    "foundation",
    packaged_folder("zooprobe.encoder", "pretrained", "foundation"),
    "the foundation encoder (layer tokens, pretrained on the foundation corpus) shipped inside the package "
    "(zooprobe/encoder/pretrained/foundation/)",
    replace=True,
)


def list_encoders() -> dict[str, str]:
    """Every named pretrained encoder that `load_encoder` takes, with one line saying what it is."""
    return list_pretrained()


def load_encoder(
    source: str | Path | WeightSpaceEncoder = "default",
    revision: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> WeightSpaceEncoder:
    """Load a pretrained encoder: a name of `list_encoders` (``"default"``...), a local folder or a Hub
    model repo id.

    ``"default"`` (and ``"foundation"``) is the foundation encoder shipped inside the package
    (``zooprobe/encoder/pretrained/foundation/``): it loads in well under a second and nothing is built,
    pretrained or downloaded. ``"v2"`` and ``"v3"`` pretrain the ``small`` preset on the ``small`` built-in
    zoo once into ``cache_dir()/encoders/`` (about 65 s on two cores once the zoo is built) and reuse it.
    Loading is strict (`zooprobe.encoder.auto.load_encoder`, any registered kind): config.json must name
    every field with a supported format version (2: tokens, 3: neurons, 4: layers), and model.safetensors
    must hold exactly the tensors the configured architecture has. Nothing is unpickled. A loaded encoder
    is returned as it is.
    """
    if isinstance(source, WeightSpaceEncoder):
        return source
    entry = pretrained_entry(str(source))
    if entry is not None:
        folder = entry.resolve(progress)
    else:
        folder = resolve_source(source, repo_type="model", revision=revision, kind="encoder")
    return load_encoder_folder(folder, device=device)


# ------------------------------------------------------------------------------------------ heads
def load_head(
    source: str | Path,
    revision: str | None = None,
    *,
    encoder: WeightSpaceEncoder | str | None = None,
    device: str = "cpu",
    check_encoder: bool = True,
    trust: bool = False,
) -> LoadedHead:
    """Load a trained head from a run folder, a head folder, a Hub model repo id or the name of a shipped
    head (``foundation-accuracy``, ``foundation-hyperparameters``, ``foundation-patterns``), with its
    encoder.

    The encoder is the one the head's config.json names (``encoder.source`` at ``encoder.revision``),
    unless `encoder` (a loaded encoder or a source) overrides it; with ``check_encoder`` it must be the exact
    encoder the head was trained with (fingerprint of weights, tokenizer and preprocessing). The head's
    files must match its content hash, checked before anything is read (`zooprobe.heads.integrity`),
    unless ``trust`` (a head edited on purpose).
    """
    local = local_head_path(source)  # a shipped head's name is its folder (`zooprobe.heads.shipped`)
    folder = head_folder(local if local.exists() else resolve_source(source, "model", revision, kind="head"))
    check_content_hash(folder, trust=trust)

    enc_info = read_head_config(folder)["encoder"]
    loaded = load_encoder(
        encoder if encoder is not None else enc_info["source"],
        revision=None if encoder is not None else enc_info.get("revision"),
        device=device,
        progress=False,
    )
    # checked above, before the encoder its config names was loaded
    return load_head_folder(folder, loaded, device=device, check_encoder=check_encoder, trust=True)


# ------------------------------------------------------------------------------------------ presets
def list_presets() -> dict[str, dict[str, dict[str, Any]]]:
    """Every preset by kind: ``zoo`` (`ZooConfig`), ``encoder`` (`PretrainConfig`, architecture tokens),
    ``encoder-neurons`` (`PretrainConfig` with ``architecture="neurons"``) and ``head`` (the head-training
    settings the demo uses, by mode), each name mapped to its values."""
    return {
        "zoo": {name: dict(values) for name, values in ZOO_PRESETS.items()},
        "encoder": {name: dict(values) for name, values in PRETRAIN_PRESETS.items()},
        "encoder-neurons": {name: dict(values) for name, values in NEURON_PRESETS.items()},
        "head": {name: dict(values) for name, values in HEAD_PRESETS.items()},
    }


# ------------------------------------------------------------------------------------------ verbs
def pretrain_encoder(
    config: PretrainConfig | None,
    zoo: str | Path | Zoo,
    output: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: Any = None,
) -> Path:
    """Pretrain an encoder on the train split of `zoo` (any `load_zoo` source, or a `Zoo`) into `output`;
    see `zooprobe.training.pretrain.pretrain`. Returns `output` (load it with `load_encoder`)."""
    cfg = (config or PretrainConfig()).resolved()
    check_output(output, ENCODER_OUTPUT, overwrite=not resume)  # before the zoo is loaded (or built)
    return pretrain(cfg, load_zoo(zoo), output, resume=resume, progress=progress, on_epoch_end=on_epoch_end)


def train(
    config: TrainConfig,
    output: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    encoder: WeightSpaceEncoder | None = None,
    zoo: Zoo | None = None,
) -> TrainResult:
    """Train a head as `config` says into the run folder `output` (see `zooprobe.training.trainer`).

    The zoo and the encoder are loaded from ``config.zoo`` / ``config.encoder`` unless passed already
    loaded (they must be what the config names: the config still records the sources). The output folder
    is checked first, so a folder that cannot be used fails before anything is loaded or built.
    """
    config.validate()
    info = distributed.init_distributed(config.device)
    if info.is_main:
        check_run_output(output, config, resume)
    if encoder is None:
        encoder = load_encoder(
            config.encoder, revision=config.encoder_revision, progress=progress and info.is_main
        )
    if zoo is None:
        zoo = load_zoo(config.zoo, revision=config.zoo_revision)
    return fit(config, output, encoder=encoder, zoo=zoo, resume=resume, progress=progress)


def evaluate(
    run_dir: str | Path, split: str = "test", zoo: str | None = None, allow_unfinished: bool = False
) -> tuple[str, dict[str, float]]:
    """(task, metrics) of a run's best head on `split` of its zoo, or of another zoo (`zoo`).

    An unfinished run is refused unless ``allow_unfinished`` (then a warning says so).
    """
    run = RunFolder(run_dir)
    if split not in ("train", "validation", "test"):
        raise InvalidInputError(f"split must be train, validation or test, got {split!r}")
    cfg = run.config()
    run.check_finished("evaluate", allow_unfinished=allow_unfinished)
    if zoo is not None:
        cfg.zoo, cfg.zoo_revision = zoo, None
    cfg.device = "cpu"
    head = load_head(run.path)
    return cfg.task, evaluate_run(cfg, head, load_zoo(cfg.zoo, revision=cfg.zoo_revision), split)


# ------------------------------------------------------------------------------------------ adaptation
def adapt_encoder(
    config: AdaptConfig,
    output: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: Any = None,
) -> Path:
    """Adapt the encoder ``config.encoder`` (a foundation-kind encoder: name, folder or Hub id) to the
    weights of the zoo ``config.zoo``, self-supervised, reading no label; the new encoder folder `output`
    loads with `load_encoder(output)`. See `zooprobe.training.adapt.adapt` (resumable)."""
    config.validate()
    check_output(output, ENCODER_OUTPUT, overwrite=not resume)  # before anything is loaded
    encoder = load_encoder(config.encoder, progress=progress)
    return adapt(config, encoder, load_zoo(config.zoo), output, resume=resume, progress=progress,
                 on_epoch_end=on_epoch_end)  # fmt: skip


__all__ = [
    "BUILTIN_PREFIX",
    "DEFAULT_ENCODER_PRESET",
    "DEFAULT_ENCODER_ZOO",
    "SHIPPED_ENCODERS",
    "adapt_encoder",
    "builtin_zoo",
    "default_encoder_path",
    "evaluate",
    "list_encoders",
    "list_presets",
    "load_encoder",
    "load_head",
    "load_zoo",
    "pretrain_encoder",
    "train",
]
