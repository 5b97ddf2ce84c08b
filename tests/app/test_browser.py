"""``zooprobe app`` in a real browser: headless Chromium (the distribution's package) driven by Selenium.

One app start (the real command, in a subprocess) serves every check: a zoo model and a ResNet-shaped file
are uploaded, their predictions and domain flags read off the page and the JSON download compared with
``zooprobe predict --json``; a pickle payload is refused on the page without running; two checkpoints are
compared side by side; uploads do not outlive their prediction and the upload folder goes when the app
stops. Screenshots are saved in ``tests/artifacts/app/`` (or ``$ZOOPROBE_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zooprobe.cli import main
from zooprobe.inference import result_rows

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[app]')")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        os.environ.get("ZOOPROBE_BROWSER_SKIP")
        or "Chromium or chromedriver not found (.ci/run installs them: apt-get install chromium "
        "chromium-driver)",
        allow_module_level=True,
    )

ARTIFACTS = Path(os.environ.get("ZOOPROBE_TEST_ARTIFACTS", Path(__file__).parents[1] / "artifacts")) / "app"
SERVING = re.compile(r"serving on (\S+) .*uploads are kept in (\S+) only")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class App:
    """``zooprobe app`` in a subprocess: its URL, its upload folder and what it printed."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zooprobe", "app", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        self.uploads: Path | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            found = SERVING.search(line)
            if found:
                self.url, self.uploads = found.group(1), Path(found.group(2).rstrip(","))

    def wait(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while self.url is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the app did not start:\n" + "".join(self.lines))
            time.sleep(0.2)
        urllib.request.urlopen(self.url, timeout=10).close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


@pytest.fixture(scope="module")
def app(app_heads: list[str]) -> Iterator[App]:
    port = str(_free_port())
    server = App(["--heads", *app_heads, "--port", port, "--show_unpredictable", "true"])
    try:
        server.wait()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1600"):
        options.add_argument(arg)
    options.binary_location = str(CHROMIUM)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1400, min(max(height + 100, 900), 6000))
    driver.save_screenshot(str(ARTIFACTS / name))
    assert (ARTIFACTS / name).stat().st_size > 1000


def _upload(driver: Any, box: str, files: list[Path]) -> None:
    field = WebDriverWait(driver, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"#{box} input[type=file]"))
    )
    field.send_keys("\n".join(str(f) for f in files))


def _wait(driver: Any, css: str, count: int = 1, timeout: float = 120) -> list[Any]:
    WebDriverWait(driver, timeout).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, css)) >= count)
    return driver.find_elements(By.CSS_SELECTOR, css)


def test_the_page_in_a_browser(
    app: App,
    browser: Any,
    app_heads: list[str],
    upload_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert app.url is not None and app.url.startswith("http://127.0.0.1:")  # bound to this machine only
    browser.get(app.url)
    _wait(browser, "#zp-upload input[type=file]")
    _shot(browser, "01-page.png")

    # a zoo model and a ResNet-shaped file: predictions and domain flags on the page
    files = [upload_files["model"], upload_files["resnet"]]
    _upload(browser, "zp-upload", files)
    _wait(browser, "#zp-results .zp-file", 2)
    model = browser.find_element(By.CSS_SELECTOR, '#zp-results .zp-file[data-file="model.safetensors"]')
    resnet = browser.find_element(By.CSS_SELECTOR, '#zp-results .zp-file[data-file="resnet.safetensors"]')
    flags = [d.get_attribute("data-in-domain") for d in model.find_elements(By.CSS_SELECTOR, ".zp-domain")]
    assert flags == ["in", "in"]
    flags = [d.get_attribute("data-in-domain") for d in resnet.find_elements(By.CSS_SELECTOR, ".zp-domain")]
    assert flags == ["out", "out"]
    assert "OUT OF DOMAIN" in resnet.text and "outside the training zoo" in resnet.text

    # the same predictions as zooprobe predict --json (page text and the JSON download)
    monkeypatch.chdir(files[0].parent)
    out = tmp_path / "cli.json"
    heads = [a for h in app_heads for a in ("--head", h)]
    args = ["predict", *heads, *(f.name for f in files), "--show_unpredictable", "true", "--json", str(out)]
    assert main(args) == 0
    cli = json.loads(out.read_text())
    for head, section in zip(cli["heads"], model.find_elements(By.CSS_SELECTOR, ".zp-head"), strict=True):
        shown = {
            row.get_attribute("data-target"): " ".join(
                row.find_element(By.CSS_SELECTOR, ".zp-prediction").text.split()
            )
            for row in section.find_elements(By.CSS_SELECTOR, ".zp-target")
        }
        expected = {
            name: " ".join(text.split()) for name, text, _, _ in result_rows(head["predictions"][0])[1]
        }
        assert shown == expected
    assert re.fullmatch(
        r"\d\.\d{4}", shown_accuracy := model.find_element(By.CSS_SELECTOR, ".zp-prediction").text
    )
    assert float(shown_accuracy) == round(
        cli["heads"][0]["predictions"][0]["targets"]["test_accuracy"]["predicted"], 4
    )
    link = _wait(browser, "#zp-json a[href]")[0].get_attribute("href")
    with urllib.request.urlopen(link, timeout=10) as response:
        assert json.loads(response.read()) == cli
    assert app.uploads is not None and app.uploads.is_dir()
    assert not list(app.uploads.rglob("*.safetensors"))  # deleted once predicted on
    _wait(browser, "#zp-corpus-plot img")  # the figures follow the predictions
    _wait(browser, "#zp-layer-plot img")
    _shot(browser, "02-predictions.png")

    # a pickle payload: refused on the page with the CLI's one-line message; it never ran
    browser.get(app.url)
    _upload(browser, "zp-upload", [upload_files["payload"]])
    (error,) = _wait(browser, "#zp-results .zp-error")
    assert error.text.startswith("zooprobe: error: payload.pt") and "weights_only" in error.text
    assert "Traceback" not in browser.page_source
    assert not upload_files["marker"].exists()
    _shot(browser, "03-payload-refused.png")

    # two checkpoints side by side
    browser.find_element(By.XPATH, "//button[@role='tab' and normalize-space()='Compare']").click()
    _upload(browser, "zp-compare-a", [upload_files["model"]])
    _upload(browser, "zp-compare-b", [upload_files["resnet"]])
    rows = _wait(browser, "#zp-compare .zp-target")
    compared = browser.find_element(By.CSS_SELECTOR, "#zp-compare")
    assert "model.safetensors" in compared.text and "resnet.safetensors" in compared.text
    assert len(rows) == sum(len(h["targets"]) for h in cli["heads"])
    _wait(browser, "#zp-compare-plot img")
    _shot(browser, "04-compare.png")

    # stopping the app removes its upload folder
    assert app.stop() == 0
    assert not app.uploads.exists()
