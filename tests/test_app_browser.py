"""The web page in a real browser: `python -m ficekit.app` on a free port, driven by headless Debian chromium
through playwright — pick a bundle example, edit in two rounds, undo, download; a bad upload; tabs apart.

Skipped (with the reason) when gradio, playwright or /usr/bin/chromium is missing; `.ci/run` installs them.
FICEKIT_SAVE_SCREENSHOT=1 also writes the screenshot to docs/images/app.png (it always goes to tmp_path).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlparse

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="gradio is not installed (pip install 'ficekit[app]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

CHROMIUM = Path(os.environ.get("FICEKIT_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.is_file():
    pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "docs" / "images" / "app.png"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
# Steps per round: few, so the test is quick; a screenshot for the README is worth more (e.g. 60).
ITERATIONS = int(os.environ.get("FICEKIT_APP_TEST_ITERATIONS", "4"))
START_TIMEOUT_S = 120  # importing gradio and torch and loading the demo models, on a busy machine
STEP_TIMEOUT_MS = 60_000 + 2_000 * ITERATIONS  # one round, or one click's answer
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app as a user starts it, in a subprocess on a free port, with few iterations per round."""
    port = _free_port()
    work = tmp_path_factory.mktemp("app")
    log_path = work / "app.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GRADIO_TEMP_DIR": str(work / "gradio")}
    command = [
        sys.executable, "-m", "ficekit.app", "--port", str(port), "--device", "cpu", "--iterations", str(ITERATIONS),
        "--followup-iterations", str(ITERATIONS), "--preview-every", "2",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the app exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                log_tail = log_path.read_text()[-3000:]
                pytest.fail(f"the app did not answer on {url} within {START_TIMEOUT_S} s:\n{log_tail}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


class AppPage:
    """One browser tab on the app, with the few moves a user makes."""

    def __init__(self, browser: object, url: str) -> None:
        self.url = url
        self.page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        self.page.set_default_timeout(STEP_TIMEOUT_MS)
        self.outside: list[str] = []  # requests to anywhere but the app: there must be none
        host = urlparse(url).netloc
        self.page.on("request", lambda r: None if urlparse(r.url).netloc in (host, "") else self.outside.append(r.url))
        self.page.goto(url)
        self.status = self.page.locator("#ficekit-status")
        self.thumbnails = self.page.locator("#ficekit-history img")
        self.expect = sync_api.expect
        self.expect(self.status).to_be_visible()  # gradio has rendered the page

    def pick_example(self) -> None:
        self.page.locator("#ficekit-examples button.gallery-item").first.click()
        self.expect(self.status).to_contain_text("is ready")

    def edit(self, text: str, round_number: int) -> None:
        self.page.locator("#ficekit-instruction textarea, #ficekit-instruction input").first.fill(text)
        self.page.locator("#ficekit-edit").click()
        self.expect(self.status).to_contain_text(f"Round {round_number}:", timeout=STEP_TIMEOUT_MS)
        self.expect(self.thumbnails).to_have_count(round_number)

    def image_bytes(self, elem_id: str) -> bytes:
        src = self.page.locator(f"#{elem_id} img").first.get_attribute("src")
        assert src, f"#{elem_id} shows no image"
        response = self.page.request.get(urljoin(self.url, src))
        assert response.ok, f"{src}: HTTP {response.status}"
        return response.body()

    def result_src(self) -> str | None:
        return self.page.locator("#ficekit-result img").first.get_attribute("src")


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_two_rounds_preview_undo_download(app_url: str, browser: object, tmp_path: Path) -> None:
    app = AppPage(browser, app_url)
    app.page.evaluate(  # every text the status line shows, to see the live progress that no final state keeps
        """() => { window.ficekitStatus = [];
        new MutationObserver(() => window.ficekitStatus.push(document.querySelector('#ficekit-status').innerText))
            .observe(document.querySelector('#ficekit-status'), {subtree: true, childList: true, characterData: true});
        }"""
    )
    app.pick_example()
    photo = _pixels(app.image_bytes("ficekit-photo"))

    app.edit("red t-shirt", 1)
    first = app.image_bytes("ficekit-result")
    assert first.startswith(PNG_SIGNATURE), "the result is served as PNG"
    assert _pixels(first).shape == photo.shape, "the result has the photo's size"
    assert np.abs(_pixels(first) - photo).max() > 0, "round 1 changed the photo"
    assert np.abs(_pixels(app.image_bytes("ficekit-mask")) - photo).max() > 0, "the mask of round 1 is shown"
    assert "red" in app.status.inner_text().lower()
    statuses = app.page.evaluate("window.ficekitStatus")
    assert any(f"of {ITERATIONS}" in s for s in statuses), f"no live progress was shown: {statuses}"

    app.edit("add white stripes", 2)
    second = app.image_bytes("ficekit-result")
    assert np.abs(_pixels(second) - _pixels(first)).max() > 0, "round 2 changed the result"
    status = app.status.inner_text().lower()
    assert "red" in status and "stripe" in status, f"the state keeps both instructions: {status}"

    with app.page.expect_download() as download_info:
        app.page.locator("#ficekit-result button[aria-label='Download'], #ficekit-result a[download]").first.click()
    downloaded = Path(download_info.value.path()).read_bytes()
    assert downloaded.startswith(PNG_SIGNATURE)
    np.testing.assert_array_equal(_pixels(downloaded), _pixels(second))

    round2_src = app.result_src()
    app.page.locator("#ficekit-undo").click()
    app.expect(app.thumbnails).to_have_count(1)
    app.expect(app.status).to_contain_text("Round 1:")
    app.expect(app.page.locator("#ficekit-result img").first).not_to_have_attribute("src", round2_src or "")
    np.testing.assert_array_equal(_pixels(app.image_bytes("ficekit-result")), _pixels(first))

    round1_src = app.result_src()
    app.page.locator("#ficekit-redo").click()
    app.expect(app.thumbnails).to_have_count(2)
    app.expect(app.status).to_contain_text("Round 2:")
    app.expect(app.page.locator("#ficekit-result img").first).not_to_have_attribute("src", round1_src or "")
    np.testing.assert_array_equal(_pixels(app.image_bytes("ficekit-result")), _pixels(second))

    app.page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring in the picture
    app.page.mouse.move(0, 0)
    shot = tmp_path / "app.png"
    app.page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("FICEKIT_SAVE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    assert not app.outside, f"the page reached beyond the app: {app.outside}"


def test_bad_upload_is_a_message_and_tabs_are_apart(app_url: str, browser: object) -> None:
    app = AppPage(browser, app_url)  # a second tab: it must not see the first test's rounds
    app.expect(app.status).to_contain_text("Pick an example")
    app.expect(app.thumbnails).to_have_count(0)
    app.page.locator("#ficekit-photo input[type=file]").set_input_files(
        files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"this is not an image"}]
    )
    app.expect(app.status).to_contain_text("cannot read image")
    app.page.locator("#ficekit-instruction textarea, #ficekit-instruction input").first.fill("red t-shirt")
    app.page.locator("#ficekit-edit").click()
    app.expect(app.page.get_by_text("upload a photo first")).to_be_visible()
    app.expect(app.thumbnails).to_have_count(0)
    assert not app.outside, f"the page reached beyond the app: {app.outside}"
