"""The report in a real browser: headless Chromium, driven over the DevTools protocol.

Checks that every <audio> loads with the duration of its WAV file, every <img> decodes,
and the summary table shows the numbers of metrics.json; saves a screenshot into
test-artifacts/. Standard library only: the DevTools websocket is spoken by hand.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from test_report import make_evaluated_run

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
)
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1600", "--remote-debugging-port=0")  # fmt: skip

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (.ci/run installs it with apt-get)"
)

# Waits for the page, every audio element's metadata and every image, then reports them.
INSPECT_JS = """
(async () => {
  const wait = (ms) => new Promise((done) => setTimeout(done, ms));
  for (let i = 0; i < 300 && document.readyState !== "complete"; i++) await wait(50);
  const audios = [...document.querySelectorAll("audio")];
  await Promise.all(audios.map((a) => a.readyState >= 1 || a.error ? null :
    new Promise((done) => {
      a.addEventListener("loadedmetadata", done, {once: true});
      a.addEventListener("error", done, {once: true});
      setTimeout(done, 20000);
    })));
  const images = [...document.images];
  await Promise.all(images.map((img) => img.decode().catch(() => null)));
  return JSON.stringify({
    href: location.href,
    audio: audios.map((a) => ({src: a.getAttribute("src"), duration: a.duration,
                               error: a.error ? a.error.code : null})),
    images: images.map((img) => ({src: img.getAttribute("src"), width: img.naturalWidth})),
    rows: [...document.querySelectorAll("#summary tr[data-method]")].map((tr) => ({
      method: tr.dataset.method,
      cells: Object.fromEntries([...tr.querySelectorAll("td[data-key]")]
        .map((td) => [td.dataset.key, td.textContent]))})),
  });
})()
"""


class DevTools:
    """A minimal DevTools-protocol client over a hand-made websocket (RFC 6455)."""

    def __init__(self, url: str):
        host_port, path = url.removeprefix("ws://").split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(1)
        assert response.startswith(b"HTTP/1.1 101"), response
        self.next_id = 0

    def _read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            assert chunk, "DevTools connection closed"
            data += chunk
        return data

    def _receive(self) -> dict[str, Any]:
        message = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            message += self._read(length)
            if first & 0x80:  # FIN
                return json.loads(message)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        payload = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)
        while True:
            reply = self._receive()
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply["error"]
                return reply["result"]

    def close(self) -> None:
        self.sock.close()


def _page_websocket(profile: Path, deadline: float) -> str:
    """The page target's websocket URL, once Chromium has written DevToolsActivePort."""
    port_file = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if port_file.is_file() and port_file.read_text().strip():
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise TimeoutError("chromium did not open its DevTools port")


def inspect_page(index: Path, screenshot: Path, tmp_path: Path) -> dict[str, Any]:
    """Open ``index`` in headless Chromium; return what INSPECT_JS saw; save a screenshot."""
    profile = tmp_path / "chromium-profile"
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", index.as_uri()]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        client = DevTools(_page_websocket(profile, time.monotonic() + 60))
        try:
            for _ in range(3):  # the first navigation may still be committing
                result = client.call(
                    "Runtime.evaluate", expression=INSPECT_JS, awaitPromise=True,
                    returnByValue=True, timeout=60000,
                )  # fmt: skip
                seen = json.loads(result["result"].get("value") or "{}")
                if seen.get("href", "").endswith("index.html"):
                    break
                time.sleep(0.5)
            shot = client.call("Page.captureScreenshot", format="png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        finally:
            client.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return seen


def test_report_plays_decodes_and_matches_metrics(tmp_path: Path) -> None:
    run = make_evaluated_run(tmp_path)
    report = run / "report"
    seen = inspect_page(report / "index.html", ARTIFACTS / "report.png", tmp_path)
    assert seen["href"].endswith("index.html")

    assert len(seen["audio"]) == 16
    for audio in seen["audio"]:
        info = sf.info(str(report / audio["src"]))
        assert audio["error"] is None, audio
        assert audio["duration"] == pytest.approx(info.frames / info.samplerate, abs=0.01)

    assert len(seen["images"]) == 16 + 2  # the examples' pictures and a sanity figure each
    assert all(image["width"] > 0 for image in seen["images"]), seen["images"]

    metrics = json.loads((run / "metrics.json").read_text())
    assert [row["method"] for row in seen["rows"]] == list(metrics["methods"])
    for row in seen["rows"]:
        expected = metrics["methods"][row["method"]]
        for key, text in row["cells"].items():
            value = expected.get(key)
            if isinstance(value, bool):
                assert text == ("pass" if value else "FAIL")
            elif value is None:
                assert text == "–"
            else:  # a mean may carry its interval: "value ± half-width"
                number = text.split(" ± ")[0]
                assert float(number) == pytest.approx(value, rel=1e-3, abs=1e-9), key
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
