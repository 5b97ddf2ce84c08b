"""What every encoder kind shares: the `WeightSpaceEncoder` interface and the encoder folder's files.

An encoder *kind* (``tokens``: the v2 weight-token transformer, `encoder_loader`; ``neurons``: the v3
neuron-level encoder, `neuron_loader`; a new one: its own module) is a subclass of `WeightSpaceEncoder`
registered with `zooprobe.encoder.registry.register_encoder`. It declares

- ``architecture``: its tag (config.json's ``architecture`` field; v2 folders predate the field and are
  recognised by their ``format_version``), ``format_version`` and ``config_class`` (its torch-free config);
- ``tokenize`` (a state dict -> the kind's input), ``embed`` (inputs -> `Embeddings`), ``latent_dim`` and
  ``_fingerprint_meta`` (what, besides the weights, decides how it encodes);
- ``save_pretrained(folder)`` and ``from_folder(folder, data, device)`` (the strict reader of its
  config.json content `data`), usually over `write_encoder_folder` and `load_weights` below;
- the capability flag ``token_outputs`` (True when ``embed(..., token_outputs=True)`` gives per-token
  latents, which attention-pooling heads need).

The base class gives ``encode`` (state dicts or a zoo -> ``[N, latent_dim]``), ``fingerprint``,
``model_ids``, ``finished`` and ``tokenize_many``. Loading any folder: `zooprobe.encoder.auto`.

An encoder folder (a Hugging Face model repo) holds::

    config.json        format_version, library_name "zooprobe", the kind's fields, provenance
    model.safetensors  the weights (safetensors only: nothing is ever unpickled)
    README.md          the model card, generated from config.json
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError

from zooprobe.core.environment import library_versions
from zooprobe.core.files import atomic_write_json, atomic_write_text, read_json
from zooprobe.core.outputs import OutputKind, claim_output, holding_outputs
from zooprobe.core.tensorfile import load_safetensors, write_safetensors
from zooprobe.errors import ConfigError, InvalidInputError, ZooFormatError
from zooprobe.hub import is_repo_id

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
LIBRARY_NAME = "zooprobe"

_ENCODE_CHUNK = 2048
"""At most this many models are tokenized together by `encode`: a larger chunk holds more models of each
architecture, which `tokenize_many` handles together (on the bench zoo, 2048 instead of 512 cut the
tokenizing time by a third)."""
_ENCODE_CHUNK_BYTES = 256 * 2**20
"""... and a chunk is closed once its weights reach this many bytes (bounds memory on large models)."""


def encode_chunks(
    source: Iterator[Any], max_models: int = _ENCODE_CHUNK, max_bytes: int = _ENCODE_CHUNK_BYTES
) -> Iterator[list[Any]]:
    """Consecutive lists of `source`'s items, each closed at `max_models` items or once its tensors hold
    `max_bytes` bytes (a single larger model makes a chunk of its own)."""
    chunk: list[Any] = []
    size = 0
    for item in source:
        chunk.append(item)
        if isinstance(item, Mapping):
            size += sum(t.nbytes for t in item.values() if isinstance(t, torch.Tensor))
        if len(chunk) >= max_models or size >= max_bytes:
            del item  # while suspended, hold only the chunk (a caller may empty it to free its weights)
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


ENCODER_OUTPUT = OutputKind(
    "encoder",
    owned=(
        CONFIG_FILE,
        WEIGHTS_FILE,
        CARD_FILE,
        "last/*",  # pretraining: the encoder after the last finished epoch (an encoder folder itself)
        "training_state.safetensors",  # pretraining: everything needed to resume
        "tensorboard/events.out.tfevents.*",  # pretraining: TensorBoard logs
        "tb/events.out.tfevents.*",  # (the folder's name before zooprobe 0.2)
        "train.log",  # pretraining: the run's log
        "adapt_config.yaml",  # encoder adapt: the run's configuration
    ),
    signature=("training_state.safetensors",),
)
"""The files zooprobe writes into an encoder folder (see `zooprobe.core.outputs`)."""


class UnfinishedEncoderWarning(UserWarning):
    """The encoder folder comes from a pretraining run that was interrupted before its last epoch."""


class EncoderFormatError(ZooFormatError):
    """A folder does not hold a loadable zooprobe encoder (missing file or field, unknown format version)."""


class EncoderWeightsError(EncoderFormatError):
    """model.safetensors does not match the architecture in config.json; the message names the tensors."""


# ------------------------------------------------------------------------------------------ loaded encoder
@dataclass
class Embeddings:
    """Output of `WeightSpaceEncoder.embed`: pooled embeddings [N, latent_dim] and, on request, per-token
    latents (one [n_tokens_i, latent_dim] tensor per model)."""

    pooled: torch.Tensor
    tokens: list[torch.Tensor] | None = None


class WeightSpaceEncoder:
    """A loaded encoder of any kind (see the module docs): provenance, the fingerprint, and `encode` over
    the subclass's ``tokenize`` and ``embed``.

    A subclass has the attributes ``encoder`` (the module), ``provenance`` and ``source``, the class
    attributes below, the property ``latent_dim`` and the methods ``tokenize``, ``embed``,
    ``_fingerprint_meta``, ``save_pretrained`` and ``from_folder``.
    """

    architecture: ClassVar[str] = ""
    """The kind's tag: config.json's ``architecture`` field, the key of `registry.register_encoder`."""
    format_version: ClassVar[int] = 0
    """The config.json format version this kind writes and reads."""
    config_class: ClassVar[type] = object
    """The kind's torch-free configuration (``to_dict``/``from_dict``)."""
    token_outputs: ClassVar[bool] = False
    """Whether ``embed(..., token_outputs=True)`` returns per-token latents (attention-pooling heads)."""
    preprocessing: Any = None
    """How state dicts become inputs, saved with the encoder (tokens: windows); None when not needed."""

    encoder: Any
    provenance: dict[str, Any]
    source: Path | None

    @property
    def config(self) -> Any:
        """The encoder's configuration (an instance of ``config_class``)."""
        return self.encoder.config

    @property
    def latent_dim(self) -> int:
        raise NotImplementedError

    @property
    def n_blocks(self) -> int:
        """Stacked blocks of the module (``encoder.blocks``) that fine-tuning with ``unfreeze_top_layers``
        counts from the top; 0 for a kind without them."""
        return len(getattr(self.encoder, "blocks", ()))

    def tokenize(self, state_dict: Mapping[str, torch.Tensor]) -> Any:
        raise NotImplementedError

    def embed(
        self,
        tokenized: Sequence[Any],
        batch_size: int = 64,
        token_outputs: bool = False,
        stats: Any = None,
        frozen_blocks: int = 0,
    ) -> Embeddings:
        raise NotImplementedError

    def _fingerprint_meta(self) -> dict[str, Any]:
        raise NotImplementedError

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write this encoder as an encoder folder (see the module docs); returns `folder`."""
        raise NotImplementedError

    @classmethod
    def from_folder(cls, folder: Path, data: dict[str, Any], device: str = "cpu") -> WeightSpaceEncoder:
        """Load the encoder folder `folder` whose config.json content is `data` (strict)."""
        raise NotImplementedError

    @staticmethod
    def model_card(config: Mapping[str, Any]) -> str:
        """The README.md of a folder of this kind, generated from its config.json content."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def model_ids(self) -> list[str]:
        """Model ids the encoder was pretrained on (evaluate heads on models outside this list)."""
        return list(self.provenance.get("model_ids", []))

    @property
    def finished(self) -> bool:
        """False for an encoder saved by a pretraining run that has not reached its last epoch (yet)."""
        return self.provenance.get("finished", True) is not False

    def fingerprint(self) -> str:
        """sha256 over the encoder's weights and everything else that decides how it encodes (architecture,
        tokenizer, preprocessing, targets): equal fingerprints encode every state dict identically."""
        h = hashlib.sha256()
        h.update(json.dumps(self._fingerprint_meta(), sort_keys=True, default=str).encode())
        for name, t in sorted(self.encoder.state_dict().items()):
            t = t.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()

    def unfinished_message(self) -> str | None:
        """Why this encoder is unfinished (for warnings), or None when it is finished."""
        if self.finished:
            return None
        prov = self.provenance
        config = prov.get("pretrain_config") or {}
        return (
            f"encoder {self.source}: its pretraining was interrupted (saved after epoch "
            f"{prov.get('epochs_trained', '?')} of {config.get('epochs', '?')}); run the same `zooprobe "
            "encoder pretrain` command again to finish it"
        )

    @torch.no_grad()
    def encode(
        self,
        state_dicts: Iterable[Mapping[str, torch.Tensor]] | Any,
        batch_size: int = 64,
        stats: dict[str, float] | None = None,
    ) -> torch.Tensor:
        """Pooled embeddings ``[N, latent_dim]`` (float32, CPU) of state dicts (or of a `Zoo`'s rows).

        Models are tokenized exactly as in pretraining and embedded a chunk at a time (`encode_chunks`) by
        `embed`; no gradients, eval mode. If `stats` is a dict, it receives counts and times: ``n_models,
        n_windows, n_tokens, n_padded_tokens, tokenize_s, forward_s, flops`` (and what `embed` adds).
        """

        if batch_size < 1:
            raise ConfigError(f"encode: batch_size must be >= 1, got {batch_size}")

        source: Iterator[Mapping[str, torch.Tensor]] = (
            state_dicts.state_dicts() if _is_zoo(state_dicts) else iter(state_dicts)
        )
        acc: dict[str, float] = {"n_models": 0, "n_windows": 0, "n_tokens": 0, "n_padded_tokens": 0}
        acc.update({"tokenize_s": 0.0, "forward_s": 0.0, "flops": 0.0})
        outputs: list[torch.Tensor] = []
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            for chunk in encode_chunks(source):
                start = time.perf_counter()
                tms = self.tokenize_many(chunk, int(acc["n_models"]))
                acc["tokenize_s"] += time.perf_counter() - start
                start = time.perf_counter()
                outputs.append(self.embed(tms, batch_size, stats=acc).pooled.float().cpu())
                acc["forward_s"] += time.perf_counter() - start
                acc["n_models"] += len(chunk)
                acc["n_tokens"] += sum(tm.num_tokens for tm in tms)
        finally:
            self.encoder.train(was_training)
        if stats is not None:
            stats.update({k: (int(v) if k.startswith("n_") else v) for k, v in acc.items()})
        if not outputs:
            return torch.empty(0, self.latent_dim)
        return torch.cat(outputs)

    def tokenize_many(self, state_dicts: Sequence[Any], indices: Sequence[int] | int = 0) -> list[Any]:
        """`tokenize_checked` of each state dict; `indices` are their positions in the caller's input (for
        error messages), or the position of the first of consecutive ones. `LoadedEncoder` tokenizes
        same-architecture models together."""
        if isinstance(indices, int):
            indices = range(indices, indices + len(state_dicts))
        return [self.tokenize_checked(sd, i) for sd, i in zip(state_dicts, indices, strict=True)]

    def tokenize_checked(self, sd: Any, index: int) -> Any:
        """`tokenize` for the `index`-th item of a batch: a non-state-dict, an unrepresentable tensor or an
        empty model is an `InvalidInputError` naming the item."""
        if not isinstance(sd, Mapping):
            raise InvalidInputError(f"encode: item {index} is a {type(sd).__name__}, not a state dict")
        try:
            tm = self.tokenize(sd)
        except InvalidInputError as e:
            raise type(e)(f"encode: state dict {index}: {e}") from e
        if tm.num_tokens == 0:
            raise InvalidInputError(f"encode: state dict {index} has no weights to encode")
        return tm


