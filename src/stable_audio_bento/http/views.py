"""The public JSON of a job record and of ``GET /health``: built here, from what the runtime
and the job store hold, so that the records themselves never change shape for an API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..archive import media_type_of
from ..engine import model_info
from ..errors import StableAudioError
from ..formats import FORMATS
from ..jobs.records import Job
from ..runtime import Runtime
from ..schemas import stable_api_body


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def job_view(job: Job, runtime: Runtime, base_url: str) -> dict[str, Any]:
    """The public job record."""
    base = base_url.rstrip("/")
    try:
        params = runtime.job_params(job)
        request: dict[str, Any] = stable_api_body(params)
        requested: float | None = params.seconds_total
    except (StableAudioError, KeyError, TypeError, ValueError):
        request, requested = dict(job.request), None  # a record this release cannot read
    ready = job.status == "succeeded" and job.result_key is not None
    key = job.result_key if ready else None
    return {
        "id": job.id,
        "status": job.status,
        "mode": job.mode,
        "model": job.model,
        "duration": job.duration if job.duration is not None else requested,
        "steps": job.progress_total,
        "output_count": job.output_count,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "completed_at": _iso(job.finished_at),
        "download_url": runtime.storage.url(key, base) if key else None,
        "download_content_type": media_type_of(key.rsplit(".", 1)[-1]) if key else None,
        "error": job.error,
        "storage_backend": runtime.storage_backend,
        "storage_key": key,
        "sample_rate": job.sample_rate,
        # Ours.
        "status_url": f"{base}/jobs/{job.id}",
        "audio_url": f"{base}/jobs/{job.id}/audio",
        "response_format": job.response_format,
        "seed": job.seed,
        "seeds": job.seeds or ([job.seed] if job.seed is not None else []),
        "progress": {"step": job.progress_step, "total": job.progress_total},
        "finished_at": _iso(job.finished_at),
        "attempts": job.attempts,
        "worker": job.worker,
        "cancel_requested": job.cancel_requested,
        "request": request,
        "params": job.params or None,
        "source": source_view(job),
        "audio_in": job.audio_in or None,
        # Queue control and notifications.
        "priority": job.priority,
        "queue_position": runtime.jobs.queue_position(job) if job.status == "queued" else None,
        "max_queue_seconds": job.max_queue_seconds,
        "queue_deadline": _iso(job.queue_deadline),
        "events_url": f"{base}/jobs/{job.id}/events",
        "webhook": job.webhook,
        "webhook_events": job.webhook_events if job.webhook else None,
        "webhook_deliveries": [
            {
                "id": d.id,
                "event": d.event,
                "status": d.status,
                "attempts": d.attempts,
                "created_at": _iso(d.created_at),
                "last_attempt_at": _iso(d.last_attempt_at),
                "next_attempt_at": _iso(d.next_attempt_at) if d.status == "pending" else None,
                "response_status": d.response_status,
                "error": d.error,
            }
            for d in job.deliveries
        ],
    }


def bind_views(runtime: Runtime) -> None:
    """Give ``runtime`` the public job record for what it sends itself (webhook bodies), with
    links on ``STABLE_AUDIO_PUBLIC_URL``."""
    base = runtime.settings.public_url or ""
    runtime.render_job = lambda job: job_view(job, runtime, base)


def source_view(job: Job) -> dict[str, Any] | None:
    """What a job record shows of its source (not where the server keeps it)."""
    if not job.source:
        return None
    return {k: job.source.get(k) for k in ("filename", "bytes", "sha256", "seconds")}


# In a listing, prompts are cut to this many characters (the job's own record has them whole):
# 500 jobs with long prompts would otherwise be megabytes.
LISTED_TEXT_CHARS = 200


def compact_view(view: dict[str, Any]) -> dict[str, Any]:
    """``view`` for a listing: long strings of its request and params shortened."""
    cut = False
    for part in ("request", "params"):
        fields = view.get(part)
        if not isinstance(fields, dict):
            continue
        for name, value in list(fields.items()):
            if isinstance(value, str) and len(value) > LISTED_TEXT_CHARS:
                fields[name] = value[:LISTED_TEXT_CHARS] + "..."
                cut = True
    view["truncated"] = cut
    return view


def health_view(runtime: Runtime) -> dict[str, Any]:
    """The stable-audio-api server's fields first, then ours (rich model records under
    ``models``, the format registry under ``formats``)."""
    described = runtime.registry.describe()
    default = described["default_model"]
    loaded = described["loaded_models"]
    cap = runtime.settings.max_duration
    models = [_model_record(runtime, m) for m in described["available_models"]]
    limits: dict[str, float] = {}
    for m in models:
        limit = round(min(m["max_seconds"] or cap, cap), 3)
        for name in (m["name"], *m["aliases"]):
            limits.setdefault(name, limit)
    return {
        "status": "ok" if runtime.ready else "loading",
        "model": default,
        "device": runtime.device,
        "loaded": default in loaded,
        "storage_backend": runtime.storage_backend,
        "available_models": [m["name"] for m in models],
        "loaded_models": loaded,
        "preload_models": described["preloaded_models"],
        "model_duration_limits_seconds": limits,
        "max_duration_seconds": cap,
        "max_steps": runtime.settings.max_steps,
        "max_batch_size": runtime.settings.max_outputs,
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
            "max_steps": runtime.settings.max_steps,
            "max_outputs": runtime.settings.max_outputs,
            "models": {m["name"]: {"max_seconds": m["max_seconds"]} for m in models},
        },
        "coalescing": {
            "max_batch_size": runtime.settings.max_batch_size,
            # How requests' LoRAs are applied, so which LoRA sets can share a batch.
            "lora_apply": runtime.settings.lora_apply,
        },
        "jobs": {"queued": runtime.jobs.count_queued(), "store": runtime.settings.job_store},
        "storage": runtime.storage_backend,
        "auth": runtime.settings.auth_enabled,
        # LoRA store entries by base model name (``GET /v1/loras``).
        "loras": runtime.generator.loras.by_base(),
    }


def _model_record(runtime: Runtime, described: dict[str, Any]) -> dict[str, Any]:
    """A model's store description plus what its config says it can do."""
    record = dict(described)
    try:
        info = model_info(runtime.registry.resolve(described["name"]))
    except StableAudioError:  # a broken entry still shows, without capabilities
        return record
    return {**record, **info.describe(), "max_seconds": round(info.max_seconds, 3)}
