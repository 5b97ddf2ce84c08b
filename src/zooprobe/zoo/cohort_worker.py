"""The worker process of `zooprobe.zoo.workers`: ``python -m zooprobe.zoo.cohort_worker``.

It reads one JSON job per line on stdin and answers each with one JSON line on stdout: first ``init``
(configuration, torch threads, the tasks whose data to load), then ``build`` or ``train`` jobs, one cohort
each, until stdin closes. A job that fails is answered with its traceback; the parent raises it.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from zooprobe.zoo.build import build_part, train_part
from zooprobe.zoo.config import ZooConfig
from zooprobe.zoo.data import load_task


def handle(job: dict[str, Any], cfg: ZooConfig | None) -> dict[str, Any]:
    """One job: ``build`` trains a cohort and writes its part file (`build.build_part`); ``train`` trains it
    and returns its runs' final test accuracies (`build.train_part`)."""
    if cfg is None:
        raise RuntimeError("the first job must be init")
    if job["op"] == "build":
        return build_part(cfg, job["cohort"], Path(job["part"]), job["batched"])
    if job["op"] == "train":
        return train_part(cfg, job["cohort"], job["batched"])
    raise ValueError(f"unknown job {job['op']!r}")


def main() -> None:
    answers = sys.stdout
    sys.stdout = sys.stderr  # a stray print (a library's) must not break the one-line answers
    cfg = None
    for line in sys.stdin:
        job = json.loads(line)
        try:
            if job["op"] == "init":
                torch.set_num_threads(int(job["threads"]))
                cfg = ZooConfig(**job["config"]).resolved()
                for task in job["tasks"]:
                    load_task(task)
                answer: dict[str, Any] = {"ready": True}
            else:
                answer = handle(job, cfg)
        except Exception:
            answer = {"error": traceback.format_exc()}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
