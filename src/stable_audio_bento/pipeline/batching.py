"""Request coalescing: concurrent requests that can share a diffusion batch run as one call.

Requests are compatible when they share the engine's batch-wide settings (``SamplingParams``),
the model's ``batch_key`` (for variable-length models, the latent length) and what the engine
needs shared of their LoRAs (``EngineLoras.batch_key``: nothing for sets applied per item, the
set itself for merged ones); each keeps its own prompt, negative prompt, length, seed and
LoRAs, and gets exactly the audio it would get alone. A
batch closes when it reaches ``max_batch_size``, when its summed denoised seconds
(``ModelInfo.cost_seconds``) would pass the memory budget, or ``max_wait`` after its first
request. While the engine runs one batch, new requests queue, and the next batch takes them all
at once.

A failing batch of several requests is run again one request at a time, so a request that
breaks the engine (or produces unusable audio) fails alone and the others still get their audio.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..audio import FloatAudio
from ..engine import AudioEngine, EngineRequest, ProgressCallback, SamplingParams
from ..errors import RequestAbandonedError
from .cancellation import current_token

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchedAudio:
    """One request's audio and the size of the engine batch it was generated in."""

    audio: FloatAudio
    batch_size: int


@dataclass
class _Pending:
    request: EngineRequest
    progress: ProgressCallback | None
    future: Future[BatchedAudio] = field(default_factory=Future)


@dataclass
class _Group:
    sampling: SamplingParams
    opened: float
    max_items: int
    items: list[_Pending] = field(default_factory=list)


GroupKey = tuple[SamplingParams, Hashable, Hashable]


