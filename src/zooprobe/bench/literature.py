"""The field's published numbers for predicting test accuracy from weights on the Small CNN Zoo, and a
table of them beside a bench's own results (``zooprobe bench --reference literature``).

Every number is copied as published, with its source; none is computed here. Kendall's tau between true and
predicted test accuracy is the headline metric of the equivariant-encoder papers (NFN, Neural Graphs);
Unterthiner et al. report R². The published numbers are for one dataset's whole zoo (about 30,000 runs,
final checkpoints): a bench result is comparable only when the bench ran on that import of the same
dataset, ideally with the same split (``zooprobe zoo import-cnnzoo DIR --split_file SPLIT.csv``, the
NFN / Neural Graphs split: 50% of the runs are test).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from zooprobe.errors import ConfigError

REFERENCES = ("literature",)
"""Values of ``--reference``."""


@dataclass(frozen=True)
class Source:
    short: str
    citation: str
    url: str


SOURCES: dict[str, Source] = {
    "unterthiner2020": Source(
        "Unterthiner et al. 2020",
        "T. Unterthiner, D. Keysers, S. Gelly, O. Bousquet, I. Tolstikhin. Predicting Neural Network "
        "Accuracy from Weights. arXiv:2002.11448, 2020 (the Small CNN Zoo; google-research/google-research, "
        "dnn_predict_accuracy).",
        "https://arxiv.org/abs/2002.11448",
    ),
    "zhou2023": Source(
        "Zhou et al. 2023",
        "A. Zhou, K. Yang, K. Burns, A. Cardace, Y. Jiang, S. Sokota, J. Z. Kolter, C. Finn. Permutation "
        "Equivariant Neural Functionals. NeurIPS 2023, Table 2 (StatNN is Unterthiner et al.'s statistics "
        "with an MLP, as NFN reports it).",
        "https://arxiv.org/abs/2302.14040",
    ),
    "kofinas2024": Source(
        "Kofinas et al. 2024",
        "M. Kofinas, B. Knyazev, Y. Zhang, Y. Chen, G. J. Burghouts, E. Gavves, C. G. M. Snoek, D. W. "
        "Zhang. Graph Neural Networks for Learning Equivariant Representations of Neural Networks (Neural "
        "Graphs). ICLR 2024.",
        "https://arxiv.org/abs/2403.12143",
    ),
}


@dataclass(frozen=True)
class Published:
    """One published result: a method on one dataset of the Small CNN Zoo, as the paper gives it."""

    method: str
    dataset: str
    kendall_tau: str = ""
    r2: str = ""
    source: str = ""
    note: str = ""
    zooprobe: str = ""
    """The ``zooprobe bench`` method that computes the same kind of predictor (empty: none does)."""


PUBLISHED: tuple[Published, ...] = (
    Published("weight statistics + GBM", "MNIST", r2="0.993", source="unterthiner2020", zooprobe="stats+gbm"),
    Published(
        "weight statistics + GBM", "CIFAR10-GS", r2="0.984", source="unterthiner2020", zooprobe="stats+gbm"
    ),
    Published(
        "hyperparameters + GBM",
        "all four",
        r2="0.92-0.935",
        source="unterthiner2020",
        note="hyperparameters as inputs, no weights",
        zooprobe="hparams+gbm",
    ),
    Published("StatNN", "CIFAR10-GS", kendall_tau="0.915", source="zhou2023"),
    Published("StatNN", "SVHN-GS", kendall_tau="0.843", source="zhou2023"),
    Published("NFN", "CIFAR10-GS", kendall_tau="0.934", source="zhou2023"),
    Published("NFN", "SVHN-GS", kendall_tau="0.931", source="zhou2023"),
    Published(
        "Neural Graphs",
        "CIFAR10-GS",
        kendall_tau="about 0.93-0.94",
        source="kofinas2024",
        note="approximate; reported per model variant and split, see the paper",
    ),
)


def check_reference(reference: str | None) -> None:
    """Refuse an unknown ``--reference`` before any work."""
    if reference is not None and reference not in REFERENCES:
        raise ConfigError(f"--reference must be one of {', '.join(REFERENCES)}, got {reference!r}")


def _cell(value: float | None) -> str:
    return "undefined" if value is None or math.isnan(value) else f"{value:.3f}"


def literature_table(
    metrics: Mapping[str, Mapping[str, Mapping[str, float]]],
    zoo: str,
    n_test: int | None = None,
) -> list[str]:
    """Markdown lines: the published numbers (`PUBLISHED`), then this bench's accuracy results (task
    ``accuracy`` of ``metrics``: task -> method -> metric -> value), then the sources."""
    lines = [
        "### accuracy: published numbers on the Small CNN Zoo (test accuracy; Kendall tau is the headline)",
        "",
        "| method | dataset | Kendall tau | R² | source | note |",
        "|---|---|---|---|---|---|",
    ]
    for p in PUBLISHED:
        lines.append(
            f"| {p.method} | {p.dataset} | {p.kendall_tau or '-'} | {p.r2 or '-'} | "
            f"{SOURCES[p.source].short} | {p.note or '-'} |"
        )
    accuracy = {m: v for m, v in metrics.get("accuracy", {}).items() if m != "_rows"}
    counterpart = {p.zooprobe: p.method for p in PUBLISHED if p.zooprobe}
    where = f"`{zoo}` (test split{f', {n_test} models' if n_test else ''})"
    if accuracy:
        for method, values in accuracy.items():
            note = f"same kind of predictor as {counterpart[method]}" if method in counterpart else "-"
            lines.append(
                f"| **zooprobe {method}** (this bench) | {where} | {_cell(values.get('kendall_tau'))} | "
                f"{_cell(values.get('r2'))} | zooprobe bench | {note} |"
            )
    lines += [""]
    if not accuracy:
        lines += ["(This bench did not run the accuracy task: add it to --tasks to see its numbers.)", ""]
    lines += ["Sources:", ""]
    lines += [f"- {s.short}: {s.citation} {s.url}" for s in SOURCES.values()]
    lines += [
        "",
        "The published numbers are for one dataset's whole zoo (about 30,000 runs, final checkpoints; NFN "
        "and Neural Graphs use the NFN split, 50% test). This bench's numbers compare with them only when "
        "it ran on that zoo: `zooprobe zoo import-cnnzoo DATASET_DIR --split_file SPLIT.csv --output ZOO`, "
        "then `zooprobe bench --zoo ZOO --reference literature` (docs/zoo.md, Small CNN Zoo).",
    ]
    return lines


__all__ = ["PUBLISHED", "REFERENCES", "SOURCES", "Published", "Source", "check_reference", "literature_table"]
