"""The README examples run as written against a real server; its settings table is complete."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from stable_audio_bento.settings import Settings
from tests.probe import ffprobe
from tests.servers import REPO_ROOT, BentoServer

README = (REPO_ROOT / "README.md").read_text()
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README) if lang == language]


def against(server: BentoServer, code: str) -> str:
    return code.replace("http://localhost:3000", server.url)


def shell_examples() -> list[str]:
    """The request examples (not the set-up commands, nor the hub import that needs a token)."""
    return [b for b in blocks("sh") if "localhost:3000" in b and "make serve" not in b]


def test_readme_has_the_examples_we_run() -> None:
    assert len(shell_examples()) >= 4
    assert any("httpx" in b for b in blocks("python"))
    assert any("SyncHTTPClient" in b for b in blocks("python"))


@pytest.mark.parametrize("index", range(len(shell_examples())))
def test_readme_shell_example(server: BentoServer, tmp_path: Path, index: int) -> None:
    script = against(server, shell_examples()[index])
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    check_outputs(tmp_path)


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_readme_python_example(server: BentoServer, tmp_path: Path, index: int) -> None:
    script = against(server, blocks("python")[index])
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    check_outputs(tmp_path)


def check_outputs(directory: Path) -> None:
    """Every audio file an example wrote decodes; an example that writes none printed JSON."""
    for path in directory.iterdir():
        probe = ffprobe(path.read_bytes())
        assert probe.duration > 0.5 and probe.channels == 2, path.name


def test_settings_table_lists_every_setting() -> None:
    documented = set(re.findall(r"^\| `(STABLE_AUDIO_[A-Z_]+)`", README, re.MULTILINE))
    expected = {f"STABLE_AUDIO_{name.upper()}" for name in Settings.model_fields}
    assert expected == documented
