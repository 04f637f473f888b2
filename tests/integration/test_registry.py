"""The model registry with real loads of the demo: names, lazy loading, LRU eviction, /health.

Several names for one model are store entries that share the demo's files (a catalog built
here), so eviction can be watched without importing more models into the session's store.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from stable_audio_bento.engine import EngineRequest, StableAudioEngine, load_engine
from stable_audio_bento.engine.importer import KNOWN_REPOS
from stable_audio_bento.errors import GenerationError, ModelNotFoundError
from stable_audio_bento.pipeline.registry import LoadedModel, ModelRegistry
from stable_audio_bento.settings import Settings
from stable_audio_bento.store.catalog import ModelCatalog, ModelEntry, list_entries

DEMO = "stable-audio-demo"


class CountingLoader:
    """The registry's real loader, counting its calls (the registry takes its loader as input)."""

    def __init__(self) -> None:
        self.loaded: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, entry: ModelEntry, settings: Settings) -> StableAudioEngine:
        with self._lock:
            self.loaded.append(entry.name)
        return load_engine(entry, settings)


class RegistryFactory(Protocol):
    def __call__(
        self, settings: Settings, catalog: ModelCatalog | None = None
    ) -> ModelRegistry: ...


def settings_for(**overrides: Any) -> Settings:
    return Settings(device="cpu", max_batch_size=1, **overrides)


@pytest.fixture(scope="module")
def demo_entry(demo_tag: str) -> ModelEntry:
    (entry,) = [e for e in list_entries() if e.tag == demo_tag]
    return entry


def copies(entry: ModelEntry, *names: str) -> list[ModelEntry]:
    """Entries named ``names`` backed by the demo's files."""
    return [ModelEntry(n, "v1", entry.path, {**entry.metadata, "aliases": []}) for n in names]


@pytest.fixture
def loader() -> CountingLoader:
    return CountingLoader()


@pytest.fixture
def make_registry(loader: CountingLoader) -> Iterator[RegistryFactory]:
    """Registries with the counting loader, closed after the test."""
    made: list[ModelRegistry] = []

    def make(settings: Settings, catalog: ModelCatalog | None = None) -> ModelRegistry:
        registry = ModelRegistry(settings, catalog=catalog, loader=loader)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        registry.close()


# ------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "name", ["demo", "DEMO", " Demo ", DEMO, DEMO.upper(), "small-sfx", "SMALL-SFX", None, ""]
)
def test_store_names_aliases_and_default_resolve(demo_tag: str, name: str | None) -> None:
    registry = ModelRegistry(settings_for(default_model="demo", model_aliases="small-sfx=demo"))
    assert registry.resolve(name).tag == demo_tag


def test_full_tag_resolves(demo_tag: str) -> None:
    assert ModelRegistry(settings_for()).resolve(demo_tag).tag == demo_tag
    assert ModelRegistry(settings_for()).resolve(demo_tag.upper()).tag == demo_tag


def test_hub_repo_ids_resolve_case_insensitively(demo_entry: ModelEntry) -> None:
    # What a hub import writes: the repo id and the known short names are the entry's aliases.
    repo = "stabilityai/stable-audio-open-1.0"
    entry = ModelEntry(
        "stable-audio-open-1.0",
        "v1",
        demo_entry.path,
        {**demo_entry.metadata, "aliases": [repo, *KNOWN_REPOS[repo]]},
    )
    catalog = ModelCatalog([entry, *copies(demo_entry, "other")])
    for name in (repo, "StabilityAI/Stable-Audio-Open-1.0", "open-1.0", "stable-audio-open"):
        assert catalog.resolve(name) is entry
    assert catalog.aliases_of(entry) == [repo, *KNOWN_REPOS[repo]]


def test_server_aliases_never_take_over_a_models_own_name(demo_entry: ModelEntry) -> None:
    first, second = copies(demo_entry, "first", "second")
    catalog = ModelCatalog(
        [first, second], {"second": "first", "both": "SECOND", "dangling": "missing"}
    )
    assert catalog.resolve("second") is second
    assert catalog.resolve("both") is second
    with pytest.raises(ModelNotFoundError):
        catalog.resolve("dangling")
    assert catalog.aliases_of(second) == ["both"]
    assert catalog.names() == ["first", "second"]


