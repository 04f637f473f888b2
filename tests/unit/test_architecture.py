"""The package's shape: no import cycle anywhere, the import contracts kept, one family per
package, one envelope and status table at the HTTP edge."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import grimp

from models import RECIPES
from stable_audio_bento.engine import families
from stable_audio_bento.engine.info import SAT_BACKEND
from stable_audio_bento.engine.sa3 import SA3_BACKEND
from stable_audio_bento.errors import QueueFullError
from stable_audio_bento.http.envelope import STATUSES, answer_of, envelope, error_type
from stable_audio_bento.schemas import ErrorResponse

ROOT = Path(__file__).resolve().parents[2]


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected group of modules (Tarjan), one list per cycle."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in edges[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == module:
                    break
            if len(group) > 1 or module in edges[module]:
                found.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_anywhere_in_the_package() -> None:
    """Module by module, TYPE_CHECKING and function-level imports included."""
    graph = grimp.build_graph("stable_audio_bento", cache_dir=None)
    assert len(graph.modules) > 50
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_import_contracts_are_kept() -> None:
    """``lint-imports`` (as ``make lint`` runs it) on .importlinter: every contract kept."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": str(lint_imports.parent)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 5 kept, 0 broken." in done.stdout


def test_each_family_is_one_package_with_its_demo_recipe() -> None:
    """Adding a family: its package under engine/ (engine, importer, demo) and one registry
    line; its demo is built from models/<demo name>/."""
    assert [f.backend for f in families.FAMILIES] == [SA3_BACKEND, SAT_BACKEND]
    for family in families.FAMILIES:
        for part in ("engine", "importer", "demo"):
            importlib.import_module(f"{family.package}.{part}")
        assert family.package.startswith("stable_audio_bento.engine.")
        assert callable(family.engine.load) and callable(family.engine.read_info)
        assert callable(family.demos.import_demo)
        assert (RECIPES / family.demo / "recipe.json").is_file()
    assert families.demo_names() == ["demo-sa3", "demo"]
    # Entries older than the backend key are Stable Audio Open's.
    assert families.by_backend({}).backend == SAT_BACKEND
    assert families.by_backend({"backend": SA3_BACKEND}).backend == SA3_BACKEND


def test_every_status_answers_the_documented_envelope() -> None:
    for status, known in STATUSES.items():
        body = json.loads(envelope(status, "message", "field"))
        assert ErrorResponse.model_validate(body).model_dump() == body
        assert body["error"]["type"] == known.type == error_type(status)
        assert body["error"]["code"] == status
    assert error_type(418) == "BadRequestError" and error_type(504) == "InternalServerError"


def test_an_answer_is_the_routes_bytes() -> None:
    """What the native-API middleware sends for an error is byte for byte what the routes
    send (status, body, Retry-After)."""
    from stable_audio_bento.http import map_error

    error = QueueFullError("the job queue is full", retry_after=7)
    answer = answer_of(error)
    response = map_error(error)
    assert answer.status == response.status_code == 429
    assert answer.body() == bytes(response.body)
    assert answer.headers == {"Retry-After": "7"} and response.headers["retry-after"] == "7"
