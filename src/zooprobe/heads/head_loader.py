"""Loading a trained head (with its encoder) and predicting properties of state dicts.

A head folder (``RUN_DIR/head``, or a Hub model repo of one) holds ``config.json`` and
``model.safetensors`` (`save_head` writes both; the trainer saves the best epoch's). `load_head_folder`
reads the config strictly, checks that the given encoder is the exact one the head was trained on
(fingerprint of weights, tokenizer and preprocessing), rebuilds the head and loads the weights with
``strict=True``: a mismatched checkpoint is an error, never random weights. A fine-tuned head carries its
encoder's fine-tuned weights, which replace the base ones. `zooprobe.load_head` resolves run folders and
Hub repo ids and loads the encoder the config names (``encoder.source`` at ``encoder.revision``).

A ``gbm`` head (`zooprobe.heads.gbm_head`) also has ``gbm.json`` (its LightGBM models as text). Every head
trained by this zooprobe also has ``trust.json`` and ``domain.safetensors`` (`zooprobe.heads.trust`): its
applicability domain, calibration and per-target reliability, loaded into `LoadedHead.trust`.

`LoadedHead.run` is the one prediction path: it tokenizes and encodes each network, computes its weight
statistics and architecture (for the domain), and returns calibrated predictions. A representation or an
output that is not finite is a `NonFiniteError` naming the network and the cause, never a silent NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zooprobe.core.config import check_record
from zooprobe.core.device import resolve_device
from zooprobe.core.files import atomic_write_json, read_json
from zooprobe.core.tensorfile import HEAD_ADVICE, read_state, save_state
from zooprobe.encoder.base import WeightSpaceEncoder
from zooprobe.errors import ConfigError, InvalidInputError, ZooFormatError
from zooprobe.heads.domain import Architecture, architecture
from zooprobe.heads.encoder_with_head import EncoderWithHead
from zooprobe.heads.gbm_head import GradientBoostingHead, make_head
from zooprobe.heads.integrity import check_content_hash, write_content_hash
from zooprobe.heads.prediction_heads import HeadConfig
from zooprobe.heads.targets import TaskSpec
from zooprobe.heads.trust import TRUST_FILE, Trust
from zooprobe.symmetry import CANONICAL_FORM, canonical_form, canonicalize
from zooprobe.tokens.statistics import featurize

HEAD_FORMAT = 1
REQUIRED = ("format_version", "library_name", "task", "head", "mode", "encoder")


class HeadFormatError(ZooFormatError):
    """A folder does not hold a loadable zooprobe head, or its weights do not match its config."""


MISSING_TRUST = (
    f"the head has no {TRUST_FILE} (saved by an older zooprobe, or the file was removed), so its "
    "applicability domain, intervals and per-target reliability are unknown: its predictions are not known "
    "to be trustworthy, and targets it would withhold as not predictable are shown"
)


class MissingTrustWarning(UserWarning):
    """A head is loaded without its trust files (`MISSING_TRUST`)."""


class NonFiniteError(InvalidInputError):
    """A network's representation or the head's outputs are NaN or inf (the message says which and why)."""


@dataclass
class HeadOutputs:
    """What `LoadedHead.run` computes for N networks."""

    predictions: dict[str, np.ndarray]
    """Calibrated probabilities (binary [N], discrete [N, C]) or metric-space values (continuous [N])."""
    representations: np.ndarray
    """The encoder's pooled representations [N, D] (the head's input; the domain's representation space)."""
    statistics: np.ndarray
    """Weight-statistics features [N, 131]."""
    architectures: list[Architecture]
    raw_statistics: np.ndarray | None = None
    """Weight statistics before `zooprobe.symmetry.normalize_units` [N, 131], for heads whose domain has a
    `zooprobe.heads.domain.FoldDetector` (else None)."""

    def domain_features(self) -> dict[str, np.ndarray | None]:
        """What `ApplicabilityDomain.check` reads of these outputs."""
        return {
            "statistics": self.statistics,
            "representation": self.representations,
            "raw_statistics": self.raw_statistics,
        }


def _largest(state_dict: Mapping[str, torch.Tensor]) -> float:
    values = [
        float(v.detach().abs().max()) for v in state_dict.values() if v.is_floating_point() and v.numel()
    ]
    return max(values, default=0.0)