def test_a_shared_alias_stays_with_the_entry_imported_first(demo_entry: ModelEntry) -> None:
    # Two imports of the demo: the second, under another name, also carries the alias "demo".
    meta = {**demo_entry.metadata, "aliases": ["demo"]}
    first = ModelEntry("zz-first", "v1", demo_entry.path, meta, created=100.0)
    later = ModelEntry("aa-later", "v1", demo_entry.path, meta, created=200.0)
    for order in ([first, later], [later, first]):
        catalog = ModelCatalog(order)
        assert catalog.resolve("demo") is first
        assert catalog.resolve("aa-later") is later
        assert catalog.aliases_of(later) == []


@pytest.mark.parametrize("name", ["x", "small-music", "stabilityai/stable-audio-3-medium"])
def test_unknown_model_is_not_found(
    make_registry: RegistryFactory, loader: CountingLoader, name: str
) -> None:
    registry = make_registry(settings_for())
    with pytest.raises(ModelNotFoundError) as raised:
        registry.resolve(name)
    # The vLLM-Omni document's message, word for word.
    assert str(raised.value) == f"The model `{name}` does not exist."
    assert raised.value.model == name
    with pytest.raises(ModelNotFoundError), registry.use(name):
        pass
    assert loader.loaded == []


def test_unknown_default_model_is_not_found() -> None:
    registry = ModelRegistry(settings_for(default_model="nothing-here"))
    with pytest.raises(
        ModelNotFoundError, match=re.escape("The model `nothing-here` does not exist.")
    ):
        registry.resolve(None)
    assert registry.describe()["default_model"] is None


# ----------------------------------------------------------------------- loading
def test_models_load_lazily_on_first_use(
    make_registry: RegistryFactory, loader: CountingLoader, demo_tag: str
) -> None:
    registry = make_registry(settings_for(preload_models=""))
    assert registry.loaded_names() == []
    assert registry.resolve("demo").tag == demo_tag  # resolving loads nothing
    assert loader.loaded == []
    with registry.use("demo") as loaded:
        assert loaded.in_use == 1
        assert loaded.engine.info.name == DEMO
        assert loaded.engine.nbytes() == sum(
            t.numel() * t.element_size()
            for t in [*loaded.engine.model.parameters(), *loaded.engine.model.buffers()]
        )
    assert loaded.in_use == 0
    with registry.use(DEMO) as again:
        assert again is loaded
    assert loader.loaded == [DEMO]
    assert registry.loaded_names() == [DEMO]


def test_concurrent_first_requests_load_once(
    make_registry: RegistryFactory, loader: CountingLoader, demo_tag: str
) -> None:
    registry = make_registry(settings_for())
    names = ["demo", "DEMO", DEMO, demo_tag, "demo", DEMO]
    start = threading.Barrier(len(names))
    borrowed: list[LoadedModel] = []
    errors: list[BaseException] = []
    release = threading.Event()

    def first_request(name: str) -> None:
        try:
            start.wait()
            with registry.use(name) as loaded:
                borrowed.append(loaded)
                release.wait(120)
        except BaseException as e:  # reported in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=first_request, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while len(borrowed) + len(errors) < len(names) and time.monotonic() < deadline:
        time.sleep(0.05)
    in_use = borrowed[0].in_use if borrowed else 0
    release.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert loader.loaded == [DEMO]
    assert len({id(b) for b in borrowed}) == 1
    assert in_use == len(names)  # every borrower holds the one model
    assert borrowed[0].in_use == 0


def test_preload_loads_the_default_model(
    make_registry: RegistryFactory, loader: CountingLoader
) -> None:
    registry = make_registry(settings_for(default_model="demo"))
    registry.preload()
    assert loader.loaded == [DEMO]
    assert registry.preloaded == [DEMO]
    assert registry.loaded_names() == [DEMO]


