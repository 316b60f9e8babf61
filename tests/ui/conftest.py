"""The web app in a real headless Chromium (Debian's ``chromium``, driven by Playwright for Python).

One ``geosleuth ui`` server per module, started through the real entry point on 127.0.0.1 (a free
port) with the tiny local models. Without Chromium or Playwright the browser tests are skipped with
the reason; with GEOSLEUTH_REQUIRE_BROWSER=1 (CI) they fail instead. Screenshots are kept in a
temporary folder (its path is printed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
START_TIMEOUT_S = 120.0


def _unavailable(reason: str) -> None:
    if os.environ.get("GEOSLEUTH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"GEOSLEUTH_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def geosleuth_command() -> list[str]:
    """The installed ``geosleuth`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("geosleuth")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from geosleuth.cli import main; main()"]


class UIServer:
    """A running ``geosleuth ui`` child process; ``url`` is the address it printed."""

    def __init__(self, config: Path, workdir: Path, *extra: str) -> None:
        self.command = geosleuth_command()
        self.stderr_path = workdir / "ui-server.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [*self.command, "--config", str(config), "ui", "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=self._stderr, cwd=workdir,
            env={**os.environ, "GEOSLEUTH_UI_TOKEN": ""},
        )
        self.url = self._read_url()
        self._wait_ready()

    def _fail(self, why: str) -> None:
        self.stop()
        raise AssertionError(f"{why}; server stderr:\n{self.stderr_path.read_text(errors='replace')[-3000:]}")

    def _read_url(self) -> str:
        lines: list[bytes] = []
        reader = threading.Thread(target=lambda: lines.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        line = lines[0].decode().strip() if lines else ""
        if not line.startswith("geosleuth ui: http://127.0.0.1:"):
            self._fail(f"geosleuth ui printed {line!r} instead of its address")
        return line.split(": ", 1)[1]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"geosleuth ui exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "api/sessions", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self._fail(f"geosleuth ui did not answer within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()


@pytest.fixture(scope="module")
def ui_config(tmp_path_factory: pytest.TempPathFactory, tiny_vlm_dir: Path, write_tiny_config) -> Path:
    """Tiny models in process: tiny CLIP + GeoCLIP's heads, the 2K GPS gallery, the tiny LLaVA."""
    return write_tiny_config(
        tmp_path_factory.mktemp("ui-config"),
        retrieval={"k_neighbors": 5, "k_gps": 10},
        vlm={"backend": "transformers", "model": str(tiny_vlm_dir), "device": "cpu", "samples_per_variant": 1,
             "max_new_tokens": 24, "concurrency": 1},
        prompts={"neighbor_counts": [0]},
    )


@pytest.fixture(scope="module")
def ui_server(ui_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    server = UIServer(ui_config, tmp_path_factory.mktemp("ui-server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _unavailable("Chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ui-screenshots")
    print(f"\nUI screenshots: {folder}")
    return folder


class Page:
    """A browser page on the app that records every request leaving 127.0.0.1."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.page = self.context.new_page()
        self.outside: list[str] = []
        self.page.on("request", self._check)
        self.page.set_default_timeout(30_000)
        self.url = url

    def _check(self, request: Any) -> None:
        if not request.url.startswith(("http://127.0.0.1:", "data:", "blob:", "about:")):
            self.outside.append(request.url)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def new_page(browser: Any, ui_server: UIServer) -> Iterator[Any]:
    pages: list[Page] = []

    def make() -> Page:
        pages.append(Page(browser, ui_server.url))
        return pages[-1]

    yield make
    for page in pages:
        page.close()
