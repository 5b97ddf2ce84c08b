"""The dataset card of a zoo folder (README.md): the Hugging Face YAML header (configs, features, splits)
and the field descriptions, generated from the same registry as the schema (`zooprobe.zoo.schema`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from zooprobe.errors import InvalidInputError
from zooprobe.hub import render_card
from zooprobe.zoo.schema import (
    FIELD_BY_NAME,
    SPLITS,
    hf_dtype,
)


# ---------------------------------------------------------------------------------------------- card
def dataset_card(
    title: str,
    description: str,
    tables: dict[str, pa.Table],
    extra_descriptions: dict[str, str] | None = None,
    config_yaml: str | None = None,
    num_bytes: Mapping[str, int] | None = None,
) -> str:
    """A README.md dataset card whose YAML header `datasets` and the Hub understand.

    ``num_bytes``: bytes per split, for writers that stream the weights and pass `tables` without them."""
    if not tables:
        raise InvalidInputError("a dataset card needs at least one split with rows")
    schema = next(t.schema for t in tables.values())
    splits = [s for s in SPLITS if s in tables and tables[s].num_rows > 0]
    header = _card_header(title, tables, splits, num_bytes)
    extra_descriptions = extra_descriptions or {}
    lines = [
        f"# {title}",
        "",
        description.strip(),
        "",
        "## Loading",
        "",
        "```python",
        "import zooprobe",
        'zoo = zooprobe.load_zoo("PATH_OR_REPO_ID")   # local folder or Hub repo id',
        'train = zoo.split("train")',
        "print(train.metadata().head())",
        "state_dict = train.state_dict(0)         # decoded lazily from the safetensors bytes",
        "```",
        "",
        "The folder is a plain Hugging Face dataset: `datasets.load_dataset(PATH_OR_REPO_ID)` gives the",
        "same rows (the `weights` column holds safetensors bytes; `safetensors.torch.load(row['weights'])`",
        "decodes it).",
        "",
        "## Splits",
        "",
        "Splits are by training run (`model_id`): all checkpoints of a run are in the same split.",
        "",
        "| split | rows | runs |",
        "|---|---|---|",
    ]
    for s in splits:
        runs = len(set(tables[s].column("model_id").to_pylist()))
        lines.append(f"| {s} | {tables[s].num_rows} | {runs} |")
    lines += ["", "## Fields", "", "| field | type | description |", "|---|---|---|"]
    for f in schema:
        desc = (
            FIELD_BY_NAME[f.name].description
            if f.name in FIELD_BY_NAME
            else extra_descriptions.get(f.name, "")
        )
        lines.append(f"| `{f.name}` | {hf_dtype(f.type)} | {desc or 'Imported field.'} |")
    if config_yaml:
        lines += ["", "## Generator configuration", "", "```yaml", config_yaml.rstrip(), "```"]
    lines += ["", "## License", "", "MIT.", ""]
    return render_card(header, lines)


def _card_header(
    title: str, tables: dict[str, pa.Table], splits: list[str], num_bytes: Mapping[str, int] | None
) -> dict[str, Any]:
    """The YAML header of a dataset card: license, name, size category, the data files and features of
    each split."""
    schema = next(t.schema for t in tables.values())
    n_rows = sum(tables[s].num_rows for s in splits)
    size = "n<1K" if n_rows < 1000 else "1K<n<10K" if n_rows < 10_000 else "10K<n<100K"
    return {
        "license": "mit",
        "pretty_name": title,
        "tags": ["model-zoo", "weight-space-learning", "zooprobe"],
        "size_categories": [size],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits],
            }
        ],
        "dataset_info": {
            "features": [{"name": f.name, "dtype": hf_dtype(f.type)} for f in schema],
            "splits": [
                {
                    "name": s,
                    "num_bytes": int((num_bytes or {}).get(s, tables[s].nbytes)),
                    "num_examples": tables[s].num_rows,
                }
                for s in splits
            ],
        },
    }
