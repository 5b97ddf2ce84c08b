"""The Gradio page of ``zooprobe app`` and `serve`, which runs it.

Two tabs: **Audit** (upload one or more checkpoints: per head its predictions and applicability-domain
flag, the JSON download, the two figures) and **Compare** (two checkpoints side by side). Every upload is
predicted on as soon as it arrives and then deleted; everything Gradio stores (uploads, the JSON
downloads, its cache) lives in one temporary folder that `serve` creates and removes on exit. The page binds
127.0.0.1 unless told otherwise and refuses files over ``max_upload_mb``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zooprobe.app.config import AppConfig
from zooprobe.app.core import (
    CSS,
    AppHeads,
    FileAudit,
    audit_file,
    audit_hub_model,
    audits_html,
    compare_html,
    document,
    heads_html,
    load_app_heads,
    remove_uploads,
)
from zooprobe.app.plots import corpus_figure, layer_figure
from zooprobe.core.files import atomic_write_json

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
INTRO = (
    "# zooprobe: what do these weights say?\n"
    "Upload checkpoints (`.safetensors`, or `.pt` / `.pth` / `.bin`, read with `weights_only`; never "
    "unpickled): each head predicts the network's properties with intervals or probabilities, and says "
    "whether the network lies in its applicability domain (and if not, why). The predictions are those of "
    "`zooprobe predict --json` for the same file."
)


def _paths(files: Any) -> list[str]:
    """The stored paths of a Gradio file value (None, a path, or a list of them)."""
    if files is None:
        return []
    items = files if isinstance(files, list | tuple) else [files]
    return [str(getattr(f, "name", f)) for f in items]


class Page:
    """The page's callbacks, on loaded heads (loaded once when the app starts)."""

    def __init__(self, heads: AppHeads, cfg: AppConfig, root: Path) -> None:
        self.heads, self.cfg, self.root = heads, cfg, root

    def audit(self, path: str) -> FileAudit:
        return audit_file(
            self.heads,
            path,
            level=self.cfg.level,
            max_params=self.cfg.max_params,
            max_upload_mb=self.cfg.max_upload_mb,
            show_unpredictable=self.cfg.show_unpredictable,
        )

    def _download(self, audits: Sequence[FileAudit]) -> str | None:
        if not any(a.results is not None for a in audits):
            return None
        folder = self.root / "downloads" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        path = folder / "predictions.json"
        atomic_write_json(path, document(self.heads, audits, self.cfg.level))
        return str(path)

    def on_upload(self, files: Any) -> tuple[str, str | None, list[FileAudit]]:
        """Audit tab: predict on the uploaded files, then delete them; the figures follow (`on_plots`)
        so the predictions show first."""
        paths = _paths(files)
        try:
            audits = [self.audit(p) for p in paths]
        finally:
            remove_uploads(paths, self.root)
        return audits_html(self.heads, audits, self.cfg.level), self._download(audits), audits

    def on_hub(self, repo_id: str) -> tuple[str, str | None, list[FileAudit]]:
        """Audit tab: predict on a Hub model repo's weights file (downloaded into the app's temporary
        folder, then deleted)."""
        if not str(repo_id or "").strip():
            return audits_html(self.heads, [], self.cfg.level), None, []
        audit = audit_hub_model(
            self.heads,
            repo_id,
            self.root,
            level=self.cfg.level,
            max_params=self.cfg.max_params,
            max_upload_mb=self.cfg.max_upload_mb,
            show_unpredictable=self.cfg.show_unpredictable,
        )
        return audits_html(self.heads, [audit], self.cfg.level), self._download([audit]), [audit]

    def on_plots(self, audits: list[FileAudit] | None) -> tuple[Any, Any]:
        audits = audits or []
        return corpus_figure(self.heads, audits), layer_figure(self.heads, audits)

    def on_compare_upload(self, file: Any) -> FileAudit | None:
        """Compare tab: predict on one side's file as soon as it arrives (then delete it)."""
        paths = _paths(file)
        try:
            return self.audit(paths[0]) if paths else None
        finally:
            remove_uploads(paths, self.root)

    def on_compare(self, a: FileAudit | None, b: FileAudit | None) -> tuple[str, Any]:
        if a is None or b is None:
            return '<p class="zp-empty">Upload a checkpoint on each side to compare them.</p>', None
        return compare_html(self.heads, a, b, self.cfg.level), layer_figure(self.heads, [a, b])