class Batcher:
    """Coalesces requests for one engine. Thread-safe; one background thread per engine."""

    def __init__(
        self,
        engine: AudioEngine,
        max_batch_size: int = 8,
        max_wait: float = 0.005,
        budget_seconds: float = float("inf"),
    ) -> None:
        self.engine = engine
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait = max_wait
        self.budget_seconds = budget_seconds
        self._groups: dict[GroupKey, _Group] = {}
        self.abandoned = 0  # requests taken out of the queue because their client left
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(
            target=self._loop, name=f"batcher-{engine.info.name}", daemon=True
        )
        self._thread.start()

    def submit(
        self,
        request: EngineRequest,
        sampling: SamplingParams,
        progress: ProgressCallback | None = None,
    ) -> Future[BatchedAudio]:
        """Queue one request; the future resolves to its audio or raises its error.

        When the caller's context holds a ``CancelToken`` (``cancellation``) that is cancelled
        while the request still waits for a batch, it leaves the queue and the future raises
        RequestAbandonedError.
        """
        info = self.engine.info
        info.check_request(request)
        pending = _Pending(request, progress)
        key = (sampling, info.batch_key(request), self.engine.loras.batch_key(request.loras))
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(
                    sampling, time.monotonic(), self.max_items(request)
                )
            group.items.append(pending)
            self._cond.notify_all()
        token = current_token.get()
        if token is not None:
            # The HTTP edge's token (its client has gone): leave the queue if still in it.
            forget = token.on_cancel(lambda: self.cancel(pending.future))
            pending.future.add_done_callback(lambda _: forget())
        return pending.future

    def run(
        self,
        request: EngineRequest,
        sampling: SamplingParams,
        progress: ProgressCallback | None = None,
    ) -> BatchedAudio:
        """Generate one request (coalesced with whatever is compatible); wait for it."""
        return self.submit(request, sampling, progress).result()

    def cancel(self, future: Future[BatchedAudio]) -> bool:
        """Take a queued request out of its batch; its future raises RequestAbandonedError.

        False once it has started (it finishes with its batch) or is done.
        """
        with self._cond:
            if not self._remove(future):
                return False
            self.abandoned += 1
        future.set_exception(RequestAbandonedError("The client went away before its request ran."))
        return True

    def _remove(self, future: Future[BatchedAudio]) -> bool:
        """Drop the queued request of ``future`` (lock held); False if it is not queued."""
        for key, group in self._groups.items():
            for pending in group.items:
                if pending.future is future:
                    group.items.remove(pending)
                    if not group.items:
                        del self._groups[key]
                    return True
        return False

    def generate(
        self,
        request: EngineRequest,
        sampling: SamplingParams,
        progress: ProgressCallback | None = None,
    ) -> FloatAudio:
        """``run``, audio only."""
        return self.run(request, sampling, progress).audio

    def max_items(self, request: EngineRequest) -> int:
        """How many requests like this one fit in one batch (count and memory budget)."""
        cost = self.engine.info.cost_seconds(request)
        fits = self.budget_seconds // cost if self.budget_seconds < float("inf") else float("inf")
        return int(max(1, min(self.max_batch_size, fits)))

    def close(self) -> None:
        """Stop taking requests; those already queued still run (without waiting)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ worker
    def _take_ready(self) -> tuple[SamplingParams, list[_Pending]] | None:
        """Pop the oldest group that is full or has waited long enough (lock held)."""
        now = time.monotonic()
        for key, group in sorted(self._groups.items(), key=lambda kv: kv[1].opened):
            # A future cancelled by its owner (not through ``cancel``) gives up its slot here.
            group.items = [p for p in group.items if not p.future.cancelled()]
            if not group.items:
                del self._groups[key]
                continue
            waited = now - group.opened >= self.max_wait
            if self._closed or waited or len(group.items) >= group.max_items:
                batch, rest = group.items[: group.max_items], group.items[group.max_items :]
                if rest:
                    group.items = rest  # they have waited already: next in line, no new wait
                else:
                    del self._groups[key]
                return group.sampling, batch
        return None

    def _loop(self) -> None:
        while True:
            with self._cond:
                ready = self._take_ready()
                while ready is None:
                    if self._closed:
                        return
                    if self._groups:
                        oldest = min(g.opened for g in self._groups.values())
                        timeout = max(0.0, oldest + self.max_wait - time.monotonic())
                        self._cond.wait(timeout)
                    else:
                        self._cond.wait()
                    ready = self._take_ready()
            self._run(*ready)

    def _run(self, sampling: SamplingParams, batch: list[_Pending]) -> None:
        live = [p for p in batch if p.future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.perf_counter()
        try:
            outputs = self.engine.generate(
                [p.request for p in live], sampling, _fan_out([p.progress for p in live])
            )
        except Exception as e:
            if len(live) == 1:
                live[0].future.set_exception(e)
                return
            log.warning("a batch of %d failed (%s); running its requests one by one", len(live), e)
            for p in live:
                self._run_alone(sampling, p)
            return
        except BaseException as e:  # interpreter shutdown: no caller may wait forever
            for p in live:
                p.future.set_exception(e)
            raise
        log.info(
            "generated a batch of %d (%d steps, %s) in %.2f s",
            len(live),
            sampling.steps,
            sampling.sampler,
            time.perf_counter() - started,
        )
        for p, audio in zip(live, outputs, strict=True):
            p.future.set_result(BatchedAudio(audio, len(live)))

    def _run_alone(self, sampling: SamplingParams, pending: _Pending) -> None:
        progress = _fan_out([pending.progress])
        try:
            (audio,) = self.engine.generate([pending.request], sampling, progress)
        except Exception as e:
            pending.future.set_exception(e)
        else:
            pending.future.set_result(BatchedAudio(audio, 1))


def _fan_out(callbacks: list[ProgressCallback | None]) -> ProgressCallback | None:
    """One progress callback for a batch that reports to each request's own callback."""
    sinks = [c for c in callbacks if c is not None]
    if not sinks:
        return None

    def fan_out(step: int, total: int) -> None:
        for sink in sinks:
            try:
                sink(step, total)
            except Exception:  # a progress sink must never fail the batch
                log.exception("progress callback failed")

    return fan_out
