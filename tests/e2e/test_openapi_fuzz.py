"""Schemathesis over both OpenAPI documents of a real ``bentoml serve``: all checks, 0 failures.

Bounded: a few examples per operation, a fixed seed, caps that keep every generation tiny
(``STABLE_AUDIO_MAX_STEPS=4``, ``STABLE_AUDIO_MAX_DURATION=2``). ``/docs.json`` is BentoML's
document (native APIs and the compatible routes), ``/v1/openapi.json`` the compatible routes'.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import serve_env
from tests.servers import BentoServer, bento_serve

CONFIG = Path(__file__).with_name("schemathesis.toml")
CAPS = {
    "STABLE_AUDIO_MAX_STEPS": "4",
    "STABLE_AUDIO_MAX_DURATION": "2",
    "STABLE_AUDIO_JOB_QUEUE_SIZE": "16",
}


@pytest.fixture(scope="module")
def capped_server(demo_tag: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    with bento_serve(serve_env(workdir, **CAPS), workdir / "server.log") as server:
        yield server


@pytest.mark.parametrize("document", ["docs.json", "v1/openapi.json"])
def test_schemathesis_finds_nothing(
    capped_server: BentoServer, document: str, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{capped_server.url}/{document}",
        "--checks",
        "all",
        "--max-examples",
        "5",
        "--seed",
        "1",
        # One worker: hypothesis' lambda-source cache is not thread-safe on Python 3.11
        # (a SystemError about AST recursion depth, reported as a schemathesis error).
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--suppress-health-check",
        "all",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    summary = json.loads(report.read_text())
    assert summary["test_cases"]["generated"] > 50, run.stdout[-3000:]
    failures = sum(f["count"] for f in summary["failures"])
    errors = sum(e["count"] for e in summary["errors"])
    assert (failures, errors) == (0, 0), run.stdout[-8000:]
    assert run.returncode == 0, run.stdout[-3000:]
