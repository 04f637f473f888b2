"""Everything one server process holds: settings, models, the pipeline, jobs and storage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from typing import Any

from .archive import ZIP_EXTENSION
from .audio_jobs import run_audio_job
from .audio_to_audio import AUDIO_IN_MODES, AudioToAudio
from .engine import model_info
from .errors import (
    IdempotencyKeyReusedError,
    ModelLoadError,
    ModelNotFoundError,
    StableAudioError,
)
from .formats import FORMATS
from .generation import AudioGenerator, GeneratedAudio, Plan
from .jobs.models import Job, JobOutput
from .jobs.store import JobStore, job_store_from_settings
from .jobs.worker import JobWorker
from .registry import ModelRegistry
from .schemas import GenerationParams
from .settings import Settings
from .sources import SourceStore, sources_from_settings, sweep_sources
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
        # Audio in: the same pipeline's parts; job sources kept beside the outputs.
        self.audio_in = AudioToAudio(self.generator)
        self.sources: SourceStore = sources_from_settings(settings, self.storage)
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
            also_sweep=lambda: sweep_sources(
                self.sources, self.jobs, settings.job_retention_seconds
            ),
        )
        self.ready = False
        # The device models run on: the requested one until a model has loaded and said.
        self.device: str = settings.device

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
        self.device = self._default_device()
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
    def submit_job(
        self,
        params: GenerationParams,
        idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> Job:
        """Validate now (bad requests never queue), fix the seeds, queue the job.

        The job keeps the normalised parameters (``GenerationParams.to_record``), so a job
        runs the same whichever API queued it and whichever release runs it. A reused
        ``idempotency_key`` returns its job when the parameters are the same (a retry), and
        raises IdempotencyKeyReusedError when they differ.
        """
        plan: Plan = self.generator.plan(params)
        fixed = replace(params, seed=plan.seed)
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
        job = self.jobs.create(new)
        if idempotency_key is not None and job.id != new.id:
            # A retry of a random-seed request cannot know the seed its first try drew.
            sent = fixed if params.seed not in (None, -1) else replace(params, seed=job.seed)
            if sent.to_record() != job.params:
                raise IdempotencyKeyReusedError(idempotency_key, job.id)
        return job

    @staticmethod
    def job_params(job: Job) -> GenerationParams:
        """What a job runs: its parameters record, or an older release's request body."""
        return GenerationParams.from_record(job.params or job.request)

    def run_job(
        self,
        job: Job,
        progress: Callable[[int, int], None],
        is_canceled: Callable[[], bool],
    ) -> JobOutput:
        """The worker's entry point: the same pipeline as the sync APIs."""
        if job.mode in AUDIO_IN_MODES:
            return run_audio_job(self, job, progress, is_canceled)
        if is_canceled():
            raise JobCanceled("canceled before it started")
        result = self.generator.generate(self.job_params(job), progress)
        if is_canceled():
            # A coalesced batch is shared with other requests, so a cancel takes effect when
            # the batch ends; the audio is discarded.
            raise JobCanceled("canceled while running")
        return JobOutput(
            data=result.body(),
            format=ZIP_EXTENSION if result.count > 1 else result.encoded.format.name,
            seed=result.seed,
            sample_rate=result.encoded.sample_rate,
            duration=result.encoded.duration,
            output_count=result.count,
        )

    # ---------------------------------------------------------------------- health
    def health(self) -> dict[str, Any]:
        """The stable-audio-api server's fields first, then ours (rich model records under
        ``models``, the format registry under ``formats``)."""
        described = self.registry.describe()
        default = described["default_model"]
        loaded = described["loaded_models"]
        cap = self.settings.max_duration
        models = [self._model_record(m) for m in described["available_models"]]
        limits: dict[str, float] = {}
        for m in models:
            limit = round(min(m["max_seconds"] or cap, cap), 3)
            for name in (m["name"], *m["aliases"]):
                limits.setdefault(name, limit)
        return {
            "status": "ok" if self.ready else "loading",
            "model": default,
            "device": self.device,
            "loaded": default in loaded,
            "storage_backend": self.storage_backend,
            "available_models": [m["name"] for m in models],
            "loaded_models": loaded,
            "preload_models": described["preloaded_models"],
            "model_duration_limits_seconds": limits,
            "max_duration_seconds": cap,
            "max_steps": self.settings.max_steps,
            "max_batch_size": self.settings.max_outputs,
            # Ours.
            "default_model": default,
            "preloaded_models": described["preloaded_models"],
            "models": models,
            "formats": [
                {
                    "name": f.name,
                    "media_type": f.media_type,
                    "extension": f.extension,
                    "description": f.description,
                    "sample_rate": f.sample_rate,
                    "lossy": f.lossy,
                }
                for f in FORMATS.values()
            ],
            "limits": {
                "max_duration": cap,
                "max_steps": self.settings.max_steps,
                "max_outputs": self.settings.max_outputs,
                "models": {m["name"]: {"max_seconds": m["max_seconds"]} for m in models},
            },
            "coalescing": {"max_batch_size": self.settings.max_batch_size},
            "jobs": {"queued": self.jobs.count_queued(), "store": self.settings.job_store},
            "storage": self.storage_backend,
            "auth": self.settings.auth_enabled,
            # LoRA store entries by base model name (``GET /v1/loras``).
            "loras": self.generator.loras.by_base(),
        }

    def _default_device(self) -> str:
        with suppress(ModelNotFoundError):
            default = self.registry.resolve(None).name
            if default in self.registry.loaded_names():  # borrowed, never loaded here
                with self.registry.use(default) as loaded:
                    return loaded.engine.device
        return self.settings.device

    @property
    def storage_backend(self) -> str:
        return "s3" if self.settings.storage_bucket else "local"

    def _model_record(self, described: dict[str, Any]) -> dict[str, Any]:
        """A model's store description plus what its config says it can do."""
        record = dict(described)
        try:
            info = model_info(self.registry.resolve(described["name"]))
        except StableAudioError:  # a broken entry still shows, without capabilities
            return record
        return {**record, **info.describe(), "max_seconds": round(info.max_seconds, 3)}