def test_empty_preload_list_loads_nothing(
    make_registry: RegistryFactory, loader: CountingLoader
) -> None:
    registry = make_registry(settings_for(preload_models=""))
    registry.preload()
    assert loader.loaded == []
    assert registry.preloaded == []


def test_preloading_an_unknown_model_fails(make_registry: RegistryFactory) -> None:
    registry = make_registry(settings_for(preload_models="demo,nope"))
    with pytest.raises(ModelNotFoundError, match=re.escape("The model `nope` does not exist.")):
        registry.preload()


# ---------------------------------------------------------------------- eviction
def test_least_recently_used_model_is_evicted(
    make_registry: RegistryFactory, loader: CountingLoader, demo_entry: ModelEntry
) -> None:
    catalog = ModelCatalog(copies(demo_entry, "a", "b", "c"))
    registry = make_registry(settings_for(max_loaded_models=2), catalog)
    engines = {}
    for name in ("a", "b", "a", "c"):
        with registry.use(name) as loaded:
            engines[name] = loaded.engine
    # "a" was used after "b", so "b" is the least recently used when "c" arrives.
    assert registry.loaded_names() == ["a", "c"]
    assert loader.loaded == ["a", "b", "c"]
    # The evicted engine dropped its weights and says so if it is called again.
    assert engines["b"].model is None
    with pytest.raises(GenerationError, match="unloaded"):
        engines["b"].generate(
            [EngineRequest("x", seed=1, seconds_total=0.1)], engines["b"].sampling(steps=2)
        )
    with registry.use("b"):
        pass
    assert loader.loaded == ["a", "b", "c", "b"]
    assert registry.loaded_names() == ["c", "b"]


def test_a_model_in_use_is_never_evicted(
    make_registry: RegistryFactory, loader: CountingLoader, demo_entry: ModelEntry
) -> None:
    catalog = ModelCatalog(copies(demo_entry, "a", "b", "c"))
    registry = make_registry(settings_for(max_loaded_models=1), catalog)
    with registry.use("a") as a, registry.use("b"):
        assert registry.loaded_names() == ["a", "b"]  # over the bound while both are busy
        assert a.engine.model is not None
    with registry.use("c"):
        pass
    assert registry.loaded_names() == ["c"]


def test_memory_budget_evicts_idle_models(
    make_registry: RegistryFactory, loader: CountingLoader, demo_entry: ModelEntry
) -> None:
    catalog = ModelCatalog(copies(demo_entry, "a", "b"))
    settings = settings_for(max_loaded_models=5, model_memory_budget_mb=1)
    registry = make_registry(settings, catalog)
    with registry.use("a") as a:
        assert a.engine.nbytes() > 2**20  # the demo is bigger than this budget
    with registry.use("b"):
        pass
    assert registry.loaded_names() == ["b"]


def test_close_unloads_everything(make_registry: RegistryFactory, demo_entry: ModelEntry) -> None:
    registry = make_registry(settings_for(), ModelCatalog(copies(demo_entry, "a")))
    with registry.use("a") as loaded:
        engine = loaded.engine
    registry.close()
    assert registry.loaded_names() == []
    assert engine.model is None


# ------------------------------------------------------------------------ health
def test_describe(make_registry: RegistryFactory, demo_tag: str) -> None:
    settings = settings_for(default_model="DEMO", model_aliases="small-sfx=demo,medium=demo")
    registry = make_registry(settings)
    before = registry.describe()
    assert before["default_model"] == DEMO
    assert before["preloaded_models"] == []
    assert before["loaded_models"] == []
    (demo,) = [m for m in before["available_models"] if m["name"] == DEMO]
    assert demo == {
        "name": DEMO,
        "tag": demo_tag,
        "aliases": ["demo", "small-sfx", "medium"],
        "source": "demo",
        "sample_rate": 44100,
        "channels": 2,
        "max_seconds": pytest.approx(47.554),
        "objective": "v",
        "steps": 8,
        "cfg_scale": 7.0,
        "sampler": "dpmpp-3m-sde",
    }
    registry.preload()
    after = registry.describe()
    assert after["preloaded_models"] == [DEMO]
    assert after["loaded_models"] == [DEMO]
