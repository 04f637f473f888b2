"""Audio-in jobs: validated and stored before the 202, run by any worker from the stored source.

A job's record says its mode and its source (``Job.source``: key, file name, size, length,
SHA-256); ``Job.audio_in`` holds the mode's own fields and ``Job.params`` the generation fields,
so a restarted server, or another replica, runs the job from the record and the stored file.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .audio_to_audio import AudioInParams
from .errors import IdempotencyKeyReusedError, StableAudioError
from .jobs.models import Job, JobOutput
from .jobs.queue_control import JobOptions

if TYPE_CHECKING:
    from .runtime import Runtime


class JobCanceledError(StableAudioError):
    """Raised inside an audio-in job run once its cancel was requested."""

    public = True


def submit_audio_job(
    runtime: Runtime,
    spec: AudioInParams,
    data: bytes,
    filename: str | None = None,
    idempotency_key: str | None = None,
    owner: str | None = None,
    options: JobOptions | None = None,
) -> Job:
    """Validate and decode now (bad input never queues), store the source, queue the job.

    ``owner``: the hash of the API key that sent it (``auth.owner_of``); only it sees the job.
    """
    plan = runtime.audio_in.plan(spec, data)
    fixed = dataclasses.replace(spec, params=dataclasses.replace(spec.params, seed=plan.seed))
    digest = hashlib.sha256(data).hexdigest()
    new = Job(
        model=plan.base.entry.name,
        response_format=spec.params.response_format,
        seed=plan.seed,
        seeds=[plan.seed],
        params=fixed.params.to_record(),
        mode=spec.mode,
        output_count=1,
        progress_total=plan.total_steps,
        idempotency_key=idempotency_key,
        owner=owner,
        audio_in=fixed.to_record(),
    )
    key = runtime.sources.save(new.id, data)
    new.source = {
        "key": key,
        "filename": filename,
        "bytes": len(data),
        "sha256": digest,
        "seconds": round(plan.source.seconds, 6),
        "sample_rate": plan.source.sample_rate,
    }
    try:
        job = runtime.jobs.create(options.apply(new) if options else new)
    except BaseException:
        runtime.sources.delete(key)
        raise
    if job.id != new.id:  # an idempotent retry: the first try's job (and source) stand
        runtime.sources.delete(key)
        same_source = (job.source or {}).get("sha256") == digest
        sent = fixed if spec.params.seed not in (None, -1) else _with_seed(spec, job.seed)
        if not same_source or sent.to_record() != job.audio_in:
            raise IdempotencyKeyReusedError(idempotency_key or "", job.id)
    return job


def _with_seed(spec: AudioInParams, seed: int | None) -> AudioInParams:
    return dataclasses.replace(spec, params=dataclasses.replace(spec.params, seed=seed))


def run_audio_job(
    runtime: Runtime,
    job: Job,
    progress: Callable[[int, int], None],
    is_canceled: Callable[[], bool],
) -> JobOutput:
    """The worker's entry point for audio-in jobs: the stored source through the pipeline."""
    if is_canceled():
        raise JobCanceledError("canceled before it started")
    spec = AudioInParams.from_record(job.audio_in)
    data = runtime.sources.load(str((job.source or {})["key"]))
    result = runtime.audio_in.generate(spec, data, progress)
    if is_canceled():
        raise JobCanceledError("canceled while running")
    return JobOutput(
        data=result.encoded.data,
        format=result.encoded.format.name,
        seed=result.seed,
        sample_rate=result.encoded.sample_rate,
        duration=result.encoded.duration,
    )


def source_view(job: Job) -> dict[str, Any] | None:
    """What a job record shows of its source (not where the server keeps it)."""
    if not job.source:
        return None
    return {k: job.source.get(k) for k in ("filename", "bytes", "sha256", "seconds")}
