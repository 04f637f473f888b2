"""The bento: build it, check what it holds, then serve it from a fresh virtualenv.

``bentoml build`` runs in a temporary ``BENTOML_HOME`` holding the demo model, with every proxy
pointing at a closed port, so any network call during the build fails it. The fresh virtualenv
gets only what the bento says to install (``env/python/requirements.txt``, after the pinned
pip), never the project itself: the package must come from the bento. It is built once per
module (4 to 8 min and 7 GB on a 2-core machine) and deleted afterwards.

``bentoml containerize`` needs a container engine, which these machines lack: the tests check the
generated Dockerfile and serve the bento exactly as the image's entrypoint does
(``bentoml serve $BENTO_PATH`` with the models inside the bento directory).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import serve_env
from tests.servers import REPO_ROOT, BentoServer, bento_serve

BENTO_NAME = "stable-audio"
SERVICE_NAME = "stable-audio"
LOCK = REPO_ROOT / "requirements" / "lock.txt"
PIP_PIN = REPO_ROOT / "requirements" / "pip.txt"
PACKAGE = REPO_ROOT / "src" / "stable_audio_bento"
DEPLOY = REPO_ROOT / "deploy"
CLOSED = "http://127.0.0.1:9"
NO_NETWORK = {
    **{k: CLOSED for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")},
    **{k.lower(): CLOSED for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")},
    "NO_PROXY": "",
    "no_proxy": "",
    "HF_HUB_OFFLINE": "1",
}
REPORT = "packaging.json"


# ------------------------------------------------------------------------------ helpers
def run(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path = REPO_ROOT,
    timeout: float = 300,
) -> str:
    """Run ``command``; its stdout, or a failure that shows the end of its output."""
    result = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, "BENTOML_DO_NOT_TRACK": "True", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def bentoml(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return run(
        [sys.executable, "-m", "bentoml", *args], env={"BENTOML_HOME": str(home), **(env or {})}
    )


def pins(text: str) -> dict[str, str]:
    """``{name: version}`` of a requirements file that must hold ``name==version`` lines only."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        assert match, f"not an exact pin: {line!r}"
        name, version = re.sub(r"[-_.]+", "-", match.group(1)).lower(), match.group(2)
        assert found.setdefault(name, version) == version, f"{name} pinned twice, differently"
    return found


def probe(data: bytes, tmp_path: Path) -> tuple[str, float]:
    """(container format, seconds) of audio bytes, as Debian's ffprobe reads them."""
    path = tmp_path / "probe.audio"
    path.write_bytes(data)
    out = run(["ffprobe", "-v", "error", "-show_format", "-of", "json", str(path)])
    fmt = json.loads(out)["format"]
    return fmt["format_name"], float(fmt["duration"])


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def record(artifacts_dir: Path, **values: Any) -> None:
    """Add measurements to test-artifacts/packaging.json (sizes, timings, contents)."""
    path = artifacts_dir / REPORT
    report = json.loads(path.read_text()) if path.exists() else {}
    report.update(values)
    path.write_text(json.dumps(report, indent=2) + "\n")


