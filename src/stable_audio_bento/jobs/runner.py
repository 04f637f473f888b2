"""Both job kinds, submitted and run through the same pipeline as the sync APIs.

A text-to-audio job keeps its normalised parameters (``GenerationParams.to_record``); an audio-in
job also says its mode and its source (``Job.source``: key, file name, size, length, SHA-256),
with the mode's own fields in ``Job.audio_in``. Either is validated before it is queued (bad
requests never queue) and runs from its record alone, so a restarted server, or another
replica, runs it the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

from ..archive import ZIP_EXTENSION
from ..errors import IdempotencyKeyReusedError, JobCanceledError
from ..pipeline.audio_to_audio import AUDIO_IN_MODES, AudioInParams, AudioToAudio
from ..pipeline.generation import AudioGenerator, Plan
from ..schemas import GenerationParams
from .queue_control import JobOptions
from .records import Job, JobOutput
from .sources import SourceStore
from .store import JobStore


class JobRunner:
    """Submits jobs to the store and runs them for the worker (``run`` is its ``RunJob``)."""

    def __init__(
        self,
        generator: AudioGenerator,
        audio_in: AudioToAudio,
        jobs: JobStore,
        sources: SourceStore,
    ) -> None:
        self.generator = generator
        self.audio_in = audio_in
        self.jobs = jobs
        self.sources = sources

    # ------------------------------------------------------------------ submit
    def submit(
        self,
        params: GenerationParams,
        idempotency_key: str | None = None,
        owner: str | None = None,
        options: JobOptions | None = None,
    ) -> Job:
        """Validate now (bad requests never queue), fix the seeds, queue the job.

        The job keeps the normalised parameters (``GenerationParams.to_record``), so a job
        runs the same whichever API queued it and whichever release runs it. A reused
        ``idempotency_key`` returns its job when the parameters are the same (a retry), and
        raises IdempotencyKeyReusedError when they differ.
        """
        plan: Plan = self.generator.plan(params)
        fixed = dataclasses.replace(params, seed=plan.seed)
        new = Job(
            model=plan.entry.name,
            response_format=params.response_format,
            seed=plan.seed,
            seeds=plan.seeds,
            params=fixed.to_record(),
            mode=plan.request.mode,
            output_count=len(plan.requests),
            progress_total=plan.sampling.steps,
            idempotency_key=idempotency_key,
            owner=owner,
        )
        job = self.jobs.create(options.apply(new) if options else new)
        if idempotency_key is not None and job.id != new.id:
            # A retry of a random-seed request cannot know the seed its first try drew.
            sent = (
                fixed
                if params.seed not in (None, -1)
                else dataclasses.replace(params, seed=job.seed)
            )
            if sent.to_record() != job.params:
                raise IdempotencyKeyReusedError(idempotency_key, job.id)
        return job

    def submit_audio(
        self,
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
        plan = self.audio_in.plan(spec, data)
        fixed = _with_seed(spec, plan.seed)
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
        key = self.sources.save(new.id, data)
        new.source = {
            "key": key,
            "filename": filename,
            "bytes": len(data),
            "sha256": digest,
            "seconds": round(plan.source.seconds, 6),
            "sample_rate": plan.source.sample_rate,
        }
        try:
            job = self.jobs.create(options.apply(new) if options else new)
        except BaseException:
            self.sources.delete(key)
            raise
        if job.id != new.id:  # an idempotent retry: the first try's job (and source) stand
            self.sources.delete(key)
            same_source = (job.source or {}).get("sha256") == digest
            sent = fixed if spec.params.seed not in (None, -1) else _with_seed(spec, job.seed)
            if not same_source or sent.to_record() != job.audio_in:
                raise IdempotencyKeyReusedError(idempotency_key or "", job.id)
        return job

    # --------------------------------------------------------------------- run
    @staticmethod
    def job_params(job: Job) -> GenerationParams:
        """What a job runs: its parameters record, or an older release's request body."""
        return GenerationParams.from_record(job.params or job.request)

    def run(
        self,
        job: Job,
        progress: Callable[[int, int], None],
        is_canceled: Callable[[], bool],
    ) -> JobOutput:
        """The worker's entry point for both kinds: the stored record through the pipeline.

        A coalesced batch is shared with other requests, so a cancel takes effect when the
        batch ends; the audio is then discarded.
        """
        if is_canceled():
            raise JobCanceledError("canceled before it started")
        if job.mode in AUDIO_IN_MODES:
            output = self._run_audio_in(job, progress)
        else:
            output = self._run_text(job, progress)
        if is_canceled():
            raise JobCanceledError("canceled while running")
        return output

    def _run_text(self, job: Job, progress: Callable[[int, int], None]) -> JobOutput:
        result = self.generator.generate(self.job_params(job), progress)
        return JobOutput(
            data=result.body(),
            format=ZIP_EXTENSION if result.count > 1 else result.encoded.format.name,
            seed=result.seed,
            sample_rate=result.encoded.sample_rate,
            duration=result.encoded.duration,
            output_count=result.count,
        )

    def _run_audio_in(self, job: Job, progress: Callable[[int, int], None]) -> JobOutput:
        spec = AudioInParams.from_record(job.audio_in)
        data = self.sources.load(str((job.source or {})["key"]))
        result = self.audio_in.generate(spec, data, progress)
        return JobOutput(
            data=result.encoded.data,
            format=result.encoded.format.name,
            seed=result.seed,
            sample_rate=result.encoded.sample_rate,
            duration=result.encoded.duration,
        )


def _with_seed(spec: AudioInParams, seed: int | None) -> AudioInParams:
    return dataclasses.replace(spec, params=dataclasses.replace(spec.params, seed=seed))