@dataclass
class LoadedHead:
    """A trained head and its encoder, ready to predict (eval mode); `trust` is its applicability domain,
    calibration and reliability (None for a head saved without them)."""

    model: EncoderWithHead
    config: dict[str, Any]
    source: Path
    trust: Trust | None = None

    @property
    def spec(self) -> TaskSpec:
        return self.model.head.spec

    @property
    def kind(self) -> str:
        """``mlp`` (a neural head) or ``gbm``."""
        return str(self.model.head.config.kind)

    @torch.no_grad()
    def run(
        self,
        state_dicts: Iterable[Mapping[str, torch.Tensor]],
        batch_size: int = 64,
        *,
        statistics: np.ndarray | None = None,
        canonical: bool = True,
    ) -> HeadOutputs:
        """Predictions, representations, statistics and architectures of each state dict (see
        `HeadOutputs`). Unreadable networks are `InvalidInputError`s, non-finite representations or outputs
        `NonFiniteError`s, each naming the state dict (its position) and the cause. `statistics` passes the
        weight statistics when they are known already (several heads on the same networks). The state dicts
        are read `batch_size` at a time (a `Zoo`'s ``state_dicts()`` streams), so only the outputs grow with
        their number. With ``canonical`` (the default) each network is first put in the form training read
        it in (`zooprobe.symmetry.canonical_form`: duplicated units merged, dead ones dropped, each unit's
        scale and sign normalized), so a widened, padded, ReLU-rescaled or tanh-sign-flipped copy of a
        network gets that network's predictions; `statistics` passed in must be those of the canonical
        forms. Several heads on the same networks: `run_heads`."""
        return run_heads([self], state_dicts, batch_size, statistics=statistics, canonical=canonical)[0]

    def canonical_version(self) -> int:
        """The `zooprobe.symmetry.CANONICAL_FORM` the head was trained on (``canonical_form`` in its config;
        heads saved without it, such as older ones, read `zooprobe.symmetry.canonicalize` forms: 1)."""
        return int(self.config.get("canonical_form", 1))

    def reads(self) -> Any:
        """The function that puts a network in the form this head was trained on."""
        return canonical_form if self.canonical_version() == CANONICAL_FORM else canonicalize

    def encoding_key(self) -> tuple[int, bool] | None:
        """Heads with the same key read the same encoder outputs (one frozen encoder object, the same
        outputs asked for), so `run_heads` encodes once for them; None: a fine-tuned head, never shared."""
        if not self.model.frozen:
            return None
        return id(self.model.loaded), self.model.head.pool is not None

    def _pooled(
        self, inputs: Mapping[str, torch.Tensor], chunk: list[dict[str, Any]], s: int
    ) -> torch.Tensor:
        pooled = inputs["pooled"].float()
        bad = ~torch.isfinite(pooled).all(dim=1)
        if bool(bad.any()):
            j = int(bad.nonzero()[0])
            raise NonFiniteError(
                f"state dict {s + j}: the encoder's representation is not finite (NaN or inf); its "
                f"largest weight magnitude is {_largest(chunk[j]):.3g}, beyond what the encoder's "
                "float32 arithmetic can represent"
            )
        return pooled

    def _head_outputs(
        self, inputs: Mapping[str, torch.Tensor], feats: np.ndarray, s: int
    ) -> dict[str, np.ndarray]:
        """The head's raw outputs of one chunk (checked finite)."""
        inputs = dict(inputs)
        if self.model.head.config.uses_statistics:
            f32 = np.clip(feats, -np.finfo(np.float32).max, np.finfo(np.float32).max)
            inputs["stats"] = torch.as_tensor(f32, dtype=torch.float32, device=self.model.loaded.device)
        raw = {}
        for k, v in self.model.head(inputs).items():
            values = v.float().cpu().numpy()
            finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
            if not finite.all():
                j = int(np.flatnonzero(~finite)[0])
                raise NonFiniteError(
                    f"state dict {s + j}: the head's output for {k!r} is not finite (NaN or inf) "
                    "although its representation is; the head's weights may be damaged (retrain or "
                    "reload it)"
                )
            raw[k] = values
        return raw

    def predict(
        self, state_dicts: Iterable[Mapping[str, torch.Tensor]], batch_size: int = 64
    ) -> dict[str, np.ndarray]:
        """Predictions for each state dict: probabilities (binary [N], discrete [N, C]; calibrated when
        the head has a calibration) or values in metric space (continuous [N]; log10 for log targets)."""
        return self.run(state_dicts, batch_size).predictions


