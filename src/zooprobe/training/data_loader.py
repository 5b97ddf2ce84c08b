"""The data of a head-training run: splits by model, targets, the overlap check, and encoder inputs.

- Splits come from the zoo (by model, never by checkpoint); ``checkpoints="final"`` keeps each run's last
  checkpoint.
- Overlap: a validation or test model that the encoder was pretrained on would inflate the metrics. A
  model overlaps when its stored weights have the content hash of a pretraining model, or when the zoo is
  the pretraining zoo (same fingerprint) and its model id is a pretraining id. Overlap is refused unless
  ``allow_overlap`` is set; then the run records it (``overlap`` in metrics.json) and warns.
- Split leaks: a model whose exact weights are in train and also in validation or test (a copy) is scored on
  what the head was trained on. `check_split_leaks` (`zoo.store.split_leaks`) refuses it unless
  ``allow_split_leaks`` is set; then the run is marked (`RunData.split_leaks`) and warns.
- Targets (`heads.targets.resolve_targets`): explicit targets that are empty or constant in the train split
  are errors; such default targets are left out with a warning (`RunData.dropped_targets`). A target
  without any value in validation or test warns (its metrics there are NaN). ``stop.monitor`` must be one
  of the task's metrics (`heads.evaluate.metric_names`). All of this is checked before anything is
  encoded, and every warning is also kept in `RunData.warnings` for metrics.json.
- Frozen mode reads representations from `RepresentationCache` (or recomputes them when the cache is
  off); fine-tuning tokenizes once (or keeps state dicts to augment on the fly).
- Large zoos (``TrainConfig.weights_memory_mb``): no step holds every model's weights. Statistics and
  architectures are computed one model at a time, representations a chunk of at most that size at a time
  (`compute_representations`), and fine-tuning keeps tokenized models only when the selected models'
  stored weights fit; otherwise the splits are *streamed* (`SplitData.streamed`): every batch reads its
  models from the zoo and tokenizes them, and `zooprobe.training.batches.train_batches` draws training
  batches from a few shuffled row groups at a time so each row group is read once per epoch.
- Every split also gets each model's weight statistics and architecture (`SplitData.features`,
  `SplitData.architectures`): the applicability domain is fitted and measured on them, and heads that
  read statistics (`HeadConfig.uses_statistics`) take theirs from the same array. They are a pure function
  of the split's stored weights, so the process keeps the last few (`_FEATURES_MEMO`, by
  `Zoo.selection_key`): runs one after another on one zoo (the demo, a baseline next to its run) compute
  them once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from zooprobe.encoder.augment import noise_state_dict, permute_neurons
from zooprobe.encoder.base import WeightSpaceEncoder, encode_chunks
from zooprobe.errors import InvalidInputError
from zooprobe.heads.domain import Architecture, architecture
from zooprobe.heads.encoder_with_head import pad_tokens
from zooprobe.heads.targets import (
    TargetArrays,
    TaskSpec,
    build_task_spec,
    count_missing,
    resolve_targets,
    target_arrays,
)
from zooprobe.representations.cache import (
    RepresentationCache,
    Representations,
    compute_representations,
)
from zooprobe.symmetry import SymmetryError, canonical_form, canonicalize, fold_batchnorm
from zooprobe.tokens import TokenizedModel
from zooprobe.tokens.statistics import FEATURIZE_WORKING_COPIES, featurize
from zooprobe.training.config import TrainConfig
from zooprobe.training.data_checks import (
    _check_finite_targets,
    _check_overlap,
    _warn,
    check_split_leaks,
    find_overlap,
)

log = logging.getLogger(__name__)
SPLIT_NAMES = ("train", "validation", "test")


@dataclass
class SplitData:
    """One split: its zoo view, metadata, targets and the encoder inputs of the run's mode."""

    name: str
    zoo: Any
    meta: pd.DataFrame
    targets: TargetArrays
    reps: Representations | None = None
    tokenized: list[TokenizedModel] | None = None
    state_dicts: list[dict[str, torch.Tensor]] | None = None
    streamed: bool = False
    """Fine-tuning reads this split's models from `zoo` batch by batch (neither `tokenized` nor
    `state_dicts` is kept; see the module docs)."""
    stats: torch.Tensor | None = None
    """Weight-statistics features [N, F] as the head reads them (``HeadConfig.uses_statistics``)."""
    features: np.ndarray | None = None
    """Weight-statistics features [N, F], float64, of every model (the applicability domain)."""
    architectures: list[Architecture] | None = None
    """Each model's `Architecture` (the applicability domain)."""
    raw_features: np.ndarray | None = None
    """Weight statistics before `zooprobe.symmetry.normalize_units` (the domain's `FoldDetector`)."""
    folded_features: np.ndarray | None = None
    """Train split: raw weight statistics of its BatchNorm models, BatchNorm folded (`FoldDetector`)."""

    def __len__(self) -> int:
        return len(self.meta)


