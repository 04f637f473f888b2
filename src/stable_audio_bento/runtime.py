"""Everything one server process holds: settings, models, the pipeline, jobs and storage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from .errors import (
    ModelLoadError,
    ModelNotFoundError,
)
from .jobs.factory import job_store_from_settings
from .jobs.queue_control import JobOptions
from .jobs.records import Job
from .jobs.runner import JobRunner
from .jobs.sources import SourceStore, sources_from_settings, sweep_sources
from .jobs.storage import Storage, storage_from_settings
from .jobs.store import JobStore
from .jobs.webhooks import WebhookSender
from .jobs.worker import JobWorker
from .pipeline.audio_to_audio import AudioToAudio
from .pipeline.generation import AudioGenerator, GeneratedAudio
from .pipeline.registry import ModelRegistry
from .schemas import GenerationParams
from .settings import Settings

log = logging.getLogger(__name__)


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
        self.runner = JobRunner(self.generator, self.audio_in, self.jobs, self.sources)
        self.worker = JobWorker(
            self.jobs,
            self.storage,
            self.runner.run,
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
        # The public job record, as the HTTP edge renders it (``http.views.bind_views``).
        self.render_job: Callable[[Job], dict[str, Any]] | None = None
        self.webhooks: WebhookSender | None = None
        if settings.webhook_secret is not None:
            self.webhooks = WebhookSender(
                self.jobs,
                settings.webhook_secret,
                self.job_record,
                allow_hosts=settings.webhook_allow_hosts,
                timeout=settings.webhook_timeout,
                max_attempts=settings.webhook_max_attempts,
                retry_seconds=settings.webhook_retry_seconds,
                threads=settings.webhook_senders,
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
        if self.webhooks is not None:
            self.webhooks.start()
        self.ready = True

    def stop(self) -> None:
        self.ready = False
        self.worker.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
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
        options: JobOptions | None = None,
    ) -> Job:
        """Queue a text-to-audio job (``JobRunner.submit``)."""
        return self.runner.submit(params, idempotency_key, owner, options)

    def job_record(self, job: Job) -> dict[str, Any]:
        """The public job record (webhook bodies): the HTTP edge's view, set by ``create_app``."""
        if self.render_job is None:
            raise RuntimeError("no job view: the HTTP app was not created for this runtime")
        return self.render_job(job)

    @staticmethod
    def job_params(job: Job) -> GenerationParams:
        return JobRunner.job_params(job)

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
