"""The Python client examples of docs/client.md, run as written against a real server.

Every ```python block of the document runs in its own interpreter, in an empty directory, with
one change: the address the examples use (``http://localhost:3000``) becomes the test server's.
What each example saved is then checked with ffprobe, so a document that drifts from the
service (or from BentoML's clients) fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT, BentoServer

DOC = REPO_ROOT / "docs" / "client.md"
DOC_URL = "http://localhost:3000"
SECONDS = 5.0

# Example (by its headings) -> the files it saves and their container format as ffprobe names it.
EXPECTED = {
    "The sync API / With `SyncHTTPClient`": {"rain.wav": "wav"},
    "The sync API / With `AsyncHTTPClient`": {"thunder.wav": "wav", "birds.mp3": "mp3"},
    "The task API / With `AsyncHTTPClient`": {"waves.flac": "flac"},
    "The task API / With `SyncHTTPClient`": {"campfire.opus": "ogg"},
    "Durable jobs from Python: wait, follow, or be called back / ": {"door.wav": "wav"},
}


@dataclass(frozen=True)
class Example:
    title: str
    code: str


def python_examples(markdown: str) -> list[Example]:
    """The ```python blocks of ``markdown``, titled by their ``##`` / ``###`` headings."""
    examples: list[Example] = []
    section = subsection = ""
    block: list[str] | None = None
    for line in markdown.splitlines():
        if block is not None:
            if line.startswith("```"):
                examples.append(Example(f"{section} / {subsection}", "\n".join(block) + "\n"))
                block = None
            else:
                block.append(line)
        elif line.startswith("```python"):
            block = []
        elif match := re.match(r"(#{2,3}) (.+)", line):
            if match.group(1) == "##":
                section, subsection = match.group(2).strip(), ""
            else:
                subsection = match.group(2).strip()
    return examples


EXAMPLES = python_examples(DOC.read_text())


def probe(path: Path) -> tuple[str, float]:
    """(container format, seconds) of an audio file, as Debian's ffprobe reads it."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    fmt = json.loads(out.stdout)["format"]
    return fmt["format_name"], float(fmt["duration"])


def test_every_example_is_checked() -> None:
    """A new or renamed example in the document needs its expectations here."""
    assert [e.title for e in EXAMPLES] == list(EXPECTED)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.title for e in EXAMPLES])
def test_example_runs(example: Example, surface_server: BentoServer, tmp_path: Path) -> None:
    """Each example on the server's default model: the SAO demo, then the SA3 demo."""
    assert example.code.count(DOC_URL) == 1, "each example names the server address once"
    code = example.code.replace(DOC_URL, surface_server.url)
    result = subprocess.run(
        [sys.executable, "-"],
        input=code,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{example.title} failed:\n{result.stderr[-4000:]}"

    expected = EXPECTED[example.title]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)
    for name, format_name in expected.items():
        assert f"saved {name}" in result.stdout
        found_format, seconds = probe(tmp_path / name)
        assert found_format == format_name, name
        assert seconds == pytest.approx(SECONDS, abs=0.1), name


def test_sync_client_task_submit_is_still_broken(server: BentoServer) -> None:
    """The BentoML bug the document works around; when this fails, simplify docs/client.md.

    ``SyncHTTPClient``'s task ``submit`` sends the request, then fails while cleaning up.
    """
    import bentoml

    request = {"input": "a short test tone", "audio_length": 1}
    with (
        bentoml.SyncHTTPClient(server.url) as client,
        pytest.raises(AttributeError, match="_opened_files"),
    ):
        client.generate_async.submit(request)
