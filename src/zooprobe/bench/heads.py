"""``zooprobe bench heads``: what the representation cache buys, memory of frozen vs fine-tuning steps,
and the test metrics of all three heads, frozen and fine-tuned.

1. Cache: seconds per epoch of frozen head training reading cached representations (tensors in memory)
   versus recomputing them every epoch (read, tokenize and encode every training model, then the same
   head epoch), and the ratio.
2. Memory: peak memory of one training step (``batch_size`` models) in frozen mode (encoder under
   ``no_grad``) and in fine-tuning mode (encoder activations kept for backward). On CUDA this is
   ``torch.cuda.max_memory_allocated``; on CPU the growth of the process's peak resident set (VmHWM, reset
   before each measurement) over its resident set before the step (frozen first: memory the allocator
   keeps from earlier steps can only make the fine-tuning number smaller). Next to it, exactly: the bytes
   of the tensors autograd saves for backward in each mode.
3. Metrics: `train` for every task in both modes on the zoo's splits; test metrics of the best checkpoint
   (chosen on validation).
"""

from __future__ import annotations

import copy
import gc
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zooprobe.api import load_encoder, load_zoo, train
from zooprobe.bench.compare import BENCH_OUTPUT, default_base, head_run_config
from zooprobe.core.memory import process_status_kib, reset_peak_rss
from zooprobe.core.outputs import check_output, claim_output, holding_outputs
from zooprobe.heads.encoder_with_head import EncoderWithHead
from zooprobe.heads.prediction_heads import build_head
from zooprobe.representations.cache import compute_representations
from zooprobe.training.config import TrainConfig
from zooprobe.training.data_loader import _float32, prepare_data, split_targets

TASKS = ("patterns", "accuracy", "hyperparameters")
#: Test metrics shown in the table, per task.
TABLE_METRICS = {
    "patterns": ["macro_f1", "macro_roc_auc", "subset_accuracy"],
    "accuracy": ["r2", "kendall_tau", "mae"],
    "hyperparameters": [
        "score",
        "learning_rate/r2",
        "weight_decay/r2",
        "optimizer/accuracy",
        "activation/accuracy",
        "init/accuracy",
        "family/accuracy",
    ],
}


@dataclass
class HeadBenchResult:
    zoo: str
    encoder: str
    n_models: dict[str, int] = field(default_factory=dict)
    cached_epoch_s: float = math.nan
    uncached_epoch_s: float = math.nan
    encode_s: float = math.nan
    memory: dict[str, float] = field(default_factory=dict)
    memory_unit: str = "RSS growth"
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def finetune_epoch_seconds(self) -> dict[str, list[float]]:
        """Epoch seconds of the fine-tuning runs: ``first`` epochs and ``later`` ones ({} without runs)."""
        runs = [r for key, r in self.runs.items() if key.endswith("/finetune") and r.get("epoch_seconds")]
        if not runs:
            return {}
        return {
            "first": [r["epoch_seconds"][0] for r in runs],
            "later": [x for r in runs for x in r["epoch_seconds"][1:]],
        }

    @property
    def cache_ratio(self) -> float:
        return self.uncached_epoch_s / self.cached_epoch_s

    def lines(self) -> list[str]:
        out = [
            f"zoo {self.zoo}, encoder {self.encoder}; models train/validation/test "
            + "/".join(str(self.n_models.get(k, "?")) for k in ("train", "validation", "test")),
            "",
            "frozen head training, seconds per epoch:",
            f"  with the representation cache      {self.cached_epoch_s:.4f} s",
            f"  recomputing representations         {self.uncached_epoch_s:.3f} s "
            f"(encoding {self.encode_s:.3f} s + the same head epoch)",
            f"  ratio                               {self.cache_ratio:.0f}x  (target >= 50x)",
        ]
        if self.memory:
            saved_f = self.memory.get("frozen_saved_for_backward", math.nan)
            saved_t = self.memory.get("finetune_saved_for_backward", math.nan)
            out += [
                "",
                f"memory of one training step ({int(self.memory.get('batch_size', 0))} models per step):",
                f"  saved for backward (exact): frozen {saved_f:.1f} MiB, fine-tuning {saved_t:.1f} MiB"
                + (f" ({saved_t / saved_f:.0f}x)" if saved_f > 0 else ""),
                f"  peak {self.memory_unit}: frozen {self.memory['frozen']:.1f} MiB, fine-tuning "
                f"{self.memory['finetune']:.1f} MiB",
            ]
        epochs = self.finetune_epoch_seconds()
        if epochs:
            out += [
                "",
                "fine-tuning, seconds per epoch (all tasks; a run's first epoch also prepares its inputs):",
                f"  first epochs: median {float(np.median(epochs['first'])):.2f} s; later epochs: median "
                + (f"{float(np.median(epochs['later'])):.2f} s" if epochs["later"] else "-"),
            ]
        if self.runs:
            out += ["", "test metrics (best validation checkpoint):"]
            out += format_runs_table(self.runs)
        return out