@holding_outputs  # the folder's lock is released when it returns
def write_encoder_folder(
    folder: str | Path,
    encoder: torch.nn.Module,
    format_version: int,
    fields: Mapping[str, Any],
    provenance: Mapping[str, Any],
    card: Callable[[dict[str, Any]], str],
) -> Path:
    """Write an encoder folder of either architecture (the one writer behind `save_encoder` and
    `neuron_loader.save_neuron_encoder`): claim `folder`, then the weights (safetensors), config.json
    (``format_version``, the architecture's `fields`, provenance with the parameter count, library
    versions) and the model card made from it by `card`. Every file is written atomically, weights first, so
    a folder whose config.json exists always has weights."""
    folder = Path(folder)
    claim_output(folder, ENCODER_OUTPUT, option="encoder folder")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in encoder.state_dict().items()}
    write_safetensors(folder / WEIGHTS_FILE, tensors, {"format": "pt", "library": LIBRARY_NAME})
    prov = dict(provenance)
    prov.setdefault("encoder_parameters", sum(p.numel() for p in encoder.parameters()))
    config = {
        "format_version": format_version,
        "library_name": LIBRARY_NAME,
        "model_type": "zooprobe-weight-encoder",
        **fields,
        "provenance": prov,
        "library_versions": library_versions(),
    }
    atomic_write_json(folder / CONFIG_FILE, config)
    atomic_write_text(folder / CARD_FILE, card(config))
    return folder