def check_serves_the_demo(server: BentoServer, demo_tag: str, tmp_path: Path) -> None:
    """The served bento sees the demo model (and only it), generates audio, serves its page."""
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert [m["tag"] for m in health["models"]] == [demo_tag]
    assert health["loaded_models"] == ["stable-audio-demo"]
    response = httpx.post(
        f"{server.url}/v1/audio/generate",
        json={"input": "rain on a tin roof", "audio_length": 3, "seed": 11},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    format_name, seconds = probe(response.content, tmp_path)
    assert format_name == "wav"
    assert seconds == pytest.approx(3.0, abs=0.01)
    page = httpx.get(f"{server.url}/ui/", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")


def serve_and_check(target: str, home: Path, python: str, demo_tag: str, tmp_path: Path) -> None:
    """``bentoml serve target`` with ``python`` and the store at ``home``; check it serves."""
    env = serve_env(tmp_path, BENTOML_HOME=str(home))
    with bento_serve(
        env, tmp_path / "serve.log", target=target, cwd=tmp_path, python=python
    ) as server:
        check_serves_the_demo(server, demo_tag, tmp_path)


# ------------------------------------------------------------------------------ fixtures
@dataclass(frozen=True)
class BuiltBento:
    tag: str
    path: Path
    seconds: float


def build(home: Path) -> BuiltBento:
    start = time.monotonic()
    out = bentoml(home, "build", "--output", "tag", env=NO_NETWORK)
    seconds = time.monotonic() - start
    match = re.search(r"__tag__:(\S+)", out)
    assert match, out
    tag = match.group(1)
    name, version = tag.split(":")
    return BuiltBento(tag=tag, path=home / "bentos" / name / version, seconds=seconds)


@pytest.fixture(scope="module")
def home(bentoml_home: Path, demo_tag: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``BENTOML_HOME`` of this module's own holding the demo model.

    Not the session's: BentoML recreates ``$BENTOML_HOME/task_result.db`` whenever a server
    starts, which breaks a server already running in the same home (the shared ``server``).
    """
    home = tmp_path_factory.mktemp("packaging-home")
    archive = tmp_path_factory.mktemp("demo-model") / "demo.bentomodel"
    bentoml(bentoml_home, "models", "export", demo_tag, str(archive))
    bentoml(home, "models", "import", str(archive))
    return home


@pytest.fixture(scope="module")
def built(home: Path, artifacts_dir: Path) -> BuiltBento:
    """The bento built from the repository root in a store with the demo model."""
    bento = build(home)
    size = sum(p.stat().st_size for p in bento.path.rglob("*") if p.is_file())
    record(
        artifacts_dir,
        bento_tag=bento.tag,
        build_seconds=round(bento.seconds, 1),
        bento_bytes_without_models=size,
        bento_files=sorted(files_under(bento.path)),
    )
    return bento


@pytest.fixture(scope="module")
def exported(built: BuiltBento, home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bentoml export`` of the bento: an archive with its models."""
    archive = tmp_path_factory.mktemp("export") / "stable-audio.bento"
    bentoml(home, "export", built.tag, str(archive))
    return archive


@pytest.fixture(scope="module")
def bento_python(
    built: BuiltBento, tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path
) -> Iterator[str]:
    """A fresh virtualenv with the bento's requirements (the recipe of its image); its python."""
    venv = tmp_path_factory.mktemp("bento-venv") / "venv"
    start = time.monotonic()
    try:
        run([sys.executable, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        run([*pip, "-r", str(PIP_PIN)], timeout=600)
        requirements = built.path / "env" / "python" / "requirements.txt"
        run([*pip, "-r", str(requirements)], timeout=1800)
        seconds = time.monotonic() - start
        run([python, "-m", "pip", "check"])
        size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
        record(artifacts_dir, fresh_venv_install_seconds=round(seconds, 1), fresh_venv_bytes=size)
        # Nothing outside the bento provides the package: serving proves the bento does.
        probe_import = subprocess.run(
            [python, "-c", "import stable_audio_bento"], cwd=venv, capture_output=True, text=True
        )
        assert probe_import.returncode != 0
        assert "No module named 'stable_audio_bento'" in probe_import.stderr
        yield python
    finally:
        shutil.rmtree(venv, ignore_errors=True)


# ------------------------------------------------------------------------------ the bento
def test_build_environment_has_no_network() -> None:
    """The proxies of NO_NETWORK really block HTTP, so a build under them made no calls."""
    code = "import httpx; httpx.get('https://pypi.org/simple/', timeout=10)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **NO_NETWORK},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ProxyError" in result.stderr or "ConnectError" in result.stderr


def test_bento_lists_the_models_the_server_is_configured_to_serve(
    built: BuiltBento, demo_tag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stable_audio_bento.settings import Settings
    from stable_audio_bento.store.catalog import ModelCatalog

    for name in settings_env_names() & set(os.environ):
        monkeypatch.delenv(name)  # the defaults, not this shell's settings

    info = yaml.safe_load((built.path / "bento.yaml").read_text())
    tags = [m["tag"] for m in info["models"]]
    assert tags == [demo_tag]  # a store reference with its exact version, not "latest"
    assert info["entry_service"] == SERVICE_NAME
    # The default settings' models (default + preload, by name or alias) are all in the bento.
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    catalog = ModelCatalog.from_store(settings.model_aliases)
    for name in [settings.default_model, *settings.preload]:
        assert catalog.resolve(name).tag in tags


def test_bento_holds_the_service_the_package_and_its_web_page(built: BuiltBento) -> None:
    src = built.path / "src"
    shipped = files_under(src)
    # The package sits at the bento's import root (src layout), byte for byte.
    package = {f"stable_audio_bento/{k}": v for k, v in files_under(PACKAGE).items()}
    assert {k: v for k, v in shipped.items() if k.startswith("stable_audio_bento/")} == package
    assert "stable_audio_bento/web/index.html" in shipped
    assert shipped["service.py"] == (REPO_ROOT / "service.py").read_bytes()
    models_cli = {f"models/{k}": v for k, v in files_under(REPO_ROOT / "models").items()}
    assert {k: v for k, v in shipped.items() if k.startswith("models/")} == models_cli
    others = set(shipped) - set(package) - set(models_cli) - {"service.py"}
    assert others == {"bentofile.yaml"}  # written by BentoML: no tests, benchmarks or caches


def test_bento_requirements_are_the_project_pins(built: BuiltBento) -> None:
    bento_pins = pins((built.path / "env" / "python" / "requirements.txt").read_text())
    assert bento_pins == pins(LOCK.read_text())
    assert bento_pins["bentoml"] == "1.4.39"
    assert bento_pins["torch"] == "2.14.1"


def test_dockerfile_has_the_install_recipe(built: BuiltBento) -> None:
    dockerfile = (built.path / "env" / "docker" / "Dockerfile").read_text()
    bentofile = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())
    lines = [line.strip() for line in dockerfile.splitlines()]

    def first(pattern: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    base = bentofile["docker"]["base_image"]
    assert base.startswith("nvidia/cuda:")
    assert lines[first(r"^FROM ")] == f"FROM {base} AS base-container"
    frontend = first(r"^ENV DEBIAN_FRONTEND=")
    system = first(r"^RUN apt-get install .*libsndfile1")
    assert "ffmpeg" in lines[system].split()
    venv = first(r"uv venv --python 3\.11 /app/\.venv")
    install = first(r"pip install -r \$BENTO_PATH/env/python/requirements\.txt")
    assert frontend < system < venv < install
    # Non-root: the image's last USER is BentoML's unprivileged user.
    users = [line for line in lines if line.startswith("USER ")]
    assert users[-1] == "USER bentoml"
    assert "ARG BENTO_USER_UID=1034" in lines
    assert "EXPOSE 3000" in lines


def test_second_build_of_the_same_tree_is_the_same(built: BuiltBento, home: Path) -> None:
    again = build(home)
    assert again.tag != built.tag
    for relative in ("env/python/requirements.txt", "env/docker/Dockerfile"):
        assert (again.path / relative).read_bytes() == (built.path / relative).read_bytes()
    assert set(files_under(again.path / "src")) == set(files_under(built.path / "src"))


# ------------------------------------------------------------------------------ deployment files
def settings_env_names() -> set[str]:
    """Every environment variable the server's settings read."""
    from pydantic import AliasChoices

    from stable_audio_bento.settings import Settings

    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"STABLE_AUDIO_{name.upper()}")
        if isinstance(field.validation_alias, AliasChoices):
            names.update(c for c in field.validation_alias.choices if isinstance(c, str))
    return names


def check_env_names(names: set[str]) -> None:
    allowed = settings_env_names() | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"}
    assert names <= allowed, f"unknown variables: {sorted(names - allowed)}"


def test_kubernetes_manifest(built: BuiltBento) -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    kinds = {d["kind"]: d for d in documents}
    assert set(kinds) == {"Deployment", "Service", "PersistentVolumeClaim"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].split("/")[-1].startswith(f"{BENTO_NAME}:")
    # The image's own unprivileged user, so that mounted volumes are writable by it.
    dockerfile = (built.path / "env" / "docker" / "Dockerfile").read_text()
    uid = re.search(r"^ARG BENTO_USER_UID=(\d+)$", dockerfile, re.MULTILINE)
    assert uid is not None
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["fsGroup"] == int(uid.group(1))

    port = container["ports"][0]
    assert (port["name"], port["containerPort"]) == ("http", 3000)
    startup, ready, live = (
        container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    )
    assert startup["httpGet"]["path"] == ready["httpGet"]["path"] == "/readyz"
    assert live["httpGet"]["path"] == "/livez"
    # Requests hang while the models load: the startup budget covers a slow first load.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    for probe_spec in (startup, ready, live):
        assert probe_spec["httpGet"]["port"] == "http"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1

    env = {e["name"]: e.get("value") for e in container["env"]}
    check_env_names(set(env))
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["mountPath"] == "/home/bentoml/bento/models"  # the bento's store
    assert mounts["models"]["readOnly"] is True
    assert mounts["models"]["subPath"] == "models"  # the volume is a BENTOML_HOME
    assert mounts["outputs"]["mountPath"] == env["STABLE_AUDIO_OUTPUT_DIR"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = kinds["PersistentVolumeClaim"]["metadata"]["name"]
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == claim
    assert env["STABLE_AUDIO_JOB_STORE"] == "redis"  # replicas share jobs and outputs
    assert env["STABLE_AUDIO_STORAGE_BUCKET"]

    service = kinds["Service"]["spec"]
    assert service["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["ports"][0]["targetPort"] == "http"


def test_bentocloud_config() -> None:
    from bentoml._internal.cloud.schemas.schemasv2 import DeploymentConfigSchema
    from bentoml._internal.utils.cattr import bentoml_cattr

    config = yaml.safe_load((DEPLOY / "bentocloud.yaml").read_text())
    assert config["bento"] == "."
    schema = bentoml_cattr.structure(config, DeploymentConfigSchema)
    (name,) = schema.services
    assert name == SERVICE_NAME
    service = schema.services[name]
    assert service.scaling is not None and service.instance_type
    assert 1 <= (service.scaling.min_replicas or 0) <= (service.scaling.max_replicas or 0)
    assert (service.config_overrides or {})["traffic"]["concurrency"] >= 1
    check_env_names({e.name for e in schema.envs or []})
    assert schema.secrets


def test_env_example_names_real_settings() -> None:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    names = {m.group(1) for line in lines if (m := re.match(r"#?\s*([A-Z][A-Z0-9_]*)=", line))}
    assert "STABLE_AUDIO_DEVICE" in names
    check_env_names(names)


# ------------------------------------------------------------------------------ serving it
@pytest.mark.timeout(2400)
def test_fresh_virtualenv_serves_the_built_bento(
    built: BuiltBento, home: Path, bento_python: str, demo_tag: str, tmp_path: Path
) -> None:
    serve_and_check(built.tag, home, bento_python, demo_tag, tmp_path)


@pytest.mark.timeout(2400)
def test_exported_bento_imports_into_an_empty_store_and_serves(
    built: BuiltBento, exported: Path, bento_python: str, demo_tag: str, tmp_path: Path
) -> None:
    home = tmp_path / "second-home"
    home.mkdir()
    bentoml(home, "import", str(exported))
    models = json.loads(bentoml(home, "models", "list", "--output", "json"))
    assert [m["tag"] for m in models] == [demo_tag]
    assert [b["tag"] for b in json.loads(bentoml(home, "list", "--output", "json"))] == [built.tag]

    serve_and_check(built.tag, home, bento_python, demo_tag, tmp_path)


@pytest.mark.timeout(2400)
def test_bento_directory_with_its_models_serves_like_the_image(
    exported: Path, bento_python: str, demo_tag: str, tmp_path: Path
) -> None:
    """The image's layout: the bento at $BENTO_PATH with its models inside, an empty store."""
    bento_path = tmp_path / "bento"
    with tarfile.open(exported) as archive:
        archive.extractall(bento_path, filter="data")
    assert (bento_path / "models" / "stable-audio-demo").is_dir()
    home = tmp_path / "empty-home"
    home.mkdir()

    serve_and_check(str(bento_path), home, bento_python, demo_tag, tmp_path)
    # The models came from the bento directory, not from the (empty) store.
    assert not (home / "models").exists() or not any((home / "models").iterdir())
