"""Abandoned requests leave the coalescer's queue (real demo engine, 2 steps)."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable

import pytest

from stable_audio_bento.engine import EngineRequest, StableAudioEngine
from stable_audio_bento.errors import RequestAbandonedError
from stable_audio_bento.pipeline.batching import Batcher
from stable_audio_bento.pipeline.cancellation import CancelToken, current_token
from tests.integration.test_batching import RESULT_TIMEOUT, STEPS
from tests.integration.test_batching import engine as engine  # the fixtures
from tests.integration.test_batching import make_batcher as make_batcher

A, B, C = (EngineRequest(p, seed=i, seconds_total=0.5) for i, p in enumerate("abc"))


def test_a_cancelled_request_gives_its_slot_to_the_next(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    sampling = engine.sampling(steps=STEPS)
    batcher = make_batcher(engine, max_batch_size=2, max_wait=1.0)
    fa, fb, fc = (batcher.submit(r, sampling) for r in (A, B, C))
    assert batcher.cancel(fb) is True
    with pytest.raises(RequestAbandonedError, match="The client went away"):
        fb.result(0)
    a, c = fa.result(RESULT_TIMEOUT), fc.result(RESULT_TIMEOUT)
    assert (a.batch_size, c.batch_size) == (2, 2)  # C took B's place in A's batch
    assert batcher.abandoned == 1
    assert batcher.cancel(fa) is False  # done: nothing to take out


def test_a_future_cancelled_by_its_owner_also_leaves(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    sampling = engine.sampling(steps=STEPS)
    batcher = make_batcher(engine, max_batch_size=2, max_wait=1.0)
    fa, fb, fc = (batcher.submit(r, sampling) for r in (A, B, C))
    assert fb.cancel()
    assert (fa.result(RESULT_TIMEOUT).batch_size, fc.result(RESULT_TIMEOUT).batch_size) == (2, 2)


def run_with_token(
    batcher: Batcher, token: CancelToken, request: EngineRequest
) -> tuple[threading.Thread, list[object]]:
    """``batcher.run`` in a thread whose context holds ``token`` (as the HTTP edge sets it;
    ``submit`` + ``result``, as the generation pipeline calls it, is the same path)."""
    outcome: list[object] = []
    sampling = batcher.engine.info.sampling(STEPS, None, None, max_steps=500)

    def work() -> None:
        current_token.set(token)
        try:
            outcome.append(batcher.run(request, sampling))
        except Exception as e:
            outcome.append(e)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(work,))
    thread.start()
    return thread, outcome


def test_run_is_abandoned_when_its_token_is_cancelled_while_queued(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    batcher = make_batcher(engine, max_batch_size=8, max_wait=30.0)  # it would wait 30 s
    token = CancelToken()
    thread, outcome = run_with_token(batcher, token, A)
    time.sleep(0.3)
    started = time.monotonic()
    token.cancel()
    thread.join(5)
    assert time.monotonic() - started < 1.0
    (error,) = outcome
    assert isinstance(error, RequestAbandonedError)
    assert str(error) == "The client went away before its request ran."
    assert batcher.abandoned == 1


def test_a_token_cancelled_once_the_batch_runs_changes_nothing(
    engine: StableAudioEngine, make_batcher: Callable[..., Batcher]
) -> None:
    batcher = make_batcher(engine, max_batch_size=1, max_wait=0.0)
    token = CancelToken()
    thread, outcome = run_with_token(batcher, token, A)
    thread.join(RESULT_TIMEOUT)
    token.cancel()  # after the fact: nothing to take out
    (result,) = outcome
    assert getattr(result, "batch_size", None) == 1
    assert batcher.abandoned == 0
