"""The in-process tier: the HTTP app with starlette's ``TestClient`` over a real ``Runtime``.

The same routers, runtime, coalescer, job worker and demo model as under ``bentoml serve``,
without a server process: answers come in milliseconds to seconds, and a failure shows the
server's traceback in the test's own output.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from stable_audio_bento.http import create_app
from stable_audio_bento.runtime import Runtime
from stable_audio_bento.settings import Settings
from tests.conftest import DOC_MODEL_ALIASES


def make_settings(workdir: Path, **overrides: Any) -> Settings:
    """Settings of an in-process server: the session store's demo model, its own outputs."""
    values: dict[str, Any] = {
        "output_dir": workdir / "outputs",
        "device": "cpu",
        "api_keys": [],
        "model_aliases": DOC_MODEL_ALIASES,
        **overrides,
    }
    return Settings(**values)


@contextmanager
def app_client(settings: Settings) -> Iterator[TestClient]:
    """A started ``Runtime`` behind the app, stopped (worker, models, job store) on exit."""
    runtime = Runtime(settings)
    runtime.start()
    try:
        with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
            yield client
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def client(demo_tag: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The demo model with the reference documents' model names as aliases, open, local."""
    with app_client(make_settings(tmp_path_factory.mktemp("inprocess"))) as running:
        yield running
