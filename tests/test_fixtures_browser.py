"""tests/fixtures/browser.py: Debian's headless Chromium loads a page from a loopback server, runs
its JavaScript, and leaves screenshots as artefacts; Selenium Manager is never run."""

from __future__ import annotations

import json
import struct
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.fixtures.browser import (
    ARTEFACTS_ENV,
    CHROMIUM,
    CHROMIUM_FLAGS,
    WINDOW_SIZE,
    Screenshot,
    artefact_name,
    artefacts_dir,
)

WAIT_S: Final = 30.0
PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"

# The button's handler asks the server (as the control room's page will ask its API) and shows
# the answer: the change comes after a round trip, so the test has to wait for it.
PAGE: Final = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>fixture page</title></head>
<body>
  <h1 id="title">Tower 7</h1>
  <p id="state">unknown</p>
  <button id="refresh" type="button">Refresh</button>
  <script>
    document.getElementById("refresh").addEventListener("click", async () => {
      const answer = await fetch("/state.json");
      document.getElementById("state").textContent = (await answer.json()).state;
    });
  </script>
</body></html>
"""
STATE: Final = {"state": "alarm"}


class PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        routes = {"/": (PAGE, "text/html"), "/state.json": (json.dumps(STATE).encode(), "")}
        body, kind = routes.get(self.path, (b"", ""))
        if not body:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind or "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
        """Quiet: pytest would show every request on stderr."""


@pytest.fixture
def page_url() -> Iterator[str]:
    """http://127.0.0.1:PORT/ served from a thread; port 0 lets the kernel pick a free one."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which always comes first."""
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


class TestBrowser:
    def test_button_fetches_and_shows_the_state(
        self, browser: webdriver.Chrome, page_url: str, screenshot: Screenshot
    ) -> None:
        """The page loads, the click's fetch round-trips to the server, and the new text shows."""
        browser.get(page_url)
        assert browser.title == "fixture page"
        assert browser.find_element(By.ID, "title").text == "Tower 7"
        assert browser.find_element(By.ID, "state").text == "unknown"
        browser.find_element(By.ID, "refresh").click()
        WebDriverWait(browser, WAIT_S).until(
            expected_conditions.text_to_be_present_in_element((By.ID, "state"), "alarm")
        )
        path = screenshot()
        assert path == artefacts_dir() / (
            "tests--test_fixtures_browser.py--TestBrowser--"
            "test_button_fetches_and_shows_the_state.png"
        )
        assert png_size(path.read_bytes())[0] == WINDOW_SIZE[0]

    def test_window_has_the_fixed_size(self, browser: webdriver.Chrome) -> None:
        """Layout tests see the same window on every machine."""
        assert browser.get_window_size() == {"width": WINDOW_SIZE[0], "height": WINDOW_SIZE[1]}

    def test_runs_debians_chromium_with_the_flags(self, browser: webdriver.Chrome) -> None:
        """The browser is Debian's package (its driver of the same build), headless, started with
        the fixture's flags and a fresh profile."""
        package = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "chromium"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        version = browser.capabilities["browserVersion"]
        assert package.startswith(f"{version}-")
        assert browser.capabilities["chrome"]["chromedriverVersion"].startswith(f"{version} ")
        assert "HeadlessChrome/" in browser.execute_script("return navigator.userAgent")
        browser.get("chrome://version")
        command_line = browser.find_element(By.ID, "command_line").text
        assert all(flag in command_line for flag in CHROMIUM_FLAGS), command_line
        profile = Path(browser.capabilities["chrome"]["userDataDir"])
        assert profile.parent.name.startswith("corona-chromium-")

    def test_artefact_folder_from_the_environment(
        self,
        browser: webdriver.Chrome,
        screenshot: Screenshot,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """$CORONA_TEST_ARTEFACTS moves the screenshots; a label tells two of one test apart."""
        monkeypatch.setenv(ARTEFACTS_ENV, str(tmp_path / "artefacts"))
        browser.get("about:blank")
        first, second = screenshot("before"), screenshot("after")
        assert first.parent == second.parent == tmp_path / "artefacts"
        assert first.name.endswith("--before.png")
        assert second.name.endswith("--after.png")
        assert first.read_bytes()[:8] == second.read_bytes()[:8] == PNG_MAGIC


class TestNoDownloads:
    @pytest.mark.usefixtures("no_selenium_manager")
    def test_a_driver_lookup_would_fail_not_download(self) -> None:
        """The guard the browser fixture runs under can fail: without a driver path selenium
        would run Selenium Manager, and there it stops at once."""
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        with pytest.raises(NoSuchDriverException):
            webdriver.Chrome(options=options)

    def test_artefact_name_is_the_test_id(self) -> None:
        """Parameters and folders become file-name-safe; the label comes last."""
        assert (
            artefact_name("tests/test_web.py::TestPage::test_ack[tower 7/a]", "open")
            == "tests--test_web.py--TestPage--test_ack_tower_7--a_--open"
        )
