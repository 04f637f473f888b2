"""``POST /v1/audio/generate`` with ``stream_format: "sse"``: progress, then the audio, as events.

vLLM-Omni refuses ``sse``; ours answers ``text/event-stream`` with, in order:

- ``event: progress`` ``{"step", "total"}`` for each sampling step;
- ``event: audio`` ``{"index", "data"}``: the encoded file (the ``response_format``) in base64
  chunks of at most ``CHUNK_BYTES`` raw bytes, ``index`` from 0;
- ``event: done`` ``{"media_type", "format", "bytes", "chunks", "seed", "sample_rate",
  "duration", "model"}``, after which the stream closes;
- or, if the generation fails once the stream has begun, ``event: error`` with the error
  envelope (``{"error": {"message", "type", "param", "code"}}``), and the stream closes.

The request is checked before the stream begins: a bad one is the usual 4xx, not a stream.
Concatenating the decoded chunks gives the same bytes as ``stream_format: "audio"``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ..errors import StableAudioError, new_error_id, public_message
from ..pipeline.generation import GeneratedAudio
from ..runtime import Runtime
from ..schemas import GenerationParams
from .errors import error_response, map_error
from .job_events import EVENT_STREAM, sse

log = logging.getLogger(__name__)

CHUNK_BYTES = 48 * 1024  # 64 KiB of base64 per event

SSE_DESCRIPTION = (
    'With `stream_format: "sse"`: `text/event-stream` of `progress` {"step", "total"} events, '
    'then `audio` {"index", "data": base64} chunks of the file, then `done` {"media_type", '
    '"format", "bytes", "chunks", "seed", "sample_rate", "duration", "model"}; a failure after '
    "the stream began is an `error` event carrying the error envelope."
)


def stream_generation(
    runtime: Runtime, params: GenerationParams, headers: dict[str, str]
) -> StreamingResponse:
    """Check ``params`` now (raises as the audio route does), then stream the generation."""
    runtime.generator.plan(params)
    return StreamingResponse(
        _events(runtime, params),
        media_type=EVENT_STREAM,
        headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(runtime: Runtime, params: GenerationParams) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    steps: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    def progress(step: int, total: int) -> None:
        loop.call_soon_threadsafe(steps.put_nowait, (step, total))

    task = asyncio.ensure_future(run_in_threadpool(runtime.generate, params, progress))
    while not task.done() or not steps.empty():
        getter = asyncio.ensure_future(steps.get())
        await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            step, total = getter.result()
            yield sse("progress", {"step": step, "total": total})
        else:
            getter.cancel()
    try:
        result: GeneratedAudio = task.result()
    except Exception as e:
        if isinstance(e, StableAudioError):
            answer = map_error(e)
        else:
            error_id = new_error_id()
            log.exception("Streamed generation failed (error id %s)", error_id)
            message = public_message(e, "The generation", error_id)
            answer = error_response(500, message, "InternalServerError")
        yield sse("error", json.loads(bytes(answer.body)))
        return
    data = result.body()
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    for index, chunk in enumerate(chunks):
        yield sse("audio", {"index": index, "data": base64.b64encode(chunk).decode()})
    done: dict[str, Any] = {
        "media_type": result.media_type,
        "format": result.extension,
        "bytes": len(data),
        "chunks": len(chunks),
        "seed": result.seed,
        "sample_rate": result.encoded.sample_rate,
        "duration": result.encoded.duration,
        "model": result.model,
    }
    yield sse("done", done)
