"""`import_cnnzoo`: one dataset of the Small CNN Zoo (Unterthiner et al. 2020), a preset of the flat-vector
importer (network and files in `zooprobe.zoo.cnnzoo`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from zooprobe.errors import InvalidInputError
from zooprobe.zoo import cnnzoo
from zooprobe.zoo.importers.common import FlatImportReport
from zooprobe.zoo.importers.flat import CHUNK_ROWS, _import, _spec
from zooprobe.zoo.importers.layout import _raw_layout

_DESCRIPTION = (
    "One dataset of the Small CNN Zoo (Unterthiner et al. 2020, *Predicting Neural Network Accuracy "
    "from Weights*, google-research/google-research `dnn_predict_accuracy`; CC-BY 4.0), imported "
    "with `zooprobe.zoo.flat.import_cnnzoo` from `{name}`. Keras kernels were transposed "
    "to PyTorch layouts (conv HWIO -> OIHW, dense (in, out) -> (out, in)) and named as "
    "`zooprobe.zoo.cnnzoo.SmallCNN`'s parameters; `checkpoint_epoch` is the zoo's `step` (epochs 0, "
    "1, 2, 3, 20, 40, 60, 80, 86)."
)


def _cnnzoo_files(directory: Path) -> tuple[Path, Path, Path]:
    if not directory.is_dir():
        raise InvalidInputError(
            f"{directory}: Small CNN Zoo folder not found (or not a folder); download and extract one "
            "dataset's archive first (see docs/zoo.md)"
        )
    weights = directory / cnnzoo.WEIGHTS_FILE
    layout = directory / cnnzoo.LAYOUT_FILE
    metrics = next((directory / m for m in cnnzoo.METRICS_FILES if (directory / m).is_file()), None)
    missing = [p.name for p in (weights, layout) if not p.is_file()] + (
        [" or ".join(cnnzoo.METRICS_FILES)] if metrics is None else []
    )
    if missing:
        raise InvalidInputError(
            f"{directory}: missing {', '.join(missing)}; a Small CNN Zoo folder holds weights.npy, "
            "layout.csv and metrics.csv.gz (one dataset's extracted archive)"
        )
    assert metrics is not None
    return weights, layout, metrics


def import_cnnzoo(
    directory: str | Path,
    output: str | Path,
    *,
    step: str | int = "final",
    max_runs: int | None = None,
    split_file: str | Path | None = None,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    id_column: str = cnnzoo.ID_COLUMN,
    skip_invalid: bool = False,
    accuracy_percent: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> FlatImportReport:
    """Import one dataset of the Small CNN Zoo (``weights.npy``, ``layout.csv``, ``metrics.csv.gz`` in
    ``directory``) into a zoo folder: `import_flat` with the Keras layout convention, the tensors named as
    `zooprobe.zoo.cnnzoo.SmallCNN`'s parameters (``conv1.weight``...; ``zoo.model(i)`` rebuilds the network),
    the metadata mapped by `zooprobe.zoo.cnnzoo.METRICS_COLUMNS` (``config.l2reg`` -> ``weight_decay``,
    ``config.w_init`` -> ``init``, ``step`` -> ``checkpoint_epoch``, ...) and runs identified by ``modeldir``.

    Rows of ``metrics.csv.gz`` describe the rows of ``weights.npy`` in order (their counts must agree). A
    ``metrics.csv.gz`` without the ``modeldir`` column (the format the NFN loader reads by row order alone)
    is imported too: each row at the selected step is then one run (``step="final"``: rows at the last step,
    86, as NFN keeps them; ``step="all"`` is refused, since a run's checkpoints cannot be grouped). The
    report and the manifest (``alignment``) say which was used. ``accuracy_percent``: accuracies are
    percentages (divided by 100), as in `import_flat`.

    ``step``: ``"final"`` (each run's last checkpoint, epoch 86), ``"all"`` (9 per run) or one epoch.
    ``split_file``: an NFN / Neural Graphs split file (``predict_gen_data_splits/*_split.csv``), applied with
    their protocol (module docs); otherwise runs are split by a hash of ``modeldir``.
    """
    arguments = dict(locals())  # the options as passed (nothing assigned before this line)
    directory = Path(directory)
    weights, layout, metrics = _cnnzoo_files(directory)
    raw = _raw_layout(layout)
    spec = _spec(
        arguments,
        weights=weights,
        layout_path=layout,
        metadata=metrics,
        weights_key=None,
        layout_convention="keras",
        names=cnnzoo.state_dict_names([r[0] for r in raw], [r[1] for r in raw], str(layout)),
        columns=cnnzoo.METRICS_COLUMNS,
        optional_columns=True,
        required_columns=cnnzoo.REQUIRED_COLUMNS,
        checkpoint_column=cnnzoo.STEP_COLUMN,
        id_optional=True,
        split_column="split",
        importer="cnnzoo",
        source=directory,
        title=f"Small CNN Zoo: {directory.name}",
        description=_DESCRIPTION.format(name=directory.name),
        manifest_extra={"architecture": cnnzoo.ARCHITECTURE},
    )
    return _import(spec)