@torch.no_grad()
def run_heads(
    heads: Sequence[LoadedHead],
    state_dicts: Iterable[Mapping[str, torch.Tensor]],
    batch_size: int = 64,
    *,
    statistics: np.ndarray | None = None,
    canonical: bool = True,
    independent: bool = False,
) -> list[HeadOutputs]:
    """`LoadedHead.run` of several heads on the same networks, one `HeadOutputs` per head: each network is
    canonicalized, featurized (weight statistics, one batched call per chunk) and its architecture read
    once for all heads, and tokenized and encoded once per encoder that frozen heads share
    (`LoadedHead.encoding_key`); a fine-tuned head encodes with its own encoder.

    ``independent``: every network's outputs are exactly those it gets alone, whatever else is in the chunk
    (the encoder and neural heads run one network at a time, since float32 rounding of a batched forward
    pass depends on the batch; statistics and gradient-boosting heads, exact row by row, stay batched)."""
    if canonical and len({h.canonical_version() for h in heads}) > 1:
        return _run_by_form(heads, state_dicts, batch_size, independent)
    read = heads[0].reads() if heads else canonical_form
    source = iter(state_dicts)
    want_raw = any(h.trust is not None and h.trust.domain is not None and h.trust.domain.fold for h in heads)
    for head in heads:
        head.model.eval()
    raw: list[dict[str, list[np.ndarray]]] = [{t.name: [] for t in h.spec.targets} for h in heads]
    reps: list[list[np.ndarray]] = [[] for _ in heads]
    stats: list[np.ndarray] = []
    raw_stats: list[np.ndarray] = []
    archs: list[Architecture] = []
    s = 0
    while given := list(islice(source, batch_size)):
        chunk = [read(sd) for sd in given] if canonical else given
        if want_raw:  # the domain's folded-BatchNorm check reads the weights before unit normalization
            raw_stats.append(featurize([canonicalize(sd) for sd in given]))
        del given
        feats = featurize(chunk) if statistics is None else statistics[s : s + batch_size]
        archs += [architecture(sd) for sd in chunk]
        stats.append(feats)
        _run_chunk(heads, chunk, feats, s, independent, raw, reps)
        s += len(chunk)
    all_stats = np.concatenate(stats)
    all_raw = np.concatenate(raw_stats) if raw_stats else None
    return [
        HeadOutputs(_calibrated(head, raw[k]), np.concatenate(reps[k]), all_stats, list(archs), all_raw)
        for k, head in enumerate(heads)
    ]


def _run_chunk(
    heads: Sequence[LoadedHead],
    chunk: list[dict[str, torch.Tensor]],
    feats: np.ndarray,
    s: int,
    independent: bool,
    raw: list[dict[str, list[np.ndarray]]],
    reps: list[list[np.ndarray]],
) -> None:
    """One chunk of `run_heads` (networks ``s`` on) through every head, encoded once per shared encoder:
    each head's raw outputs and pooled representations are appended to ``raw[k]`` and ``reps[k]``."""
    shared: dict[Any, list[tuple[dict[str, torch.Tensor], torch.Tensor]]] = {}
    for k, head in enumerate(heads):
        key = head.encoding_key()
        encoded = shared.get(key) if key is not None else None
        if encoded is None:
            encoded = _encode(head, chunk, s, independent)
            if key is not None:
                shared[key] = encoded
        pooled = torch.cat([p for _, p in encoded])
        if len(encoded) > 1 and isinstance(head.model.head, GradientBoostingHead):
            encoded = [({"pooled": pooled}, pooled)]  # it reads pooled + statistics only, row by row
        at = 0
        for inputs, part_pooled in encoded:
            n = len(part_pooled)
            for name, values in head._head_outputs(inputs, feats[at : at + n], s + at).items():
                raw[k][name].append(values)
            at += n
        reps[k].append(pooled.double().cpu().numpy())


def _run_by_form(
    heads: Sequence[LoadedHead],
    state_dicts: Iterable[Mapping[str, torch.Tensor]],
    batch_size: int,
    independent: bool,
) -> list[HeadOutputs]:
    """`run_heads` of heads trained on different canonical forms: each group of one form on its own."""
    networks = list(state_dicts)
    done: dict[int, HeadOutputs] = {}
    for version in sorted({h.canonical_version() for h in heads}):
        group = [h for h in heads if h.canonical_version() == version]
        outs = run_heads(group, networks, batch_size, canonical=True, independent=independent)
        done.update({id(h): o for h, o in zip(group, outs, strict=True)})
    return [done[id(h)] for h in heads]


def _encode(
    head: LoadedHead, chunk: list[dict[str, torch.Tensor]], first: int, independent: bool
) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """(head inputs, pooled representation) of a chunk of networks, encoded one network at a time when
    ``independent`` (batched float32 rounding depends on the batch). The chunk is tokenized at once: every
    encoder kind's `tokenize_many` gives each network exactly its tokens alone (tested per kind)."""
    tokenized = head.model.loaded.tokenize_many(chunk, first)
    n = len(chunk)
    parts = [(i, i + 1) for i in range(n)] if independent else [(0, n)]
    encoded = []
    for a, b in parts:
        inputs = head.model.head_inputs(tokenized[a:b])
        encoded.append((inputs, head._pooled(inputs, chunk[a:b], first + a)))
    return encoded