@dataclass
class RunData:
    spec: TaskSpec
    splits: dict[str, SplitData]
    overlap: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, dict[str, int]] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    dropped_targets: dict[str, str] = field(default_factory=dict)
    """Default targets left out because the train split cannot fit them (name -> why)."""
    split_leaks: dict[str, Any] = field(default_factory=dict)
    """Models with identical weights in several splits: ``checked``, ``leaks`` (hash, model ids, splits),
    ``allowed``."""
    warnings: list[str] = field(default_factory=list)
    """Every warning `plan_data` issued (also sent through `warnings.warn`), for metrics.json."""


def select_checkpoints(zoo: Any, checkpoints: str) -> Any:
    return zoo.final() if checkpoints == "final" else zoo


def prepare_data(cfg: TrainConfig, encoder: WeightSpaceEncoder, zoo: Any, **options: Any) -> RunData:
    """Splits, targets and encoder inputs for `cfg` (see the module docs): `plan_data`, then `load_inputs`
    (`options`: its keyword arguments)."""
    return load_inputs(plan_data(cfg, encoder, zoo), cfg, encoder, **options)


def plan_data(cfg: TrainConfig, encoder: WeightSpaceEncoder, zoo: Any) -> RunData:
    """Splits, targets and the checks of the module docs, without encoder inputs (cheap: nothing is
    encoded, so a bad option fails in seconds)."""
    zoo = select_checkpoints(zoo, cfg.checkpoints)
    views = {name: zoo.split(name) for name in SPLIT_NAMES}
    empty = [n for n, v in views.items() if len(v) == 0]
    if empty:
        raise InvalidInputError(
            f"zoo {cfg.zoo!r} has no models in split(s) {empty}; head training needs train, validation "
            "and test splits (by model)"
        )
    notes: list[str] = []
    # Configuration checks that need the data come first: they are cheap and fail before any encoding.
    train_meta = views["train"].metadata()
    selection = resolve_targets(cfg.task, train_meta, cfg.targets)
    if selection.dropped:
        _warn(notes, selection.warning(cfg.task))
    spec = build_task_spec(
        cfg.task,
        train_meta,
        selection.names,
        log_targets=cfg.log_targets,
        loss_weights=cfg.loss_weights,
        bounded_accuracy=cfg.bounded_accuracy,
    )
    leaks, leak_warning = check_split_leaks(zoo, cfg.zoo, cfg.allow_split_leaks)
    if leak_warning:
        _warn(notes, leak_warning)

    overlap = _check_overlap(cfg, encoder, zoo, notes)
    splits, missing = _split_data(spec, views, notes, cfg.zoo)
    return RunData(
        spec,
        splits,
        overlap,
        missing,
        {},
        dropped_targets=dict(selection.dropped),
        split_leaks=leaks,
        warnings=notes,
    )


