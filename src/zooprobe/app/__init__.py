"""``zooprobe app``: a web page (Gradio) for auditing checkpoints with trained heads.

- `zooprobe.app.core`: everything the page shows, without Gradio: the heads (`AppHeads`, `load_app_heads`,
  the shipped heads when none are given), auditing uploaded files with the library's prediction path
  (`audit_files`, the same results and JSON document as ``zooprobe predict --json``), the page's HTML and
  the one-line errors.
- `zooprobe.app.plots`: the matplotlib figures (where a model sits in its head's training zoo, per-layer
  weight statistics against the zoo's quantiles).
- `zooprobe.app.ui`: the Gradio page and `serve` (127.0.0.1 by default, an upload size limit, uploads only
  in a temporary folder removed on exit). Gradio comes from the optional extra ``zooprobe[app]``.

This is an application, like the command line: it imports the library, never the other way round. See
docs/app.md.
"""

from __future__ import annotations
