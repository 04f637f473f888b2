"""Shared fixtures: an isolated model store with the demo model, and a real ``bentoml serve``.

Every test session gets its own ``BENTOML_HOME`` (a temporary directory) so that nothing from a
developer's store leaks in, and the offline Hugging Face cache is set up before anything can
import huggingface_hub, exactly as the service does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from stable_audio_bento.store.hub_cache import prepare_offline_hub

prepare_offline_hub()

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="test-bentoml-home-"))
os.environ["BENTOML_HOME"] = str(_SESSION_HOME)
os.environ.pop("STABLE_AUDIO_API_KEYS", None)

import pytest  # noqa: E402

from tests.servers import REPO_ROOT, BentoServer, bento_serve  # noqa: E402

ARTIFACTS = REPO_ROOT / "test-artifacts"
DOC_MODEL_ALIASES = (
    "small-sfx=demo,small-music=demo,medium=demo,stabilityai/stable-audio-3-medium=demo"
)
# The same names on the Stable Audio 3 server: the SA3 demo stands in for the SA3 models.
SA3_MODEL_ALIASES = DOC_MODEL_ALIASES.replace("=demo", "=demo-sa3")


# The test tiers, one folder each: a test is marked by where it lives (``-m "not e2e"``...).
TIERS = {"unit": "unit", "integration": "integration", "inprocess": "inprocess", "e2e": "e2e"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        folder = item.path.resolve().relative_to(tests_dir).parts[0]
        tier = TIERS.get(folder)
        if tier is None:
            raise pytest.UsageError(f"{item.nodeid}: every test lives in one of {sorted(TIERS)}")
        item.add_marker(getattr(pytest.mark, tier))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    """The session's model store root (``BENTOML_HOME``)."""
    return _SESSION_HOME


@pytest.fixture(scope="session")
def demo_tag(bentoml_home: Path) -> str:
    """The demo model, imported once per session into the session's store."""
    from models import DEMO_RECIPE
    from stable_audio_bento.engine.importer import import_source

    return str(import_source("demo", None, recipe_dir=DEMO_RECIPE))


@pytest.fixture(scope="session")
def demo_sa3_tag(bentoml_home: Path) -> str:
    """The Stable Audio 3 demo (``demo-sa3``), imported once per session."""
    from models import DEMO_SA3_RECIPE
    from stable_audio_bento.engine.sa3.demo import import_demo_sa3

    return import_demo_sa3(DEMO_SA3_RECIPE)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files worth looking at after a run (screenshots, logs)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def serve_env(workdir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a test server: the session store, its own outputs and job database.

    And its own BentoML task store: every server start deletes and recreates the file, which
    breaks a server that already has it open (the session's shared ``server`` does).
    """
    env = {
        "BENTOML_HOME": os.environ["BENTOML_HOME"],
        "BENTOML_RESULT_STORE": str(workdir / "task_result.db"),
        "STABLE_AUDIO_OUTPUT_DIR": str(workdir / "outputs"),
        "STABLE_AUDIO_DEVICE": "cpu",
        "STABLE_AUDIO_API_KEYS": "",
        "BENTOML_DO_NOT_TRACK": "True",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def server(demo_tag: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    """One shared ``bentoml serve`` of the demo model, open (no API keys), local storage.

    The stable-audio-api README's model names answer to the demo model here, so its examples
    run as written.
    """
    workdir = tmp_path_factory.mktemp("server")
    env = serve_env(workdir, STABLE_AUDIO_MODEL_ALIASES=DOC_MODEL_ALIASES)
    with bento_serve(env, workdir / "server.log") as running:
        yield running


@pytest.fixture(scope="session")
def sa3_server(
    demo_tag: str, demo_sa3_tag: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    """A ``bentoml serve`` whose default model is ``small-sfx``, an alias of the SA3 demo.

    Both demos are in its store; the stable-audio-api README's model names answer to the SA3
    demo, so its examples run as written on the Stable Audio 3 backend.
    """
    workdir = tmp_path_factory.mktemp("sa3-server")
    env = serve_env(
        workdir,
        STABLE_AUDIO_MODEL_ALIASES=SA3_MODEL_ALIASES,
        STABLE_AUDIO_DEFAULT_MODEL="small-sfx",
    )
    with bento_serve(env, workdir / "server.log") as running:
        yield running


@pytest.fixture(params=["server", "sa3_server"], ids=["sao-demo", "sa3-demo"])
def surface_server(request: pytest.FixtureRequest) -> BentoServer:
    """The surface tests' server, once per model family: its default model is the SAO demo,
    then the SA3 demo (through the ``small-sfx`` alias)."""
    server: BentoServer = request.getfixturevalue(request.param)
    return server