def _split_data(
    spec: TaskSpec, views: dict[str, Any], notes: list[str], source: Any
) -> tuple[dict[str, SplitData], dict[str, dict[str, int]]]:
    """Each split's metadata and targets, and the missing target values per split (a warning for targets
    a validation or test split cannot score)."""
    splits: dict[str, SplitData] = {}
    missing: dict[str, dict[str, int]] = {}
    for name, view in views.items():
        meta = view.metadata().reset_index(drop=True)
        _check_finite_targets(spec, meta, source, name)
        targets = target_arrays(spec, meta)
        missing[name] = count_missing(spec, targets)
        splits[name] = SplitData(name, view, meta, targets)
        unusable = [t for t, n in missing[name].items() if n == len(meta)]
        if name != "train" and unusable:
            _warn(
                notes,
                f"target(s) {unusable} have no usable value in the {name} split ({len(meta)} models: "
                f"missing, or classes the train split never showed): their {name} metrics are NaN",
                4,
            )
    return splits, missing


def load_inputs(
    data: RunData,
    cfg: TrainConfig,
    encoder: WeightSpaceEncoder,
    *,
    main_process: bool = True,
    wait: Any = None,
    progress: bool = True,
) -> RunData:
    """Fill the encoder inputs of every split of `data` (returned): weight statistics for heads that read
    them, cached representations (frozen) or tokenized models (fine-tuning).

    Under torchrun only the main process fills the representation cache; the others call `wait` (a
    barrier) first and then read it.
    """
    splits = data.splits
    budget = memory_budget(cfg)
    _featurize_splits(splits, cfg, budget)
    if cfg.mode == "frozen":
        _fill_representations(data, cfg, encoder, budget, main_process, wait, progress)
    else:
        _fill_models(splits, cfg, encoder, budget)
    return data


#: (features, architectures, raw features, folded features) of the last few splits, by
#: (`Zoo.selection_key`, whether folded features were computed); a few hundred kB per thousand models.
_FEATURES_MEMO: dict[tuple[str, bool], tuple[Any, ...]] = {}
_FEATURES_MEMO_SIZE = 6


def _featurize_splits(splits: dict[str, SplitData], cfg: TrainConfig, budget: int) -> None:
    """Weight statistics and architectures of every split (read in chunks within the memory budget, or
    taken from `_FEATURES_MEMO`)."""
    for split in splits.values():
        selection = getattr(split.zoo, "selection_key", None)
        key = (selection() if selection is not None else "", split.name == "train")
        if not key[0]:
            _FEATURES_MEMO.pop(key, None)  # not a stored zoo: computed every time
        if key not in _FEATURES_MEMO:
            _FEATURES_MEMO[key] = _featurize(split, budget)
            while len(_FEATURES_MEMO) > _FEATURES_MEMO_SIZE:
                del _FEATURES_MEMO[next(iter(_FEATURES_MEMO))]
        features, archs, raw, folded = _FEATURES_MEMO[key] if key[0] else _FEATURES_MEMO.pop(key)
        split.features, split.architectures = features.copy(), list(archs)
        split.raw_features = raw.copy()
        if split.name == "train":
            split.folded_features = None if folded is None else folded.copy()
        if cfg.head.uses_statistics:
            split.stats = torch.as_tensor(split.features, dtype=torch.float32)


