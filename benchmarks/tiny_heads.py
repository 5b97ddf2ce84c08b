"""The tiny heads the latency benchmarks (`predict_latency.py`, `app_latency.py`) run when given none: a
64-run tiny zoo, a tiny encoder, a gradient-boosting accuracy head and a neural hyperparameters head, as the
tests build them. Built once into a work folder and reused from there."""

from __future__ import annotations

from pathlib import Path


def tiny_heads(workdir: Path) -> tuple[Path, list[str]]:
    """(the zoo folder, the two head run folders) in `workdir`, each built only when it is not there yet."""
    from zooprobe import ZooConfig, build_zoo
    from zooprobe.api import load_encoder, pretrain_encoder, train
    from zooprobe.heads.prediction_heads import HeadConfig
    from zooprobe.training.config import OptimConfig, TrainConfig
    from zooprobe.training.pretrain import PretrainConfig

    zoo, enc = workdir / "zoo", workdir / "encoder"
    runs = {"acc": workdir / "acc", "hp": workdir / "hp"}
    if not (zoo / "zooprobe_manifest.json").is_file():
        build_zoo(ZooConfig(preset="tiny", n_models=64, seed=3), zoo, progress=False)
    if not (enc / "config.json").is_file():
        pretrain_encoder(PretrainConfig(preset="tiny", summary_tokens=False), zoo, enc, progress=False)
    encoder = load_encoder(enc)
    for run, (task, head) in zip(
        runs.values(),
        (("accuracy", HeadConfig(kind="gbm")), ("hyperparameters", HeadConfig(hidden_sizes=[32]))),
        strict=True,
    ):
        if not (run / "metrics.json").is_file():
            cfg = TrainConfig(
                task=task,  # type: ignore[arg-type]
                zoo=str(zoo),
                encoder=str(enc),
                head=head,
                optim=OptimConfig(epochs=2, batch_size=8, lr=3e-3),
            )
            train(cfg, run, progress=False, encoder=encoder)
    return zoo, [str(r) for r in runs.values()]
