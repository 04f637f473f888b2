"""Everything one server process holds: settings, models, the pipeline, jobs and storage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .errors import (
    IdempotencyKeyReusedError,
    ModelLoadError,
    ModelNotFoundError,
    StableAudioError,
)
from .generation import AudioGenerator, GeneratedAudio, Plan
from .jobs.models import Job, JobOutput
from .jobs.store import JobStore, job_store_from_settings
from .jobs.worker import JobWorker
from .registry import ModelRegistry
from .schemas import GenerationParams, GenerationsRequest
from .settings import Settings
from .storage import Storage, storage_from_settings

log = logging.getLogger(__name__)


class JobCanceled(StableAudioError):
    """Raised inside a job run once its cancel was requested."""


class Runtime:
    """Built once per server process by the BentoML service; routes reach it through the app."""

    def __init__(self, settings: Settings, registry: ModelRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or ModelRegistry(settings)
        self.generator = AudioGenerator(settings, self.registry)
        self.jobs: JobStore = job_store_from_settings(settings)
        self.storage: Storage = storage_from_settings(settings)
        self.worker = JobWorker(
            self.jobs,
            self.storage,
            self.run_job,
            lease_seconds=settings.job_lease_seconds,
            threads=settings.job_workers,
            fallback_dir=settings.output_dir / "failed-uploads",
            retention_seconds=settings.job_retention_seconds,
            # Nothing outlives its retention by more than a quarter of it (or ten minutes).
            sweep_interval=min(600.0, settings.job_retention_seconds / 4),
        )
        self.ready = False

    def start(self) -> None:
        """Preload models, then start taking jobs (queued ones from before a restart too)."""
        if not self.settings.auth_enabled:
            log.warning("STABLE_AUDIO_API_KEYS is not set: the API is open to every caller")
        for alias, target in self.settings.model_aliases.items():
            try:
                self.registry.resolve(target)
            except ModelNotFoundError as e:
                raise ModelLoadError(
                    f"STABLE_AUDIO_MODEL_ALIASES maps {alias!r} to {target!r}, "
                    "which is not in the model store"
                ) from e
        self.registry.preload()
        self.worker.start()
        self.ready = True

    def stop(self) -> None:
        self.ready = False
        self.worker.stop()
        self.registry.close()
        self.jobs.close()

    # ----------------------------------------------------------------- generation
    def generate(
        self, params: GenerationParams, progress: Callable[[int, int], None] | None = None
    ) -> GeneratedAudio:
        return self.generator.generate(params, progress)

    # ------------------------------------------------------------------------ jobs
    def submit_job(self, body: GenerationsRequest, idempotency_key: str | None = None) -> Job:
        """Validate now (bad requests never queue), fix the seed, queue the job.

        A reused ``idempotency_key`` returns its job when the body is the same request (a
        retry), and raises IdempotencyKeyReusedError when it is a different one.
        """
        plan: Plan = self.generator.plan(body.to_params())
        request = body.model_dump()
        request["seed"] = plan.seed
        new = Job(
            model=plan.entry.name,
            response_format=body.response_format,
            seed=plan.seed,
            request=request,
            progress_total=plan.sampling.steps,
            idempotency_key=idempotency_key,
        )
        job = self.jobs.create(new)
        if idempotency_key is not None and job.id != new.id:
            sent = body.model_dump()
            if sent["seed"] == -1:  # a retry of a random-seed request cannot know the seed
                sent["seed"] = job.request.get("seed")
            if sent != job.request:
                raise IdempotencyKeyReusedError(idempotency_key, job.id)
        return job

    def run_job(
        self,
        job: Job,
        progress: Callable[[int, int], None],
        is_canceled: Callable[[], bool],
    ) -> JobOutput:
        """The worker's entry point: the same pipeline as the sync APIs."""
        if is_canceled():
            raise JobCanceled("canceled before it started")
        params = GenerationsRequest.model_validate(job.request).to_params()
        result = self.generator.generate(params, progress)
        if is_canceled():
            # A coalesced batch is shared with other requests, so a cancel takes effect when
            # the batch ends; the audio is discarded.
            raise JobCanceled("canceled while running")
        return JobOutput(
            data=result.encoded.data,
            format=result.encoded.format.name,
            seed=result.seed,
            sample_rate=result.encoded.sample_rate,
            duration=result.encoded.duration,
        )

    def health(self) -> dict[str, Any]:
        models = self.registry.describe()
        return {
            "status": "ok" if self.ready else "starting",
            **models,
            "limits": {
                "max_duration": self.settings.max_duration,
                "max_steps": self.settings.max_steps,
                "models": {
                    m["name"]: {"max_seconds": m["max_seconds"]} for m in models["available_models"]
                },
            },
            "jobs": {"queued": self.jobs.count_queued(), "store": self.settings.job_store},
            "storage": "s3" if self.settings.storage_bucket else "local",
            "auth": self.settings.auth_enabled,
        }