def _featurize(split: SplitData, budget: int) -> tuple[Any, ...]:
    """(features, architectures, raw features, folded features or None) of `split`."""
    archs: list[Any] = []

    def models() -> Iterator[dict[str, torch.Tensor]]:
        for i in range(len(split)):
            sd = _zoo_model(split, i)
            archs.append(architecture(sd))
            yield sd

    chunk = max(1, budget // FEATURIZE_WORKING_COPIES)  # only the features and architectures are kept
    features = featurize(models(), chunk_bytes=chunk)
    raw, folded = raw_statistics(split, chunk, folded=split.name == "train")
    return features, archs, raw, folded


def _fill_representations(
    data: RunData,
    cfg: TrainConfig,
    encoder: WeightSpaceEncoder,
    budget: int,
    main_process: bool,
    wait: Any,
    progress: bool,
) -> None:
    """Frozen heads: every split's representations, from the cache (filled by the main process) or
    computed."""
    splits, cache_info = data.splits, data.cache
    token_outputs = cfg.head.pooling == "attention"
    cache = RepresentationCache()
    if not main_process and wait is not None:
        wait()
    for name, split in splits.items():
        if cfg.cache:
            stats: dict[str, Any] = {}
            split.reps = cache.get(
                encoder,
                split.zoo,
                token_outputs=token_outputs,
                batch_size=cfg.encode_batch_size,
                chunk_bytes=budget,
                progress=progress and main_process,
                stats=stats,
            )
            cache_info[name] = stats
        else:
            split.reps = compute_representations(
                encoder,
                split.zoo,
                token_outputs=token_outputs,
                batch_size=cfg.encode_batch_size,
                chunk_bytes=budget,
                progress=False,
            )
    if main_process and wait is not None:
        wait()


def _fill_models(
    splits: dict[str, SplitData], cfg: TrainConfig, encoder: WeightSpaceEncoder, budget: int
) -> None:
    """Fine-tuning: every split's tokenized models, the train split's state dicts (augmented), or none when
    the weights exceed the budget (streamed from the zoo)."""
    stored = sum(split.zoo.weight_bytes() for split in splits.values())
    stream = stored > budget
    if stream:
        log.info(
            "fine-tuning streams the models from the zoo: their weights (%.0f MiB stored) exceed "
            "weights_memory_mb=%g",
            stored / 2**20,
            cfg.weights_memory_mb,
        )
    for name, split in splits.items():
        if stream:
            split.streamed = True
        elif cfg.augment and name == "train":
            split.state_dicts = [_zoo_model(split, i) for i in range(len(split))]
        else:
            split.tokenized = [tm for chunk in tokenized_chunks(encoder, split, budget) for tm in chunk]


def memory_budget(cfg: TrainConfig) -> int:
    """``cfg.weights_memory_mb`` in bytes."""
    return max(1, int(cfg.weights_memory_mb * 2**20))


def split_state_dict(split: SplitData, i: int) -> dict[str, torch.Tensor]:
    """Row `i`'s state dict (float64 tensors as float32): kept in memory, or read from the zoo."""
    if split.state_dicts is not None:
        return split.state_dicts[i]
    return _zoo_model(split, i)


def tokenized_chunks(
    loaded: Any, split: SplitData, max_bytes: int, max_models: int = 2048
) -> Iterator[list[Any]]:
    """The encoder inputs of every row of a fine-tuning split, in order, in chunks of at most `max_models`
    models and about `max_bytes` bytes of decoded weights (kept ones are sliced; others are tokenized now,
    read from the zoo when the split is streamed)."""
    if split.tokenized is not None:
        for s in range(0, len(split), max_models):
            yield split.tokenized[s : s + max_models]
        return
    first = 0
    rows = (split_state_dict(split, i) for i in range(len(split)))
    for sds in encode_chunks(rows, max_models, max_bytes):
        yield loaded.tokenize_many(sds, first)  # same-architecture models together
        first += len(sds)


def split_tokenized(loaded: Any, split: SplitData, index: Any) -> list[Any]:
    """The encoder inputs of the rows `index` of a fine-tuning split, without augmentation: kept in memory,
    or tokenized now (from kept state dicts, or read from the zoo when streamed)."""
    rows = [int(i) for i in index]
    if split.tokenized is not None:
        return [split.tokenized[i] for i in rows]
    return loaded.tokenize_many([split_state_dict(split, i) for i in rows], rows)


def raw_statistics(split: SplitData, chunk_bytes: int, folded: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The weight statistics of every model of the split before `zooprobe.symmetry.normalize_units` (only
    `zooprobe.symmetry.canonicalize`), and with `folded` those of its BatchNorm models with BatchNorm folded
    (`zooprobe.symmetry.fold_batchnorm`): what the domain's `FoldDetector` learns from."""
    bn: list[int] = []

    def rows() -> Iterator[dict[str, torch.Tensor]]:
        for i in range(len(split)):
            sd = canonicalize(_float32(split.zoo.state_dict(i)))
            if folded and any(k.endswith("running_var") for k in sd):
                bn.append(i)
            yield sd

    def folded_rows() -> Iterator[dict[str, torch.Tensor]]:
        for i in bn:
            with contextlib.suppress(SymmetryError):
                yield canonicalize(fold_batchnorm(_float32(split.zoo.state_dict(i))))

    raw = featurize(rows(), chunk_bytes=chunk_bytes)
    return raw, featurize(folded_rows(), chunk_bytes=chunk_bytes) if folded else None


def _zoo_model(split: SplitData, i: int) -> dict[str, torch.Tensor]:
    """Row `i` of the split's zoo as every head reads it: float32, in `zooprobe.symmetry.canonical_form`
    (the prediction path, `LoadedHead.run`, canonicalizes alike)."""
    return canonical_form(_float32(split.zoo.state_dict(i)))


def _float32(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.dtype == torch.float64 else v for k, v in sd.items()}


def split_features(
    split: SplitData, index: np.ndarray | list[int], device: torch.device
) -> dict[str, torch.Tensor]:
    """Cached head inputs of the rows `index` of a frozen-mode split."""

    assert split.reps is not None
    idx = [int(i) for i in index]
    out = {"pooled": split.reps.pooled[idx].to(device)}
    if split.reps.tokens is not None:
        tokens, mask = pad_tokens([split.reps.tokens[i] for i in idx])
        out["tokens"], out["token_mask"] = tokens.to(device), mask.to(device)
    out.update(split_extra(split, idx, device))
    return out


def split_extra(
    split: SplitData, index: np.ndarray | list[int], device: torch.device
) -> dict[str, torch.Tensor]:
    """Head inputs that do not come from the encoder (weight statistics), for the rows `index`."""
    if split.stats is None:
        return {}
    return {"stats": split.stats[[int(i) for i in index]].to(device)}


def split_targets(
    split: SplitData, index: np.ndarray | list[int], device: torch.device
) -> dict[str, torch.Tensor]:
    idx = np.asarray(index, dtype=np.int64)
    out = {}
    for name, values in split.targets.values.items():
        v = values[idx]
        out[name] = torch.as_tensor(v, dtype=torch.long if v.dtype == np.int64 else torch.float32).to(device)
    return out


def model_inputs(
    model: Any,
    split: SplitData,
    index: np.ndarray,
    device: torch.device,
    cfg: TrainConfig,
    gen: torch.Generator | None = None,
) -> dict[str, Any]:
    """Keyword arguments of `EncoderWithHead.forward` for the rows `index` of `split`: cached features
    (frozen), token sequences (fine-tuning), or augmented state dicts tokenized on the fly (``augment``)."""
    if model.frozen:
        if split.reps is None:
            raise InvalidInputError("frozen mode without representations")
        return {"features": split_features(split, index, device)}
    augmented = split.tokenized is None and cfg.augment and split.name == "train"
    if not augmented:
        return {
            "tokenized": split_tokenized(model.loaded, split, index),
            "extra": split_extra(split, index, device),
        }
    tms, sds = [], []
    for i in index:
        sd = permute_neurons(split_state_dict(split, int(i)), gen)
        if cfg.noise_sigma > 0:
            sd = noise_state_dict(sd, cfg.noise_sigma, gen)
        tms.append(model.loaded.tokenize(sd))
        sds.append(sd)
    extra = {}
    if split.stats is not None:  # statistics of the augmented weights, as the head will see them
        extra["stats"] = torch.as_tensor(featurize(sds), dtype=torch.float32, device=device)
    return {"tokenized": tms, "extra": extra}


__all__ = [
    "RunData",
    "SplitData",
    "check_split_leaks",
    "find_overlap",
    "load_inputs",
    "memory_budget",
    "model_inputs",
    "plan_data",
    "prepare_data",
    "select_checkpoints",
    "split_extra",
    "split_features",
    "split_state_dict",
    "split_targets",
    "split_tokenized",
    "tokenized_chunks",
]
