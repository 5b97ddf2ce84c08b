"""Small trained heads shared by the whole test session (the `trained_heads` fixture of tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

#: The shared head runs of `trained_heads`: name -> (task, head kind).
TRAINED_HEADS = {
    "accuracy": ("accuracy", "mlp"),
    "patterns": ("patterns", "mlp"),
    "hyperparameters": ("hyperparameters", "mlp"),
    "accuracy-gbm": ("accuracy", "gbm"),
    "hyperparameters-gbm": ("hyperparameters", "gbm"),
}


class TrainedHeads:
    """Finished run folders of small heads on `head_zoo` with `head_encoder` (frozen, 3 epochs, batch 8,
    lr 3e-3), one per name of `TRAINED_HEADS`; each is trained the first time a test asks for it and then
    shared by the whole session. Read-only: copy a folder to edit it."""

    def __init__(self, zoo: Path, encoder: Path, root: Path) -> None:
        self.zoo, self.encoder, self.root = zoo, encoder, root
        self._loaded_encoder: object | None = None

    def __getitem__(self, name: str) -> Path:
        from zooprobe.api import load_encoder, train
        from zooprobe.heads.prediction_heads import HeadConfig
        from zooprobe.training.config import OptimConfig, TrainConfig

        task, kind = TRAINED_HEADS[name]
        out = self.root / name
        if not (out / "metrics.json").is_file():
            if self._loaded_encoder is None:
                self._loaded_encoder = load_encoder(self.encoder)
            # a small neural head keeps training fast: predictions, reports and trust checks do not
            # depend on its size
            head = (
                HeadConfig(kind="gbm") if kind == "gbm" else HeadConfig(hidden_sizes=[32], branch_hidden=16)
            )
            cfg = TrainConfig(
                task=task,  # type: ignore[arg-type]
                zoo=str(self.zoo),
                encoder=str(self.encoder),
                head=head,
                optim=OptimConfig(epochs=3, batch_size=8, lr=3e-3),
            )
            train(cfg, out, progress=False, encoder=self._loaded_encoder)  # type: ignore[arg-type]
        return out