def build_page(heads: AppHeads, cfg: AppConfig, root: Path) -> Any:
    """The Gradio Blocks of the page (not launched)."""
    import gradio as gr  # heavy: gradio (the optional extra zooprobe[app]); after GRADIO_TEMP_DIR is set

    page = Page(heads, cfg, root)
    with gr.Blocks(title="zooprobe", analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(INTRO)
        gr.HTML(heads_html(heads), elem_id="zp-heads")
        with gr.Tab("Audit", elem_id="zp-tab-audit"):
            files = gr.File(
                label=f"Checkpoints (up to {cfg.max_upload_mb} MiB each)",
                file_count="multiple",
                elem_id="zp-upload",
            )
            with gr.Row():
                hub_id = gr.Textbox(
                    label="or a Hub model repo id (OWNER/NAME; needs network access)",
                    elem_id="zp-hub-id",
                    scale=4,
                )
                hub_button = gr.Button("Predict", elem_id="zp-hub-go", scale=1)
            results = gr.HTML(audits_html(heads, []), elem_id="zp-results")
            download = gr.File(
                label="Predictions as JSON (the schema of zooprobe predict --json)",
                interactive=False,
                elem_id="zp-json",
            )
            corpus = gr.Plot(label="Where the model sits in the training zoo", elem_id="zp-corpus-plot")
            layers = gr.Plot(label="Per-layer weight statistics", elem_id="zp-layer-plot")
            audits = gr.State([])
            files.upload(page.on_upload, inputs=files, outputs=[results, download, audits]).then(
                page.on_plots, inputs=audits, outputs=[corpus, layers]
            )
            for trigger in (hub_button.click, hub_id.submit):
                trigger(page.on_hub, inputs=hub_id, outputs=[results, download, audits]).then(
                    page.on_plots, inputs=audits, outputs=[corpus, layers]
                )
        with gr.Tab("Compare", elem_id="zp-tab-compare"):
            with gr.Row():
                file_a = gr.File(label="Checkpoint A", elem_id="zp-compare-a")
                file_b = gr.File(label="Checkpoint B", elem_id="zp-compare-b")
            state_a, state_b = gr.State(None), gr.State(None)
            compared = gr.HTML(page.on_compare(None, None)[0], elem_id="zp-compare")
            compare_plot = gr.Plot(label="Per-layer weight statistics, A and B", elem_id="zp-compare-plot")
            for f, state in ((file_a, state_a), (file_b, state_b)):
                f.upload(page.on_compare_upload, inputs=f, outputs=state).then(
                    page.on_compare, inputs=[state_a, state_b], outputs=[compared, compare_plot]
                )
    return blocks


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@dataclass
class Server:
    """A running page (`serve` with ``block=False``): its URL; `close` stops it and removes its folder."""

    blocks: Any
    root: Path
    url: str
    previous_temp_dir: str | None = None

    def close(self) -> None:
        try:
            self.blocks.close()
        finally:
            _release(self.root, self.previous_temp_dir)


def _release(root: Path, previous: str | None) -> None:
    """Remove the upload folder `root` and restore ``GRADIO_TEMP_DIR`` to `previous`."""
    shutil.rmtree(root, ignore_errors=True)
    if previous is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = previous


def serve(cfg: AppConfig, *, block: bool = True) -> Server | None:
    """Load the heads, then serve the page at ``cfg.host:cfg.port``: until interrupted (`block`), or in
    the background (returns the `Server`). All uploads go to a fresh temporary folder, removed when the
    server stops."""
    cfg.check()
    root = Path(tempfile.mkdtemp(prefix="zooprobe-app-"))
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(root)  # Gradio reads it when imported: before `build_page`
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    server = None
    try:
        heads = load_app_heads(cfg.heads)
        blocks = build_page(heads, cfg, root)
        if cfg.host not in LOCAL_HOSTS:
            print(
                f"zooprobe: warning: --host {cfg.host}: the page is reachable from other machines",
                file=sys.stderr,
            )
        blocks.launch(
            server_name=cfg.host,
            server_port=cfg.port,
            max_file_size=cfg.max_upload_mb * 2**20,
            show_error=False,
            share=False,
            inbrowser=False,
            ssr_mode=False,
            prevent_thread_lock=True,
            quiet=True,
            css=CSS,
        )
        server = Server(blocks, root, f"http://{cfg.host}:{cfg.port}", previous)
        print(
            f"zooprobe app: serving on {server.url} (Ctrl+C stops it); uploads are kept in {root} only "
            "while they are read, and the folder is removed when the app stops",
            flush=True,
        )
        if not block:
            return server
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it like Ctrl+C: the folder is removed
        blocks.block_thread()
    finally:
        if block or server is None:
            if server is not None:
                server.close()
            _release(root, previous)
    return None


__all__ = ["Page", "Server", "build_page", "serve"]