def format_runs_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| task | mode | metric | test | epochs | seconds |", "|---|---|---|---|---|---|"]
    for key, run in runs.items():
        task, mode = key.split("/")
        for i, metric in enumerate(TABLE_METRICS[task]):
            value = run["test"].get(metric, math.nan)
            shown = "NaN" if not isinstance(value, float) or math.isnan(value) else f"{value:.3f}"
            extra = (f"{run['epochs_run']}", f"{run['seconds']:.0f}") if i == 0 else ("", "")
            first = (task, mode) if i == 0 else ("", "")
            rows.append(f"| {first[0]} | {first[1]} | {metric} | {shown} | {extra[0]} | {extra[1]} |")
    return rows


# ------------------------------------------------------------------------------------------ measurements
def _head_epoch(
    head: torch.nn.Module, feats: torch.Tensor, targets: dict[str, torch.Tensor], bs: int, opt: Any
) -> None:
    head.train()
    perm = torch.randperm(feats.shape[0])
    for s in range(0, len(perm), bs):
        idx = perm[s : s + bs]
        out = head({"pooled": feats[idx]})
        loss, _ = head.loss(out, {k: v[idx] for k, v in targets.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def measure_cache(encoder: Any, data: Any, cfg: TrainConfig, epochs: int = 5) -> tuple[float, float, float]:
    """(cached epoch s, uncached epoch s, encode s) for the frozen accuracy head (see the module docs)."""

    train = data.splits["train"]
    torch.manual_seed(0)
    head = build_head(data.spec, cfg.head, encoder.latent_dim)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.optim.lr)
    targets = split_targets(train, np.arange(len(train)), torch.device("cpu"))
    feats = train.reps.pooled
    _head_epoch(head, feats, targets, cfg.optim.batch_size, opt)  # warm-up
    start = time.perf_counter()
    for _ in range(epochs):
        _head_epoch(head, feats, targets, cfg.optim.batch_size, opt)
    cached = (time.perf_counter() - start) / epochs
    start = time.perf_counter()
    reps = compute_representations(encoder, train.zoo, batch_size=cfg.encode_batch_size, progress=False)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    _head_epoch(head, reps.pooled, targets, cfg.optim.batch_size, opt)
    uncached = encode_s + (time.perf_counter() - start)
    return cached, uncached, encode_s


def _step(model: Any, opt: Any, tms: list[Any], targets: dict[str, torch.Tensor]) -> float:
    """One training step; returns the MiB of tensors autograd saved for backward (exact, deduplicated)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(tokenized=tms)
        loss, _ = model.head.loss(out, targets)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return sum(seen.values()) / 2**20


def measure_step_memory(encoder: Any, data: Any, cfg: TrainConfig, batch_size: int = 64) -> dict[str, float]:
    """Peak memory of a frozen and of a fine-tuning training step (see the module docs)."""

    device = next(encoder.encoder.parameters()).device
    train = data.splits["train"]
    rows = np.arange(min(batch_size, len(train)))
    tms = [encoder.tokenize(_float32(train.zoo.state_dict(int(i)))) for i in rows]
    targets = split_targets(train, rows, device)
    result: dict[str, float] = {"batch_size": float(len(rows))}
    for mode in ("frozen", "finetune"):
        torch.manual_seed(0)
        head = build_head(data.spec, cfg.head, encoder.latent_dim)
        own = copy.deepcopy(encoder)  # the steps below must not change the caller's encoder
        model = EncoderWithHead(own, head, mode).to(device)  # type: ignore[arg-type]
        opt = torch.optim.AdamW(model.param_groups(1e-4, 0.0))
        model.train()

        _step(model, opt, tms, targets)  # optimizer state allocated before measuring
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            saved = _step(model, opt, tms, targets)
            torch.cuda.synchronize()
            result[mode] = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            if not reset_peak_rss():  # VmHWM back to the current RSS
                raise OSError("cannot reset the peak resident memory (/proc/self/clear_refs): Linux only")
            base = process_status_kib("VmRSS") or 0
            saved = _step(model, opt, tms, targets)
            result[mode] = ((process_status_kib("VmHWM") or 0) - base) / 1024
        result[f"{mode}_saved_for_backward"] = saved
        del model, opt, own
    return result


# ------------------------------------------------------------------------------------------ bench
@holding_outputs  # the folder's lock is released when it returns
def bench_heads(
    zoo: str = "builtin:bench",
    encoder: str = "default",
    output: str | Path = "bench",
    *,
    base: TrainConfig | None = None,
    finetune_epochs: int = 10,
    modes: tuple[str, ...] = ("frozen", "finetune"),
    tasks: tuple[str, ...] = TASKS,
    memory: bool = True,
    progress: bool = True,
) -> HeadBenchResult:
    """Run the three measurements of the module docs. Training runs go to ``output/runs/<task>-<mode>``
    with the configurations of ``zooprobe bench`` (`head_run_config`): runs either benchmark finished are
    re-scored, not retrained."""

    base = replace(base, zoo=zoo, encoder=encoder) if base else default_base(zoo, encoder)

    output = Path(output)
    check_output(output, BENCH_OUTPUT)  # reads only: a folder of the user's own fails before any work
    loaded = load_encoder(encoder, progress=progress)
    zoo_obj = load_zoo(zoo)
    result = HeadBenchResult(zoo=zoo, encoder=encoder)
    acc_cfg = replace(base, task="accuracy", mode="frozen")
    data = prepare_data(acc_cfg, loaded, zoo_obj, progress=progress)
    result.n_models = {k: len(v) for k, v in data.splits.items()}
    result.cached_epoch_s, result.uncached_epoch_s, result.encode_s = measure_cache(loaded, data, acc_cfg)
    if memory:
        result.memory = measure_step_memory(loaded, data, acc_cfg)
        result.memory_unit = (
            "CUDA allocated" if torch.cuda.is_available() and base.device != "cpu" else "RSS growth"
        )
    claim_output(output, BENCH_OUTPUT)
    for task in tasks:
        frozen_dir = output / "runs" / f"{task}-frozen"
        for mode in ("frozen", "finetune"):
            if mode not in modes and not (mode == "frozen" and "finetune" in modes):
                continue  # fine-tuning starts from the frozen head, so that run is always needed
            cfg = head_run_config(base, task, mode, frozen_dir, finetune_epochs)
            start = time.perf_counter()
            run = train(
                cfg, output / "runs" / f"{task}-{mode}", encoder=loaded, zoo=zoo_obj, progress=progress
            )
            if mode in modes:
                result.runs[f"{task}/{mode}"] = {
                    "test": run.test,
                    "validation": run.validation,
                    "best_epoch": run.best_epoch,
                    "epochs_run": run.epochs_run,
                    # training time from the run's history (a finished run is only re-scored here)
                    "seconds": sum(float(h.get("seconds", 0.0)) for h in run.history),
                    "epoch_seconds": [float(h.get("seconds", math.nan)) for h in run.history],
                    "wall_seconds": time.perf_counter() - start,
                }
    return result


__all__ = ["HeadBenchResult", "bench_heads", "format_runs_table", "measure_cache", "measure_step_memory"]
