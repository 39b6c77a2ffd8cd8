"""The dashboard in a real browser: Chromium from the distribution's packages, headless, driven by
Selenium through the distribution's chromedriver (nothing downloaded). It opens the address
`chargpt-tui serve` printed, waits for the dashboard, presses p, sees the run pause on the page and
in the run's metrics, and takes the screenshot README.md shows (written to docs/browser.png when
CHARGPT_TUI_SCREENSHOT=1; `.ci/run` installs Chromium where it can)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import COMMAND, TINY_FLAGS, make_text, wait_for_steps, wait_until
from test_serve import Served, events

from chargpt_tui.wire.runtime import is_running

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
except ImportError:
    HAVE_SELENIUM = False
else:
    HAVE_SELENIUM = True

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and HAVE_SELENIUM),
    reason="the browser test needs Chromium and its driver from the distribution "
    "(apt-get install chromium chromium-driver) and Selenium (pip install -e '.[test]')",
)

# Before the page's own script runs: keep what the page's terminal is sent, as text, where the
# test can read it (the terminal draws on a canvas, so its text is not in the page).
RECORD_THE_SCREEN = """
window.__screen = "";
const decoder = new TextDecoder();
const NativeWebSocket = window.WebSocket;
window.WebSocket = function (...args) {
  const socket = new NativeWebSocket(...args);
  socket.addEventListener("message", (event) => {
    if (typeof event.data !== "string") {
      window.__screen += decoder.decode(new Uint8Array(event.data), {stream: true})
        .replace(/\\x1b\\[[0-9;?<>=]*[ -\\/]*[@-~]/g, "");
    }
  });
  return socket;
};
window.WebSocket.prototype = NativeWebSocket.prototype;
"""


@pytest.fixture
def training(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "tiny.txt").write_text(make_text(), encoding="utf-8")
    out = tmp_path / "run"
    flags = [*TINY_FLAGS, "--max-iters", "1000000", "--eval-interval", "100", "--sample-interval", "100"]
    proc = subprocess.Popen([*COMMAND, "tiny.txt", *flags, "--out-dir", str(out), "--headless"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_steps(out / "metrics.jsonl", 250, proc)  # a chart with a few evaluations on it
        wait_until(lambda: is_running(out), 30, "the run to serve viewers")
        yield out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860",
                f"--user-data-dir={tmp_path / 'chromium'}", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_THE_SCREEN})
        yield driver
    finally:
        driver.quit()


def screen_after(driver: object, mark: int, *fragments: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = driver.execute_script("return window.__screen || ''")  # type: ignore[attr-defined]
        if all(f in text[mark:] for f in fragments):
            return str(text)
        assert time.monotonic() < deadline, f"{fragments} not on the page; it shows: {text[-800:]!r}"
        time.sleep(0.1)


def test_the_dashboard_in_chromium_pauses_the_run(training: Path, browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    server = Served(tmp_path, training)
    try:
        driver = browser
        driver.get(server.address)  # type: ignore[attr-defined]
        shown = screen_after(driver, 0, "TRAINING", "loss", "progress", "x best")
        terminal = driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea")  # type: ignore[attr-defined]
        driver.execute_script("arguments[0].focus()", terminal)  # type: ignore[attr-defined]
        keyboard = ActionChains(driver)
        pauses = len(events(training, "pause"))
        keyboard.send_keys("p").perform()  # typed into the page's terminal, which has the focus
        screen_after(driver, len(shown), "PAUSED")
        wait_until(lambda: len(events(training, "pause")) > pauses, 30, "the run to pause")
        time.sleep(1.0)  # the page's terminal draws what it was sent
        png = driver.get_screenshot_as_png()  # type: ignore[attr-defined]
        assert png.startswith(b"\x89PNG") and len(png) > 20_000
        (tmp_path / "browser.png").write_bytes(png)
        if os.environ.get("CHARGPT_TUI_SCREENSHOT") == "1":
            (Path(__file__).parent.parent / "docs" / "browser.png").write_bytes(png)
        shown = screen_after(driver, 0, "PAUSED")
        keyboard.send_keys("p").perform()
        screen_after(driver, len(shown), "TRAINING")
        wait_until(lambda: len(events(training, "resume")) > pauses, 30, "the run to resume")
    finally:
        server.close()
