"""`audiointerp serve` in a real browser: Debian's chromium driven by Playwright.

Starts the CLI's server on a free port, uploads a generated WAV longer than one window,
waits for the result and checks the page: the predicted class, an explanation <audio>
of the input's duration, decoded images, no horizontal scrolling on a phone-sized window.
Saves screenshots under the test's temporary folder. The server's temporary folder is
gone once it stops.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf
from test_report_browser import CHROMIUM
from test_serve import CLASSES, make_model, tone_wav

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (.ci/run installs it with apt-get)"
)
SRC = Path(__file__).resolve().parents[1] / "src"
SECONDS = 2.3  # several 0.5-s windows

# Resolves once the explanation's audio has metadata and every image has decoded.
INSPECT_JS = """
async () => {
  const audio = document.querySelector('#result figure[data-kind="explanation"] audio');
  if (audio.readyState < 1) await new Promise((done) => {
    audio.addEventListener("loadedmetadata", done, {once: true});
    audio.addEventListener("error", done, {once: true});
  });
  const images = [...document.querySelectorAll("#result img")];
  await Promise.all(images.map((img) => img.decode().catch(() => null)));
  return {
    duration: audio.duration, error: audio.error ? audio.error.code : null,
    src: audio.getAttribute("src"),
    audios: [...document.querySelectorAll("#result audio")].map((a) => a.getAttribute("src")),
    widths: images.map((img) => img.naturalWidth),
    rows: [...document.querySelectorAll("#top-k tbody tr td:first-child")]
      .map((td) => td.textContent),
  };
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            with urllib.request.urlopen(f"{url}/api/models", timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"the server at {url} did not answer")


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL, the server's TMPDIR) of `audiointerp serve` on a tiny model, in a subprocess."""
    model = make_model(tmp_path / "energy" / "model")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(temporary)}
    command = [sys.executable, "-m", "audiointerp", "serve", str(model), "--port", str(port)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process)
        yield url, temporary
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert list(temporary.iterdir()) == []  # uploads and results went with the server


def explain_in_page(page, url: str, wav: Path) -> dict:
    """Open the page, upload ``wav``, wait for the result; what INSPECT_JS saw."""
    page.goto(url)
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files("#file", str(wav))
    page.click("#explain")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    return page.evaluate(INSPECT_JS)


def test_page_uploads_explains_and_plays(server: tuple[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url, _ = server
    wav = tmp_path / "tone.wav"
    wav.write_bytes(tone_wav(SECONDS))
    assert sf.info(str(wav)).duration == pytest.approx(SECONDS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            seen = explain_in_page(page, url, wav)
            predicted = page.text_content("#predicted")
            assert predicted in CLASSES and seen["rows"][0] == predicted
            assert page.text_content("#explained").startswith(predicted)
            assert seen["error"] is None and seen["src"].endswith("/explanation.wav")
            assert seen["duration"] == pytest.approx(SECONDS, abs=0.01)
            assert len(set(seen["audios"])) == 3
            assert len(seen["widths"]) == 4 and all(width > 300 for width in seen["widths"])
            page.screenshot(path=str(tmp_path / "serve-1280x800.png"), full_page=True)

            page.set_input_files("#file", [])
            page.click("#explain")  # nothing chosen: a readable message, no request
            assert page.text_content("#error") == "Choose an audio file or a demo mixture first."
            bad = tmp_path / "notes.wav"
            bad.write_text("not audio")
            page.set_input_files("#file", str(bad))
            page.click("#explain")
            page.wait_for_selector("#error:not([hidden])")
            assert page.text_content("#error").startswith(
                "notes.wav: not an audio file soundfile can read"
            )

            phone = browser.new_page(viewport={"width": 390, "height": 844})
            seen = explain_in_page(phone, url, wav)
            assert seen["duration"] == pytest.approx(SECONDS, abs=0.01)
            overflow = phone.evaluate("document.documentElement.scrollWidth")
            assert overflow <= 390, "the page scrolls sideways on a phone"
            phone.screenshot(path=str(tmp_path / "serve-390x844.png"), full_page=True)
        finally:
            browser.close()
    for name in ("serve-1280x800.png", "serve-390x844.png"):
        assert (tmp_path / name).stat().st_size > 20_000
