"""A real ``bentoml serve``: bodies past the limits get a 413 that real clients read, and a slow
upload holds a concurrency slot at most ``STABLE_AUDIO_BODY_TIMEOUT`` (``body_limits``).

10 MB bodies, sent by httpx (declared and streamed), by curl (which sends
``Expect: 100-continue`` for a body this big; and without it, and chunked) and by Python's
urllib (which sends ``Connection: close``: a server that closed at once on the unread body
answered it with a reset, and urllib reported ``Broken pipe``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import serve_env
from tests.servers import BentoServer, bento_serve

BODY_TIMEOUT = 2.0
LIMITS = {
    "STABLE_AUDIO_MAX_CONCURRENCY": "1",
    "STABLE_AUDIO_BODY_TIMEOUT": str(BODY_TIMEOUT),
    "STABLE_AUDIO_MAX_UPLOAD_MB": "4",
}
TEN_MB = 10 * 2**20
JSON_BODY = b'{"prompt": "' + b"a" * TEN_MB + b'"}'
FORM_BODY = (
    b'--x\r\nContent-Disposition: form-data; name="audio"; filename="take.wav"\r\n'
    b"Content-Type: audio/wav\r\n\r\n" + b"\0" * TEN_MB + b"\r\n--x--\r\n"
)
# path -> content type of a 10 MB body past its limit (JSON 64 KiB, base64 JSON and uploads
# about 5 MiB here).
ROUTES = {
    "/v1/audio/generations": "application/json",
    "/jobs": "application/json",
    "/api/generate": "application/json",
    "/api/generate_async/submit": "application/json",
    "/v1/audio/variations": "application/json",
    "/jobs/inpaint": "multipart/form-data; boundary=x",
    "/api/audio_to_audio": "multipart/form-data; boundary=x",
}


@pytest.fixture(scope="module")
def limited(demo_tag: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    workdir = tmp_path_factory.mktemp("body-limits")
    with bento_serve(serve_env(workdir, **LIMITS), workdir / "server.log") as server:
        yield server


def body_of(path: str) -> bytes:
    return FORM_BODY if ROUTES[path].startswith("multipart/") else JSON_BODY


def check_413(status: int, text: str) -> None:
    assert status == 413, text[:300]
    assert '"param": "body"' in text and "the server's limit" in text, text[:300]


@pytest.mark.parametrize("path", list(ROUTES))
def test_httpx_reads_the_413_of_a_10_mb_body(limited: BentoServer, path: str) -> None:
    headers, body = {"content-type": ROUTES[path]}, body_of(path)
    declared = httpx.post(f"{limited.url}{path}", content=body, headers=headers, timeout=60)
    check_413(declared.status_code, declared.text)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 2**16):
            yield body[start : start + 2**16]

    streamed = httpx.post(f"{limited.url}{path}", content=chunks(), headers=headers, timeout=60)
    check_413(streamed.status_code, streamed.text)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize(
    "extra",
    [[], ["-H", "Expect:"], ["-H", "Transfer-Encoding: chunked"]],
    ids=["expect-100-continue", "no-expect", "chunked"],
)
@pytest.mark.parametrize("path", ["/v1/audio/generations", "/jobs/inpaint"])
def test_curl_reads_the_413_of_a_10_mb_body(
    limited: BentoServer, path: str, extra: list[str], tmp_path: Path
) -> None:
    body = tmp_path / "body"
    body.write_bytes(body_of(path))
    command = ["curl", "-sS", "-v", "--max-time", "60", "-H", f"Content-Type: {ROUTES[path]}"]
    command += [*extra, "--data-binary", f"@{body}", f"{limited.url}{path}"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr[-2000:]  # no reset, no timeout
    assert "< HTTP/1.1 413" in run.stderr, run.stderr[-2000:]
    check_413(413, run.stdout)
    if not extra:  # curl asked first: it is told 413 instead of 100 and sends nothing
        assert "Expect: 100-continue" in run.stderr and "HTTP/1.1 100" not in run.stderr


@pytest.mark.parametrize("path", ["/v1/audio/generations", "/jobs/inpaint"])
def test_urllib_reads_the_413_of_a_10_mb_body(limited: BentoServer, path: str) -> None:
    request = urllib.request.Request(
        f"{limited.url}{path}", data=body_of(path), headers={"Content-Type": ROUTES[path]}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    check_413(refused.value.code, refused.value.read().decode())


def test_a_slow_upload_holds_its_slot_at_most_the_body_timeout(limited: BentoServer) -> None:
    head = (
        "POST /v1/audio/variations HTTP/1.1\r\nHost: test\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as slow:
        slow.sendall(head.encode() + b"--x\r\n")
        started = time.monotonic()
        time.sleep(0.3)
        # The one slot is the slow upload's: another request is refused meanwhile.
        busy = httpx.get(f"{limited.url}/jobs", timeout=10)
        assert busy.status_code == 429, busy.text
        answer = b""
        slow.settimeout(0.25)
        while b"\r\n\r\n" not in answer:
            assert time.monotonic() - started < BODY_TIMEOUT + 5, answer
            try:
                slow.sendall(b"a")  # a byte now and then: slow, not stalled
                answer += slow.recv(4096)
            except TimeoutError:
                continue
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert BODY_TIMEOUT - 0.5 <= waited <= BODY_TIMEOUT + 2, waited
    free = httpx.get(f"{limited.url}/jobs", timeout=10)
    assert free.status_code == 200, free.text  # the slot is free again
