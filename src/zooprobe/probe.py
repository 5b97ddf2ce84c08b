"""`Probe`: the whole pipeline as one scikit-learn style estimator.

    probe = zooprobe.Probe(task="accuracy", encoder="default").fit("default")   # a zoo source or a Zoo
    table = probe.predict([model.state_dict(), "other.safetensors"])           # a pandas DataFrame
    probe.score("default")                                                     # test R² of the head

`fit` trains a head (`zooprobe.train`) into a run folder (``output``; a temporary folder kept as long as the
probe lives when none is given), `predict` labels its predictions with class names and natural units
(`zooprobe.predict`), `score` is the task's headline test metric and `evaluate` all of them.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from zooprobe.api import evaluate, load_encoder, load_head, load_zoo, train
from zooprobe.errors import ConfigError
from zooprobe.heads.head_loader import LoadedHead
from zooprobe.inference import predict
from zooprobe.training.config import TrainConfig, preset_config
from zooprobe.training.trainer import TrainResult
from zooprobe.zoo.store import Zoo

#: The metric `Probe.score` returns per task (higher is better for each).
HEADLINE = {"accuracy": "r2", "patterns": "macro_f1", "hyperparameters": "score"}


class Probe:
    """Train a prediction head on a zoo, then predict properties of any network's weights.

    Args:
        task: ``accuracy``, ``patterns`` or ``hyperparameters``.
        encoder: an encoder source (folder, Hub repo id, ``default``).
        mode: ``frozen`` or ``finetune``; the head-training settings start from that mode's preset
            (`zooprobe.list_presets()["head"]`).
        output: the run folder to train into (default: a temporary folder, removed with the probe).
        progress: show progress bars while fitting.
        **fields: any other `TrainConfig` field (``targets``, ``seed``, ``head=HeadConfig(...)``, ...).
    """

    def __init__(
        self,
        task: str = "accuracy",
        encoder: str = "default",
        mode: str = "frozen",
        *,
        output: str | Path | None = None,
        progress: bool = False,
        **fields: Any,
    ) -> None:
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(TrainConfig)})
        if unknown:
            raise ConfigError(f"Probe: unknown TrainConfig field(s) {unknown}")
        self.task, self.encoder, self.mode = task, encoder, mode
        self.output, self.progress, self.fields = output, progress, fields
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.result_: TrainResult | None = None
        self.head_: LoadedHead | None = None

    def __repr__(self) -> str:
        state = "fitted" if self.head_ is not None else "not fitted"
        return f"Probe(task={self.task!r}, encoder={self.encoder!r}, mode={self.mode!r}; {state})"

    def config(self, zoo: str) -> TrainConfig:
        """The `TrainConfig` `fit` trains with on the zoo source `zoo`."""
        cfg = preset_config(self.mode, task=self.task, encoder=self.encoder, zoo=zoo, **self.fields)
        cfg.validate()
        return cfg

    def fit(self, zoo: str | Path | Zoo = "default") -> Probe:
        """Train the head on the train split of `zoo` (early stopping on its validation split); returns
        self."""
        zoo_obj = load_zoo(zoo)
        cfg = self.config(zoo_obj.source)
        if self.output is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="zooprobe-probe-")
            output = Path(self._tmp.name) / "run"
        else:
            output = Path(self.output)
        encoder = load_encoder(self.encoder, progress=self.progress)
        self.result_ = train(cfg, output, encoder=encoder, zoo=zoo_obj, progress=self.progress)
        self.head_ = load_head(output, encoder=encoder)
        return self

    @property
    def run_dir(self) -> Path:
        """The run folder of the fitted head (metrics.json, report, push)."""
        return self._fitted_result().output

    def _fitted_result(self) -> TrainResult:
        if self.result_ is None:
            raise ConfigError("this Probe is not fitted yet; call fit(zoo) first")
        return self.result_

    def _fitted_head(self) -> LoadedHead:
        self._fitted_result()
        assert self.head_ is not None
        return self.head_

    def predict(
        self, models: Mapping[str, Any] | str | Path | Iterable[Mapping[str, Any] | str | Path]
    ) -> pd.DataFrame:
        """Predicted properties of each model (state dicts or checkpoint files): one row per model, class
        names and probabilities for discrete targets, natural units for continuous ones."""
        return predict(self._fitted_head(), models)

    def evaluate(self, zoo: str | Path | None = None, split: str = "test") -> dict[str, float]:
        """Every metric of the fitted head on `split` of `zoo` (default: the zoo it was fitted on)."""
        source = None if zoo is None else str(zoo.source if isinstance(zoo, Zoo) else zoo)
        return evaluate(self.run_dir, split=split, zoo=source)[1]

    def score(self, zoo: str | Path | None = None, split: str = "test") -> float:
        """The task's headline metric on `split` (R² for accuracy, macro F1 for patterns, the mean R² /
        accuracy score for hyperparameters); higher is better."""
        return float(self.evaluate(zoo, split)[HEADLINE[self.task]])


__all__ = ["HEADLINE", "Probe"]