def _calibrated(head: LoadedHead, raw: Mapping[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    preds = head.model.head.predict({name: np.concatenate(v) for name, v in raw.items()})
    if head.trust is not None and head.trust.calibration is not None:
        preds = head.trust.calibration.apply(head.spec, preds)
    return preds


def head_folder(source: str | Path) -> Path:
    """A run folder's ``head/`` subfolder, or the folder itself if it holds a head config."""
    path = Path(source)
    if (path / "head" / "config.json").is_file():
        return path / "head"
    return path


def read_head_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise HeadFormatError(f"{folder}: no config.json, so this is not a zooprobe head (or a run folder)")
    data = dict(
        check_record(
            read_json(path, "head config", HeadFormatError),
            str(path),
            HeadFormatError,
            fields=REQUIRED,
            version=HEAD_FORMAT,
        )
    )
    if data["library_name"] != "zooprobe" or data.get("model_type") != "zooprobe-head":
        raise HeadFormatError(f"{path}: not a zooprobe head (library_name/model_type)")
    return data


def load_head_folder(
    folder: str | Path,
    encoder: WeightSpaceEncoder,
    *,
    device: str = "cpu",
    check_encoder: bool = True,
    trust: bool = False,
) -> LoadedHead:
    """Load the head in `folder` (a head folder, or a run folder's ``head/``) on top of `encoder`.

    `zooprobe.load_head` takes run folders and Hub repo ids and loads the encoder the head names. With
    ``check_encoder`` the encoder must be the exact one the head was trained with (fingerprint). The
    folder's files must match its content hash (`zooprobe.heads.integrity`: a `HeadModifiedError`
    otherwise) unless ``trust`` (for heads edited on purpose). A head without trust files loads with a
    `MissingTrustWarning`: its domain, intervals and reliability are unknown.
    """
    folder = head_folder(Path(folder))
    check_content_hash(folder, trust=trust)
    config = read_head_config(folder)
    enc_info = config["encoder"]
    if check_encoder and encoder.fingerprint() != enc_info.get("fingerprint"):
        raise HeadFormatError(
            f"{folder}: the encoder {enc_info['source']!r} (revision {enc_info.get('revision')}) is not "
            "the one this head was trained with (its weights, tokenizer or preprocessing differ); pass the "
            "original encoder, or check_encoder=False at your own risk"
        )
    try:
        spec = TaskSpec.from_dict(config["task"])
        head = make_head(spec, HeadConfig.from_saved(config["head"]), encoder.latent_dim)
    except ConfigError as e:
        raise HeadFormatError(
            f"{folder / 'config.json'}: {e}; restore the file, or train the head again"
        ) from e
    model = EncoderWithHead(encoder, head, config["mode"])
    if isinstance(head, GradientBoostingHead):
        head.load_models(folder)
    path = folder / "model.safetensors"
    if not path.is_file():
        raise HeadFormatError(f"{folder}: no model.safetensors (the head's weights)")
    try:
        tensors, _ = read_state(path, what="head checkpoint", require_meta=False, advice=HEAD_ADVICE)
    except InvalidInputError as e:
        raise HeadFormatError(str(e)) from e
    try:
        model.load_trainable_state_dict(tensors)
    except (RuntimeError, ConfigError) as e:
        raise HeadFormatError(f"{path} does not match the head described in config.json: {e}") from e
    model.to(resolve_device(device)).eval()
    trust_record = Trust.load(folder)
    if trust_record is None:
        warnings.warn(f"{folder}: {MISSING_TRUST}", MissingTrustWarning, stacklevel=2)
    return LoadedHead(model, config, folder, trust_record)


def save_head(
    model: EncoderWithHead,
    config: dict[str, Any],
    folder: str | Path,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a head folder (`load_head_folder` reads it back): ``config.json`` (`config`, as the trainer's
    `head_config` builds it) and ``model.safetensors`` (the trainable weights: the head, plus the encoder's
    when fine-tuned; `meta` such as the epoch goes into its header), and a gbm head's ``gbm.json``. All are
    written atomically, config.json last, then the folder's content hash (`write_content_hash`; `Trust.save`
    writes the trust files and the hash again)."""
    folder = Path(folder)
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise ConfigError(f"save_head: the head config lacks {missing}")
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model.head, GradientBoostingHead):
        model.head.save_models(folder)
    save_state(folder / "model.safetensors", model.trainable_state_dict(), meta or {})
    config = {**config, "canonical_form": config.get("canonical_form", CANONICAL_FORM)}  # what it read
    atomic_write_json(folder / "config.json", config)
    write_content_hash(folder)
    return folder


__all__ = [
    "HEAD_FORMAT",
    "MISSING_TRUST",
    "HeadFormatError",
    "HeadOutputs",
    "LoadedHead",
    "MissingTrustWarning",
    "NonFiniteError",
    "head_folder",
    "load_head_folder",
    "read_head_config",
    "run_heads",
    "save_head",
]
