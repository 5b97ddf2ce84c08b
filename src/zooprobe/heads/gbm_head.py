"""Gradient boosting as a head kind (``HeadConfig.kind="gbm"``): the strongest predictor of `zooprobe bench`.

`GradientBoostingHead` fits one LightGBM model per target (`zooprobe.baselines.fit_baseline` with
``"gbm"``: early-stopped on the validation split) on the weight-statistics features of each network
(``features="stats"``) or on those and the frozen encoder's pooled representation (``"stats+rep"``).
It is a `Head` like the neural ones, so everything downstream is shared: `EncoderWithHead` feeds it, the
evaluator scores it, `LoadedHead.predict`, calibration, the applicability domain and the run folder work
unchanged. Its raw outputs are what a neural head's are: standardized values for continuous targets
(logits of the clipped prediction for bounded ones, such as the accuracy), logits for binary ones and
log-probabilities for categorical ones.

Saved without pickles: ``gbm.json`` in the head folder holds every target's LightGBM model in LightGBM's
text format (`Baseline.to_record`); the head's ``model.safetensors`` holds no tensors. The trainer predicts
with the models as read back from that text, so a run's own predictions are exactly what a loaded head
gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zooprobe.baselines.models import Baseline, fit_baseline
from zooprobe.core.config import check_record
from zooprobe.core.files import atomic_write_json, read_json
from zooprobe.errors import ConfigError, ZooFormatError
from zooprobe.heads.prediction_heads import Head, HeadConfig, build_head
from zooprobe.heads.targets import TargetArrays, TaskSpec
from zooprobe.tokens.statistics import N_FEATURES

GBM_FILE = "gbm.json"
GBM_FORMAT = 1
_EPS = 1e-12


class GradientBoostingHead(Head):
    """One LightGBM model per target on weight statistics (+ representation); see the module docs."""

    def __init__(self, spec: TaskSpec, config: HeadConfig, in_dim: int) -> None:
        nn.Module.__init__(self)  # no trunk, no output layers: nothing of Head.__init__ applies
        if config.kind != "gbm":
            raise ConfigError(f"GradientBoostingHead needs HeadConfig.kind='gbm', got {config.kind!r}")
        self.spec, self.config, self.in_dim = spec, config, in_dim
        self.pool = None
        self.task = spec.task
        self.models: dict[str, Baseline] = {}

    @property
    def fitted(self) -> bool:
        return set(self.models) == set(self.spec.names)

    def feature_matrix(self, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
        """The models' input: statistics ``[B, 131]`` (+ pooled representation ``[B, D]``), float64."""
        if "stats" not in inputs:
            raise ConfigError("a gbm head reads weight statistics: its inputs need 'stats'")
        parts = [inputs["stats"].detach().double().cpu().numpy()]
        if self.config.features == "stats+rep":
            parts.append(inputs["pooled"].detach().double().cpu().numpy())
        return np.concatenate(parts, axis=1)

    def fit(
        self,
        x_train: np.ndarray,
        train: TargetArrays,
        x_val: np.ndarray,
        validation: TargetArrays,
        seed: int = 0,
        gbm_params: Mapping[str, Any] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Fit every target's model (train split, early-stopped on validation); returns the fit info per
        target. Each model is kept as read back from its saved text form."""
        info = {}
        for t in self.spec.targets:
            fitted = fit_baseline(
                "gbm",
                t.kind,  # type: ignore[arg-type]
                x_train,
                train.values[t.name],
                x_val,
                validation.values[t.name],
                seed,
                n_classes=len(t.classes) if t.kind == "categorical" else None,
                gbm_params=gbm_params,
            )
            self.models[t.name] = Baseline.from_record(fitted.to_record())
            info[t.name] = dict(fitted.info)
        return info

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw outputs per target, as a neural head's (module docs)."""
        if not self.fitted:
            raise ConfigError("this gbm head has no fitted models (train it, or load it from a head folder)")
        x = self.feature_matrix(inputs)
        like = inputs["stats"]
        out = {}
        for t in self.spec.targets:
            model = self.models[t.name]
            if t.kind == "continuous" and t.bounded:  # a neural head's logit: predict applies the sigmoid
                p = np.clip(model.predict(x), _EPS, 1 - _EPS)
                raw = np.log(p) - np.log1p(-p)
            elif t.kind == "continuous":
                raw = model.predict(x)
            elif t.kind == "binary":
                p = np.clip(model.predict_proba(x)[:, 1], _EPS, 1 - _EPS)
                raw = np.log(p) - np.log1p(-p)
            else:
                raw = np.log(np.clip(model.predict_proba(x), _EPS, 1.0))
            out[t.name] = torch.as_tensor(raw, dtype=torch.float32, device=like.device)
        return out

    # ---------------------------------------------------------------- saving
    def save_models(self, folder: str | Path) -> Path:
        """Write `GBM_FILE` (every target's model as LightGBM text) atomically."""
        if not self.fitted:
            raise ConfigError("a gbm head without fitted models cannot be saved")
        path = Path(folder) / GBM_FILE
        atomic_write_json(
            path,
            {
                "format_version": GBM_FORMAT,
                "features": self.config.features,
                "models": {t.name: self.models[t.name].to_record() for t in self.spec.targets},
            },
        )
        return path

    def load_models(self, folder: str | Path) -> None:
        """Read `GBM_FILE` of a head folder; a missing or damaged file is a `ZooFormatError` naming it."""
        path = Path(folder) / GBM_FILE
        if not path.is_file():
            raise ZooFormatError(f"{folder}: no {GBM_FILE} (the models of this gbm head)")
        data = check_record(
            read_json(path, "gbm head models", ZooFormatError),
            str(path),
            ZooFormatError,
            fields=("format_version", "features", "models"),
            version=GBM_FORMAT,
        )
        models = data["models"]
        if data["features"] != self.config.features or set(models) != set(self.spec.names):
            raise ZooFormatError(
                f"{path}: its models ({sorted(models)}, features {data['features']!r}) do not match "
                f"config.json (targets {self.spec.names}, features {self.config.features!r})"
            )
        expected = self.n_features()
        for t in self.spec.targets:
            record = models[t.name]
            problem = _record_problem(record, t.kind, len(t.classes), expected)
            if problem is not None:
                raise ZooFormatError(
                    f"{path}: the model of {t.name!r} {problem}; restore the file or train the head again"
                )
        try:  # each model's LightGBM text is checked (`check_lightgbm_text`) before LightGBM parses it
            self.models = {name: Baseline.from_record(record) for name, record in models.items()}
        except ValueError as e:
            raise ZooFormatError(
                f"{path}: unreadable or unsafe model ({e}); restore the file or train the head again"
            ) from e

    def n_features(self) -> int:
        """Width of `feature_matrix`."""
        return N_FEATURES + (self.in_dim if self.config.features == "stats+rep" else 0)


def _record_problem(record: Any, kind: str, n_classes: int, n_features: int) -> str | None:
    """What makes a saved model record unfit for a target of `kind` (None: fit), before it is parsed."""
    if not isinstance(record, Mapping):
        return f"is a {type(record).__name__}, not a saved model record"
    if record.get("kind") != kind:
        return f"is for a {record.get('kind')!r} target, config.json says {kind!r}"
    width = record.get("n_features")
    if not isinstance(width, int) or isinstance(width, bool) or width != n_features:
        return f"reads {width!r} features, this head gives {n_features}"
    proba = record.get("proba_classes")
    if kind == "binary" and proba != [0, 1]:
        return f"has proba_classes {proba!r}, a binary target needs [0, 1]"
    if kind == "categorical" and proba != list(range(n_classes)):
        return f"has proba_classes {str(proba)[:60]}, config.json names {n_classes} classes"
    return None


def make_head(spec: TaskSpec, config: HeadConfig, in_dim: int) -> Head:
    """The head `config` describes: a neural head (`build_head`) or a `GradientBoostingHead`."""
    if config.kind == "gbm":
        return GradientBoostingHead(spec, config, in_dim)
    return build_head(spec, config, in_dim)


__all__ = ["GBM_FILE", "GradientBoostingHead", "make_head"]
