"""A stand-in for the Hugging Face hub on 127.0.0.1: it answers the resolve requests that
``huggingface_hub.hf_hub_download`` makes and counts them."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class FakeHub:
    """Files by ``(repo, commit, filename)``; branch names map to commits per repo."""

    files: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    branches: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def add(self, repo: str, commit: str, filename: str, data: bytes) -> None:
        self.files[(repo, commit, filename)] = data
        self.branches.setdefault((repo, "main"), commit)

    def lookup(self, path: str) -> tuple[str, bytes] | None:
        """``(commit, bytes)`` for ``/{owner}/{name}/resolve/{revision}/{filename}``."""
        parts = unquote(path.split("?", 1)[0]).strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        commit = self.branches.get((repo, revision), revision)
        data = self.files.get((repo, commit, filename))
        return None if data is None else (commit, data)


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        self.hub.requests.append(f"{self.command} {self.path}")
        found = self.hub.lookup(self.path)
        if found is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        commit, data = found
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


@contextmanager
def serve(hub: FakeHub) -> Iterator[FakeHub]:
    """Run ``hub`` on an ephemeral port of 127.0.0.1; ``hub.url`` is its endpoint."""
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
