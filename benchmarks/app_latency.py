"""How fast the page of ``zooprobe app`` is, in a real browser (headless Chromium driven by Selenium).

Measures, over ``--repeats`` runs, the page load (navigation until the upload box is shown) and one
prediction (from giving the browser a small zoo model's file until its predictions are on the page) and
prints min / median of each. The issue's targets: page load under 3 s, one prediction under 2 s.

    python benchmarks/app_latency.py                       # tiny zoo, encoder and head, built in --workdir
    python benchmarks/app_latency.py --heads RUN [RUN ...] --file model.safetensors

Without ``--heads`` it builds (once, kept in ``--workdir``) a 64-run tiny zoo, a tiny encoder and a
gradient-boosting accuracy head plus a neural hyperparameters head, as the tests do. Needs the app extra,
selenium, and ``chromium`` + ``chromedriver`` (Debian: ``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tiny_heads import tiny_heads


def prepare(workdir: Path) -> tuple[list[str], Path]:
    """(head run folders, a test-split zoo model file), built once into `workdir`."""
    from safetensors.torch import save_file

    from zooprobe.api import load_zoo

    zoo, heads = tiny_heads(workdir)
    model = workdir / "model.safetensors"
    if not model.is_file():
        sd = load_zoo(zoo).final().split("test").state_dict(0)
        save_file({k: v.contiguous() for k, v in sd.items()}, str(model), {"order": json.dumps(list(sd))})
    return heads, model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with status {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the app did not answer on {url} within {timeout:.0f} s")


def chrome() -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2000"):
        options.add_argument(arg)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary:
        options.binary_location = binary
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", nargs="+", default=None, help="Head run folders (default: tiny ones).")
    parser.add_argument("--file", type=Path, default=None, help="Checkpoint to predict on.")
    parser.add_argument("--workdir", type=Path, default=Path(".cache/bench-app"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.heads is None:
        heads, model = prepare(args.workdir)
    else:
        heads, model = args.heads, args.file
    if model is None:
        raise SystemExit("--file: give the checkpoint to predict on with --heads")

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "zooprobe", "app", "--heads", *heads, "--port", str(port)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    try:
        wait_for(url, proc, 300)
        start = time.perf_counter() - t0
        driver = chrome()
        loads, predictions = [], []
        try:
            for _ in range(args.repeats):
                driver.get("about:blank")
                t = time.perf_counter()
                driver.get(url)
                WebDriverWait(driver, 30).until(
                    ec.presence_of_element_located((By.CSS_SELECTOR, "#zp-upload input[type=file]"))
                )
                loads.append(time.perf_counter() - t)
                box = driver.find_element(By.CSS_SELECTOR, "#zp-upload input[type=file]")
                t = time.perf_counter()
                box.send_keys(str(Path(model).resolve()))
                WebDriverWait(driver, 60).until(
                    ec.presence_of_element_located((By.CSS_SELECTOR, "#zp-results .zp-file .zp-target"))
                )
                predictions.append(time.perf_counter() - t)
        finally:
            driver.quit()  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"app start (heads loaded, serving): {start:.2f} s")
    for name, values in (("page load", loads), ("one prediction after upload", predictions)):
        print(
            f"{name}: min {min(values):.3f} s, median {statistics.median(values):.3f} s "
            f"over {len(values)} runs"
        )


if __name__ == "__main__":
    main()
