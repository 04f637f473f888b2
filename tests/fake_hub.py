"""A tiny stand-in for the Hugging Face hub on 127.0.0.1, for hub imports without a network.

It answers the three requests ``huggingface_hub`` makes to download a file: the repo's
``/api/models/<repo>`` description (file list and commit), and ``HEAD``/``GET`` on
``/<repo>/resolve/<revision>/<file>``. A repo can be gated: without a token its files answer
401 with ``X-Error-Code: GatedRepo``, as the hub does. Point a process at it with
``HF_ENDPOINT``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    gated: bool = False
    sha: str = field(default="")

    def __post_init__(self) -> None:
        if not self.sha:
            digest = hashlib.sha1()
            for name in sorted(self.files):
                digest.update(name.encode() + self.files[name])
            self.sha = digest.hexdigest()

    @classmethod
    def from_dir(cls, directory: Path, gated: bool = False) -> FakeRepo:
        files = {
            p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*"))
            if p.is_file()
        }
        return cls(files, gated)


class _Handler(BaseHTTPRequestHandler):
    # Set per server by ``fake_hub`` (a subclass each).
    repos: ClassVar[dict[str, FakeRepo]] = {}
    requests: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _repo_file(self) -> tuple[FakeRepo | None, str, str]:
        path = unquote(self.path.split("?", 1)[0]).lstrip("/")
        for repo_id, repo in self.repos.items():
            if path.startswith(repo_id + "/resolve/"):
                _, filename = path[len(repo_id) + len("/resolve/") :].split("/", 1)
                return repo, repo_id, filename
        return None, "", ""

    def _error(self, status: int, code: str) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _file(self, body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        repo, _, filename = self._repo_file()
        if repo is None:
            return self._error(404, "RepoNotFound")
        if repo.gated and not self.headers.get("Authorization"):
            return self._error(401, "GatedRepo")
        data = repo.files.get(filename)
        if data is None:
            return self._error(404, "EntryNotFound")
        self.send_response(200)
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self._file(body=False)

    def do_GET(self) -> None:
        if not self.path.startswith("/api/models/"):
            return self._file(body=True)
        self.requests.append(f"GET {self.path}")
        repo_id = unquote(self.path.split("?", 1)[0])[len("/api/models/") :]
        repo_id = repo_id.split("/revision/", 1)[0]
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound")
        if repo.gated and not self.headers.get("Authorization"):
            return self._error(401, "GatedRepo")
        body = json.dumps(
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": repo.sha,
                "private": False,
                "gated": "manual" if repo.gated else False,
                "siblings": [{"rfilename": name} for name in sorted(repo.files)],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def fake_hub(repos: dict[str, FakeRepo]) -> Iterator[tuple[str, list[str]]]:
    """Serve ``repos`` (repo id -> files); yield the endpoint URL and the request log."""
    handler = type("Handler", (_Handler,), {"repos": repos, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
