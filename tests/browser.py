"""A headless Chromium for UI tests, driven over the W3C WebDriver protocol by chromedriver.

Debian's `chromium` and `chromium-driver` packages (installed by `.ci/run`); no Python
package needed: chromedriver is an HTTP server and this speaks its JSON. Tests skip cleanly
where either program is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pipeline.cluster import free_port  # noqa: F401 - the tests' one free-port helper


def require_chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("needs Chromium and chromedriver (apt-get install chromium chromium-driver)")
    return browser, driver


@contextmanager
def pipeline_ui(tracking_uri: str) -> Iterator[str]:
    """`pipeline ui` on a free loopback port over `tracking_uri`; yields its URL once the
    server answers, and stops it with Ctrl-C (it must exit cleanly)."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    server = subprocess.Popen(
        [sys.executable, "-m", "stages.cli", "ui", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        line = ""
        while "MLflow UI:" not in line:  # printed once the server answers
            line = server.stdout.readline()
            assert line or server.poll() is None, "pipeline ui exited early"
        url = f"http://127.0.0.1:{port}"
        assert url in line
        yield url
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C: pipeline ui stops its server
        server.communicate(timeout=30)
    assert server.returncode == 0


def compare_url(url: str, experiment_id: str, run_ids: list[str]) -> str:
    """The MLflow page comparing `run_ids` side by side."""
    query = urllib.parse.urlencode(
        {"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])}
    )
    return f"{url}/#/compare-runs?{query}"


class Browser:
    """One headless Chromium session: `open(url)`, `text()`, `wait_for_text(...)`."""

    def __init__(self, browser: str, driver: str):
        self.port = free_port()
        self.process = subprocess.Popen(
            [driver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/status")
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,1000"]  # fmt: skip
        session = self._call(
            "POST",
            "/session",
            {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"binary": browser,
                                                                    "args": args}}}},
        )  # fmt: skip
        self.session = f"/session/{session['sessionId']}"

    def open(self, url: str) -> None:
        self._call("POST", f"{self.session}/url", {"url": url})

    def run(self, script: str):
        return self._call("POST", f"{self.session}/execute/sync", {"script": script, "args": []})

    def text(self) -> str:
        return self.run("return document.body ? document.body.innerText : '';") or ""

    def wait_for_text(self, *words: str, timeout: float = 60) -> str:
        """The page's text once it holds every word (the UI renders after its API calls)."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if all(word in text for word in words):
                return text
            time.sleep(0.5)
        missing = [word for word in words if word not in text]
        raise AssertionError(f"page never showed {missing}; it shows:\n{text[:3000]}")

    def wait_for_image(self, width: int, timeout: float = 60) -> None:
        """Until the page shows a loaded image `width` pixels wide (MLflow's artifact view draws
        a PNG once it has downloaded it)."""
        deadline = time.monotonic() + timeout
        widths = []
        while time.monotonic() < deadline:
            widths = self.run(
                "return Array.from(document.images).filter(i => i.complete)"
                ".map(i => i.naturalWidth);"
            )
            if width in widths:
                return
            time.sleep(0.5)
        raise AssertionError(f"no image {width} px wide was drawn; the page's: {widths}")

    def scroll_to_text(self, word: str, timeout: float = 60) -> str:
        """The page's text once `word` is in it, scrolling each virtualized table (MLflow renders
        only the rows in view: a compare page's metrics past the first dozen, say) a view at a
        time, as a reader would."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for offset in range(0, 20000, 200):
                text = self.text()
                if word in text:
                    return text
                scrolled = self.run(
                    "const grids = document.querySelectorAll('.ReactVirtualized__Grid');"
                    f"grids.forEach(g => {{ g.scrollTop = {offset}; }});"
                    f"return Array.from(grids).some(g => g.scrollHeight > {offset});"
                )
                if not scrolled:
                    break
                time.sleep(0.1)
            time.sleep(0.5)
        raise AssertionError(f"no scroll of the page's tables showed {word!r}")

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._call("DELETE", self.session)
        finally:
            self.process.terminate()
            self.process.wait(timeout=10)

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path, data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"{}").get("value")
