"""What the last release stored still reads the same and runs: model store entries, job records.

``tests/data/last_release_formats.json`` was written by the last release's own code (its demo
entries' metadata, a text-to-audio and an audio-in job record, ``PARAMS_VERSION``). Nothing
here may change with a refactor: a server upgraded in place keeps its store and its queue.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stable_audio_bento.engine import EngineRequest, model_info
from stable_audio_bento.engine.info import SAT_BACKEND
from stable_audio_bento.engine.sa3 import SA3_BACKEND
from stable_audio_bento.jobs.records import Job
from stable_audio_bento.jobs.runner import JobRunner
from stable_audio_bento.pipeline.audio_to_audio import AudioInParams
from stable_audio_bento.pipeline.registry import ModelRegistry
from stable_audio_bento.schemas import PARAMS_VERSION, GenerationParams
from stable_audio_bento.settings import Settings
from stable_audio_bento.store.catalog import FAMILY_LABEL, ModelCatalog, ModelEntry, list_entries
from stable_audio_bento.store.entries import content_hash

LAST = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "last_release_formats.json").read_text()
)


def test_the_stored_strings_are_the_last_releases() -> None:
    assert PARAMS_VERSION == LAST["params_version"] == 2
    assert (SAT_BACKEND, SA3_BACKEND) == ("stable-audio-tools", "diffusers-sa3")
    assert LAST["entries"]["stable-audio-3-demo"]["backend"] == SA3_BACKEND
    assert "backend" not in LAST["entries"]["stable-audio-demo"]  # entries from before the key
    assert FAMILY_LABEL == ("family", "stable-audio")


def _jobs_as_this_release_writes_them() -> dict[str, Job]:
    """The same jobs the last release's code wrote into the data file, made by this code."""
    params = GenerationParams(
        prompt="rain on a tin roof",
        model="demo",
        seconds_total=1.5,
        steps=2,
        seed=7,
        cfg_scale=5.0,
        sampler_kwargs=(("sigma_max", 80.0),),
        api="stable-audio-api",
    )
    text = Job(
        id="0" * 32,
        model="stable-audio-demo",
        seed=7,
        seeds=[7],
        params=params.to_record(),
        progress_total=2,
        created_at=1700000000.0,
        idempotency_key="k-1",
        owner="o" * 16,
    )
    spec = AudioInParams(
        mode="inpainting",
        params=GenerationParams(prompt="birds", model="demo", seconds_total=2.0, steps=2, seed=3),
        init_noise_level=0.9,
        regions=((0.5, 1.0),),
    )
    audio = Job(
        id="1" * 32,
        model="stable-audio-demo",
        seed=3,
        seeds=[3],
        params=spec.params.to_record(),
        mode="inpainting",
        progress_total=2,
        created_at=1700000001.0,
        audio_in=spec.to_record(),
        source={
            "key": "sources/" + "1" * 32,
            "filename": "a.wav",
            "bytes": 10,
            "sha256": "ab" * 32,
            "seconds": 2.0,
            "sample_rate": 44100,
        },
    )
    return {"text": text, "audio_in": audio}


# What this release adds to a record, each at a default that means "as before": queue control
# and webhooks on the job; the output level (None: the family's own) and the LoRAs (none) in
# the parameters.
ADDED_JOB_FIELDS = {
    "priority": 0,
    "max_queue_seconds": None,
    "queue_deadline": None,
    "webhook": None,
    "webhook_events": [],
    "webhook_progress_at": None,
    "deliveries": [],
}
ADDED_PARAMS: dict[str, Any] = {"normalize": None, "loras": []}


def _as_last_release(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` less this release's additions, which must be at their defaults."""
    record = dict(record)
    for name, default in ADDED_JOB_FIELDS.items():
        assert record.pop(name) == default, name
    parts = [record] + ([record["audio_in"]] if record.get("audio_in") else [])
    for part in parts:
        part["params"] = dict(part["params"])
        for name, default in ADDED_PARAMS.items():
            assert part["params"].pop(name, default) == default, name
    return record


@pytest.mark.parametrize("kind", ["text", "audio_in"])
def test_job_records_are_written_and_read_as_the_last_release_did(kind: str) -> None:
    stored: dict[str, Any] = LAST["jobs"][kind]
    made = _jobs_as_this_release_writes_them()[kind]
    assert _as_last_release(json.loads(made.model_dump_json())) == stored
    read = Job.model_validate_json(json.dumps(stored))
    assert _as_last_release(json.loads(read.model_dump_json())) == stored
    # And it runs as it was queued: the same generation parameters.
    assert JobRunner.job_params(read) == JobRunner.job_params(made)
    if kind == "audio_in":
        spec = AudioInParams.from_record(read.audio_in)
        again = spec.to_record()
        again["params"] = {k: v for k, v in again["params"].items() if k not in ADDED_PARAMS}
        assert again == stored["audio_in"]
        assert spec.regions == ((0.5, 1.0),)


@pytest.mark.parametrize("name", ["stable-audio-demo", "stable-audio-3-demo"])
def test_the_demo_entries_are_made_as_the_last_release_made_them(
    name: str, demo_tag: str, demo_sa3_tag: str
) -> None:
    """Metadata key for key, and the same files (the content digest)."""
    (entry,) = [e for e in list_entries() if e.name == name]
    assert entry.metadata == LAST["entries"][name]


@pytest.mark.parametrize("name", ["stable-audio-demo", "stable-audio-3-demo"])
def test_an_entry_of_the_last_release_loads_and_runs(
    name: str, demo_tag: str, demo_sa3_tag: str, tmp_path: Path
) -> None:
    """An entry with the last release's metadata and files, through this release's catalog,
    registry and engines: it is found, described, loaded and generates audio."""
    (current,) = [e for e in list_entries() if e.name == name]
    files = tmp_path / "entry"
    # The entry's files without BentoML's own record of it (model.yaml).
    shutil.copytree(current.path, files, ignore=shutil.ignore_patterns("model.yaml"))
    metadata = dict(LAST["entries"][name])
    assert content_hash(files) == metadata["content_sha256"]  # the last release's files
    entry = ModelEntry(name=name, version="lastrelease", path=files, metadata=metadata)
    catalog = ModelCatalog([entry])
    assert catalog.resolve(metadata["aliases"][0]) is entry
    info = model_info(entry)
    assert info.backend == metadata.get("backend", SAT_BACKEND)
    registry = ModelRegistry(Settings(device="cpu", preload_models=[]), catalog)
    try:
        with registry.use(name) as loaded:
            engine = loaded.engine
            sampling = engine.info.sampling(steps=2)
            (audio,) = engine.generate([EngineRequest("rain", seed=1, seconds_total=0.5)], sampling)
    finally:
        registry.close()
    assert audio.shape == (info.channels, round(0.5 * info.sample_rate))
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
