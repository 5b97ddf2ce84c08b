"""Importers: turn model zoos people already have into zooprobe zoo folders.

Four sources are supported, one module each over a shared engine:

* `import_checkpoint_folder`: a folder of checkpoint files (``.safetensors``, or ``.pt``/``.pth``/``.bin``)
  plus a CSV or JSONL metadata file with one row per checkpoint.
* `import_model_zoos`: the directory layout of the Model Zoos dataset (Schürholt et al. 2022): one directory
  per training run holding ``params.json``, a per-epoch ``result.json`` and ``checkpoint_*/checkpoints``.
* `import_flat` (`flat`): a flat-vector zoo, one weights matrix + a layout + a metadata table.
* `import_cnnzoo` (`cnnzoo`): one dataset of the Small CNN Zoo, a preset of `import_flat`.

The modules: `common` (report, row-level problems, value conversion, hash splits, checkpoint reading),
`tables` (metadata files), `output` (writing an in-memory import), `folder`, `modelzoos`; for flat vectors
`layout` (layout files, weights matrices), `splits` (runs and their splits), `plan` (the table of what is
imported), `writer` (resumable parts, streamed into the zoo), `flat` and `cnnzoo`.

Design rules, and why:

* **Everything is read and validated before anything is written**, so a bad input never leaves a half-written
  zoo behind. A new output folder is written under a hidden temporary name next to its final place and
  renamed into place, so even a crash mid-write leaves no folder that `load_zoo` would read as complete.
* **Errors say where**: file, row (1-based data row, plus the line in the file), and field, because that is
  what a user needs to fix the input. ``skip_invalid=True`` turns row-level problems into entries of the
  returned `ImportReport` instead; problems with the input as a whole (a missing file, no rows, no file
  column, no valid row at all) are always errors.
* **Nothing is filled in silently**: missing values stay null. Only values that are exact consequences of
  the data are derived (``num_params`` from the weights, ``is_final`` from the checkpoint epochs, the
  generalization gap from the two accuracies of the Model Zoos results).
* **Checkpoints are untrusted data.** Unpickling can run arbitrary code, so ``torch.load`` is only ever called
  with ``weights_only=True``; a file that needs more is refused, never loaded another way.
* **Splits are by training run** (``model_id``), never by checkpoint, so that checkpoints of one run cannot
  leak between train and test. Without a split column a run's split comes from a hash of its id and the seed:
  the same run lands in the same split whatever else is in the zoo.
"""

from zooprobe.core.checkpoints import CHECKPOINT_SUFFIXES
from zooprobe.zoo.importers.cnnzoo import import_cnnzoo
from zooprobe.zoo.importers.common import FlatImportReport, ImportReport
from zooprobe.zoo.importers.flat import import_flat
from zooprobe.zoo.importers.folder import import_checkpoint_folder
from zooprobe.zoo.importers.modelzoos import import_model_zoos

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "FlatImportReport",
    "ImportReport",
    "import_checkpoint_folder",
    "import_cnnzoo",
    "import_flat",
    "import_model_zoos",
]
