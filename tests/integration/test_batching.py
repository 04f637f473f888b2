"""Request coalescing on the real demo engine: what a request gets never depends on its batch.

Requests are queued with ``Batcher.submit`` (it returns at once), so the tests decide exactly
what can be coalesced; a generous ``max_wait`` keeps the batches the same on a busy machine.
Generations run at 2 steps; each still denoises the demo's whole 47.55 s window.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from stable_audio_bento.audio import FloatAudio
from stable_audio_bento.engine import (
    EngineRequest,
    LoadOptions,
    ProgressCallback,
    SamplingParams,
    StableAudioEngine,
)
from stable_audio_bento.errors import GenerationError
from stable_audio_bento.pipeline.batching import BatchedAudio, Batcher
from stable_audio_bento.store.catalog import ModelCatalog

STEPS = 2
SAMPLE_RATE = 44100
SAME = 1e-5  # relative RMS difference of float rounding (a batch position moves ~3e-7)
WAIT = 1.0  # max_wait long enough that every request queued at once lands in one batch
RESULT_TIMEOUT = 300

# Different prompts, negative prompts (and none), lengths, starts and seeds, two sharing a seed.
MIXED = [
    EngineRequest("rain on a tin roof", seed=1, seconds_total=0.5),
    EngineRequest("a dog barking", seed=2, seconds_total=1.25, seconds_start=2.0),
    EngineRequest("rain on a tin roof", seed=3, seconds_total=0.3, negative_prompt="noise"),
    EngineRequest("piano chord", seed=1, seconds_total=0.8, negative_prompt="drums and bass"),
]


def relative_change(a: FloatAudio, b: FloatAudio) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(a**2)))


def results(futures: Sequence[Future[BatchedAudio]]) -> list[BatchedAudio]:
    return [f.result(timeout=RESULT_TIMEOUT) for f in futures]


@pytest.fixture(scope="module")
def engine(demo_tag: str) -> StableAudioEngine:
    entry = ModelCatalog.from_store().resolve(demo_tag)
    return StableAudioEngine.load(entry.path, entry.name, entry.metadata, LoadOptions(device="cpu"))


@pytest.fixture(scope="module")
def rf_engine(demo_tag: str, tmp_path_factory: pytest.TempPathFactory) -> StableAudioEngine:
    """The demo as a rectified-flow model (``rf_denoiser``, ping-pong, like open-small)."""
    entry = ModelCatalog.from_store().resolve(demo_tag)
    files = tmp_path_factory.mktemp("rf") / "entry"
    shutil.copytree(entry.path, files, ignore=shutil.ignore_patterns("model.yaml"))
    config = json.loads((files / "model_config.json").read_text())
    config["model"]["diffusion"]["diffusion_objective"] = "rf_denoiser"
    (files / "model_config.json").write_text(json.dumps(config))
    return StableAudioEngine.load(files, "demo-rf", {}, LoadOptions(device="cpu"))


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., Batcher]]:
    made: list[Batcher] = []

    def make(engine: StableAudioEngine, **kwargs: Any) -> Batcher:
        batcher = Batcher(engine, **kwargs)
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close()


def alone(
    engine: StableAudioEngine, request: EngineRequest, sampling: SamplingParams
) -> FloatAudio:
    return engine.generate([request], sampling)[0]


# ------------------------------------------------------------------ determinism
@pytest.mark.parametrize("sampler", ["dpmpp-3m-sde", "k-dpmpp-2s-ancestral", "dpmpp-2m"])
def test_a_request_gets_its_own_audio_inside_a_mixed_batch(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher], sampler: str
) -> None:
    sampling = engine.sampling(steps=STEPS, sampler=sampler)
    expected = [alone(engine, r, sampling) for r in MIXED]
    batcher = make_batcher(engine, max_batch_size=8, max_wait=WAIT)
    # The reverse order, so no request keeps its batch position from the runs alone.
    got = results([batcher.submit(r, sampling) for r in reversed(MIXED)])[::-1]
    assert [g.batch_size for g in got] == [len(MIXED)] * len(MIXED)
    for request, audio, result in zip(MIXED, expected, got, strict=True):
        assert result.audio.shape == (2, round(request.seconds_total * SAMPLE_RATE))
        assert relative_change(audio, result.audio) < SAME, request
    # Same seed, different prompt: different audio (each item really has its own conditioning).
    assert relative_change(got[0].audio[:, :13230], got[3].audio[:, :13230]) > 1e-3


def test_concurrent_callers_are_coalesced_and_keep_their_audio(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    sampling = engine.sampling(steps=STEPS)
    expected = [alone(engine, r, sampling) for r in MIXED]
    batcher = make_batcher(engine, max_batch_size=8, max_wait=WAIT)
    got: dict[int, BatchedAudio] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(MIXED))

    def call(i: int) -> None:
        try:
            start.wait()
            got[i] = batcher.run(MIXED[i], sampling)
        except BaseException as e:  # reported in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(MIXED))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RESULT_TIMEOUT)
    assert not errors, errors
    assert max(r.batch_size for r in got.values()) > 1
    for i, audio in enumerate(expected):
        assert relative_change(audio, got[i].audio) < SAME, MIXED[i]


def test_ping_pong_noise_is_per_request_too(
    rf_engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    sampling = rf_engine.sampling(steps=STEPS)
    assert sampling.sampler == "pingpong"
    expected = [alone(rf_engine, r, sampling) for r in MIXED[:3]]
    batcher = make_batcher(rf_engine, max_batch_size=8, max_wait=WAIT)
    got = results([batcher.submit(r, sampling) for r in MIXED[:3]])
    assert [g.batch_size for g in got] == [3, 3, 3]
    for request, audio, result in zip(MIXED, expected, got, strict=False):
        assert relative_change(audio, result.audio) < SAME, request


# ------------------------------------------------------------------- batch shape
def test_batch_size_one_turns_coalescing_off(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    sampling = engine.sampling(steps=STEPS)
    batcher = make_batcher(engine, max_batch_size=1, max_wait=30.0)
    started = time.monotonic()
    got = results([batcher.submit(r, sampling) for r in MIXED[:3]])
    assert [g.batch_size for g in got] == [1, 1, 1]
    assert engine.stats.last_batch_sizes[-3:] == [1, 1, 1]
    # A batch of one is full at once: nobody waits for company that cannot join.
    assert time.monotonic() - started < 30.0


def test_a_lone_request_waits_max_wait_for_company(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    sampling = engine.sampling(steps=STEPS)
    batcher = make_batcher(engine, max_batch_size=8, max_wait=0.6)
    started = time.monotonic()
    first = batcher.submit(MIXED[0], sampling)
    time.sleep(0.2)
    second = batcher.submit(MIXED[1], sampling)  # within the first one's wait: same batch
    a, b = results([first, second])
    assert (a.batch_size, b.batch_size) == (2, 2)
    assert time.monotonic() - started >= 0.6
    late = batcher.run(MIXED[2], sampling)  # after that batch: a batch of its own
    assert late.batch_size == 1


def test_a_full_batch_does_not_wait(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    sampling = engine.sampling(steps=STEPS)
    batcher = make_batcher(engine, max_batch_size=2, max_wait=60.0)
    started = time.monotonic()
    got = results([batcher.submit(r, sampling) for r in MIXED[:2]])
    assert [g.batch_size for g in got] == [2, 2]
    assert time.monotonic() - started < 60.0


def test_the_memory_budget_splits_batches(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    # Every item costs the model's whole window; 2.5 windows hold two items.
    window = engine.info.window_seconds
    sampling = engine.sampling(steps=STEPS)
    batcher = make_batcher(engine, max_batch_size=8, max_wait=WAIT, budget_seconds=2.5 * window)
    requests = [dataclasses.replace(MIXED[0], seed=s) for s in range(5)]
    assert batcher.max_items(requests[0]) == 2
    got = results([batcher.submit(r, sampling) for r in requests])
    assert [g.batch_size for g in got] == [2, 2, 2, 2, 1]
    assert engine.stats.last_batch_sizes[-3:] == [2, 2, 1]


def test_only_requests_with_the_same_sampling_share_a_batch(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    two, three = engine.sampling(steps=2), engine.sampling(steps=3)
    batcher = make_batcher(engine, max_batch_size=8, max_wait=WAIT)
    futures = [
        batcher.submit(MIXED[0], two),
        batcher.submit(MIXED[1], three),
        batcher.submit(MIXED[2], two),
        batcher.submit(MIXED[3], three),
    ]
    got = results(futures)
    assert [g.batch_size for g in got] == [2, 2, 2, 2]
    assert relative_change(alone(engine, MIXED[1], three), got[1].audio) < SAME


# ------------------------------------------------------------- progress, errors
def test_progress_fans_out_to_every_request_and_a_failing_sink_harms_nobody(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    sampling = engine.sampling(steps=STEPS)
    batcher = make_batcher(engine, max_batch_size=8, max_wait=WAIT)
    seen: list[list[tuple[int, int]]] = [[], [], []]

    def broken(step: int, total: int) -> None:
        raise RuntimeError("a progress sink that fails")

    sinks: list[ProgressCallback | None] = [
        lambda s, t: seen[0].append((s, t)),
        broken,
        lambda s, t: seen[2].append((s, t)),
    ]
    futures = [batcher.submit(MIXED[i], sampling, sinks[i]) for i in range(3)]
    futures.append(batcher.submit(MIXED[3], sampling))  # no progress wanted
    got = results(futures)
    assert [g.batch_size for g in got] == [4, 4, 4, 4]
    assert seen[0] == seen[2] == [(1, STEPS), (2, STEPS)]


class ExplodingEngine(StableAudioEngine):
    """The demo engine, failing every batch that holds a request for ``explode``."""

    def generate(
        self,
        requests: Sequence[EngineRequest],
        sampling: SamplingParams,
        progress: ProgressCallback | None = None,
    ) -> list[FloatAudio]:
        if any(r.prompt == "explode" for r in requests):
            raise GenerationError("the model produced non-finite samples")
        return super().generate(requests, sampling, progress)


def test_a_failing_request_does_not_fail_the_others(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    exploding = ExplodingEngine(engine.model, engine.info, engine.device, engine.dtype)
    sampling = engine.sampling(steps=STEPS)
    batcher = make_batcher(exploding, max_batch_size=8, max_wait=WAIT)
    bad = dataclasses.replace(MIXED[1], prompt="explode")
    futures = [batcher.submit(r, sampling) for r in (MIXED[0], bad, MIXED[2])]
    with pytest.raises(GenerationError, match="non-finite"):
        futures[1].result(timeout=RESULT_TIMEOUT)
    first, third = futures[0].result(RESULT_TIMEOUT), futures[2].result(RESULT_TIMEOUT)
    # The failed batch of three was run again request by request.
    assert (first.batch_size, third.batch_size) == (1, 1)
    assert exploding.stats.last_batch_sizes[-2:] == [1, 1]
    assert relative_change(alone(engine, MIXED[0], sampling), first.audio) < SAME
    assert relative_change(alone(engine, MIXED[2], sampling), third.audio) < SAME


def test_close_runs_what_is_queued_without_waiting(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    batcher = make_batcher(engine, max_batch_size=8, max_wait=600.0)
    future = batcher.submit(MIXED[0], engine.sampling(steps=STEPS))
    started = time.monotonic()
    batcher.close()
    assert future.result(timeout=60).batch_size == 1
    assert time.monotonic() - started < 60
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(MIXED[0], engine.sampling(steps=STEPS))