def load_weights(folder: Path, encoder: torch.nn.Module) -> None:
    """Load model.safetensors of `folder` into `encoder` strictly; mismatches are named."""

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise EncoderFormatError(f"{folder}: no {WEIGHTS_FILE} (the encoder's weights)")
    try:
        tensors = load_safetensors(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise EncoderWeightsError(f"{path}: not a readable safetensors file ({e})") from e
    expected = encoder.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    mismatched = [
        f"{k}: file {tuple(tensors[k].shape)} {tensors[k].dtype}, expected {tuple(v.shape)} {v.dtype}"
        for k, v in expected.items()
        if k in tensors and (tensors[k].shape != v.shape or tensors[k].dtype != v.dtype)
    ]
    problems = []
    if missing:
        problems.append(f"missing tensor(s) {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
    if unexpected:
        problems.append(f"unexpected tensor(s) {unexpected[:10]}" + (" ..." if len(unexpected) > 10 else ""))
    if mismatched:
        problems.append("mismatched tensor(s) " + "; ".join(mismatched[:10]))
    if problems:
        raise EncoderWeightsError(
            f"{path} does not match the architecture in {CONFIG_FILE}: " + "; ".join(problems)
        )
    nonfinite = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise EncoderWeightsError(f"{path}: non-finite values in {nonfinite[:10]}")
    encoder.load_state_dict(tensors, strict=True)


def _is_zoo(source: Any) -> bool:
    """A `zooprobe.zoo.Zoo` (or a view of one): it yields its models with ``state_dicts()``. Encoders do
    not import the zoo stage, so the test is by behaviour."""
    return not isinstance(source, Mapping) and callable(getattr(source, "state_dicts", None))


def read_encoder_config(folder: str | Path) -> dict[str, Any]:
    """The content of `folder`'s config.json (an object), or `EncoderFormatError` naming what is wrong."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise EncoderFormatError(f"{folder}: no {CONFIG_FILE}, so this folder is not a zooprobe encoder")
    return read_json(path, "encoder config", EncoderFormatError)


def warn_if_unfinished(loaded: WeightSpaceEncoder, stacklevel: int = 3) -> None:
    """Warn (`UnfinishedEncoderWarning`) when `loaded` comes from an interrupted pretraining run."""
    message = loaded.unfinished_message()
    if message is not None:
        warnings.warn(message, UnfinishedEncoderWarning, stacklevel=stacklevel + 1)


def check_embed_args(encoder: WeightSpaceEncoder, batch_size: int, token_outputs: bool) -> None:
    """The arguments of ``embed`` every kind checks: a positive batch size, and per-token latents only
    from a kind that has them."""
    if batch_size < 1:
        raise ConfigError(f"embed: batch_size must be >= 1, got {batch_size}")
    if token_outputs and not encoder.token_outputs:
        raise ConfigError(
            f"this encoder (architecture {encoder.architecture!r}) has no per-token latents, so "
            "attention-pooling heads cannot read it; use a head with mean pooling (the default)"
        )


def card_how_to_load(load_line: str, use_line: str) -> list[str]:
    """The "How to load" section of an encoder folder's model card: a Python block of `load_line` (loading
    the encoder) and `use_line` (encoding with it)."""
    return ["", "## How to load", "", "```python", "import zooprobe", "", load_line, use_line, "```", ""]


def card_header(tags: Sequence[str], zoo_source: str | None = None) -> dict[str, Any]:
    """The YAML header of an encoder folder's model card; the zoo is listed as its dataset when it is a
    Hub repo id."""
    header: dict[str, Any] = {
        "library_name": LIBRARY_NAME,
        "license": "mit",
        "pipeline_tag": "feature-extraction",
        "tags": ["zooprobe", "weight-space-learning", "model-zoo", *tags],
    }
    if zoo_source and is_repo_id(zoo_source):
        header["datasets"] = [zoo_source]
    return header


EncoderRuntime = WeightSpaceEncoder
"""The name of `WeightSpaceEncoder` before zooprobe 0.3."""

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "ENCODER_OUTPUT",
    "LIBRARY_NAME",
    "WEIGHTS_FILE",
    "Embeddings",
    "EncoderFormatError",
    "EncoderRuntime",
    "EncoderWeightsError",
    "UnfinishedEncoderWarning",
    "WeightSpaceEncoder",
    "card_header",
    "card_how_to_load",
    "check_embed_args",
    "encode_chunks",
    "load_weights",
    "read_encoder_config",
    "warn_if_unfinished",
    "write_encoder_folder",
]
