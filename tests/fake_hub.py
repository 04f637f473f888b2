"""A tiny stand-in for the Hugging Face hub on 127.0.0.1, for hub imports without a network.

It answers the requests ``huggingface_hub`` (and transformers, through it) makes to download
a file: the repo's ``/api/models/<repo>`` description (file list and commit), the folder
listing ``/api/models/<repo>/tree/<revision>/<folder>`` (as the hub: one level, files and
folders, JSON), and ``HEAD``/``GET`` on ``/<repo>/resolve/<revision>/<file>`` (files in
subfolders too). A repo can be gated, or only some folders of it (``gated_folders``): without
a token those files answer 401 with ``X-Error-Code: GatedRepo``, as the hub does. Point a
process at it with ``HF_ENDPOINT``.
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
    gated_folders: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.sha:
            digest = hashlib.sha1()
            for name in sorted(self.files):
                digest.update(name.encode() + self.files[name])
            self.sha = digest.hexdigest()

    def is_gated(self, path: str) -> bool:
        return self.gated or any(path.startswith(f + "/") for f in self.gated_folders)

    def tree(self, folder: str) -> list[dict[str, object]]:
        """The hub's listing of one folder ("" the root): its files and subfolders."""
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries: dict[str, dict[str, object]] = {}
        for name, data in sorted(self.files.items()):
            if not name.startswith(prefix):
                continue
            head, sep, _ = name[len(prefix) :].partition("/")
            if sep:
                path = prefix + head
                entries[path] = {"type": "directory", "oid": "0" * 40, "size": 0, "path": path}
            else:
                oid = hashlib.sha1(data).hexdigest()
                entries[name] = {"type": "file", "oid": oid, "size": len(data), "path": name}
        return list(entries.values())

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
        if repo.is_gated(filename) and not self.headers.get("Authorization"):
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
        folder = None
        if "/tree/" in repo_id:
            repo_id, rest = repo_id.split("/tree/", 1)
            folder = rest.partition("/")[2]
        repo_id = repo_id.split("/revision/", 1)[0]
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound")
        if repo.gated and not self.headers.get("Authorization"):
            return self._error(401, "GatedRepo")
        if folder is not None:
            listing = repo.tree(folder)
            if folder and not listing:
                return self._error(404, "EntryNotFound")
            return self._json(json.dumps(listing).encode())
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
        self._json(body)

    def _json(self, body: bytes) -> None:
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
