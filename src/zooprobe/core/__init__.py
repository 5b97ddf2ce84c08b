"""Foundation: mechanisms every stage shares, with no knowledge of the pipeline.

- `files`: atomic writes, safe YAML reading, the cache location, content hashes;
- `config`: the one strict parser of configuration dataclasses (unknown or mistyped fields are errors);
- `device`: the one device check (``cpu``, ``cuda``, ``cuda:N``);
- `outputs`: output folders zooprobe may write into, and removing only what it wrote;
- `checkpoints`: the one reader of checkpoint files (safetensors, ``weights_only`` torch files);
- `progress`: progress bars; `environment`: library versions recorded in manifests;
- `lazy`: package names imported on first use (``import zooprobe`` without torch).
"""
