"""Server settings: one object, read once from the environment (``STABLE_AUDIO_*``) and ``.env``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import limits

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything the server can be told. Names follow the stable-audio-api README."""

    model_config = SettingsConfigDict(
        env_prefix="STABLE_AUDIO_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # Models
    default_model: str = Field(
        default="demo",
        validation_alias=AliasChoices(
            "STABLE_AUDIO_DEFAULT_MODEL", "STABLE_AUDIO_MODEL", "default_model"
        ),
        description="Model used when a request names none (store name, alias or repo id).",
    )
    preload_models: CommaList | None = Field(
        default=None,
        description="Models loaded at start, comma-separated. Unset: the default. Empty: none.",
    )
    model_aliases: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Extra model names, comma-separated ALIAS=MODEL pairs (small-sfx=demo).",
    )
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    model_half: bool = Field(default=True, description="Half precision on CUDA.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="auto: the model's own choice, else float16 on CUDA with model_half, else "
        "float32. Half precision is checked for finite audio at load (float16 -> bfloat16 -> "
        "float32).",
    )
    compile: bool = Field(
        default=False, description="torch.compile the diffusion transformer, warmed up at load."
    )
    torch_threads: int = Field(
        default=0, ge=0, description="torch intra-op threads for the process; 0: torch's default."
    )
    cpu_fast: Literal["off", "exact", "bfloat16", "int8"] = Field(
        default="off",
        description="The CPU fast path (device cpu only): exact = float32 with the decoder "
        "compiled (same audio); bfloat16 = bfloat16 where the CPU has it natively, checked at "
        "load against float32, else exact; int8 = the DiT's linear layers quantized to int8 "
        "(opt-in, trades accuracy). Loads take about a minute longer (compilation).",
    )
    precision_min_snr_db: float = Field(
        default=12.0,
        ge=0,
        description="The load check of a reduced precision on a CPU: the check request's audio "
        "within this SNR (dB) of float32's, else the next precision is tried.",
    )
    max_loaded_models: int = Field(default=2, ge=1, description="LRU bound on models in memory.")
    model_memory_budget_mb: int = Field(
        default=0,
        ge=0,
        description="LRU bound on the weights in memory, MiB, each model's cached LoRA weights "
        "included (0: no bound beyond the count).",
    )
    lora_apply: Literal["auto", "merged", "per-item"] = Field(
        default="auto",
        description="How requests' LoRAs are applied. per-item: plain lora / lora-xs sets are "
        "added to each request's rows unmerged, so requests with different sets share a batch "
        "(DoRA / BoRA sets are merged, batched by set); merged: every set is merged into a copy "
        "of the weights it adapts, one set per batch; auto: batched as per-item, and a batch's "
        "one set is merged when its weights are cached or fit the cache without evicting.",
    )
    lora_cache_mb: int = Field(
        default=512,
        ge=0,
        description="Per loaded model: merged LoRA weights kept for reuse, MiB (least recently "
        "used out; counted in model_memory_budget_mb).",
    )

    # Request limits
    max_duration: float = Field(default=380.0, gt=0, description="API-wide cap in seconds.")
    max_steps: int = Field(default=500, ge=1, description="API-wide cap on sampling steps.")
    max_outputs: int = Field(
        default=4,
        ge=1,
        description="Outputs one request may ask for (stable-audio-api batch_size); /health "
        "reports it as max_batch_size, as that server does.",
    )
    strict_requests: bool = Field(
        default=False,
        description="Refuse fields no API knows with a 422 (off: ignored, as both reference "
        "servers do, and named in the X-Ignored-Fields header and the log).",
    )
    cors_origins: CommaList = Field(
        default_factory=list,
        description="Origins that browsers may call the API from, comma-separated ('*': any). "
        "Empty: no CORS headers.",
    )
    max_upload_mb: float = Field(
        default=50.0, gt=0, description="Largest uploaded audio file, MiB (413 past it)."
    )
    max_upload_seconds: float = Field(
        default=600.0, gt=0, description="Longest uploaded audio, seconds (400 past it)."
    )

    # Batching (request coalescing)
    max_batch_size: int = Field(default=8, ge=1, description="1 turns coalescing off.")
    batch_wait_ms: float = Field(default=5.0, ge=0)
    batch_budget_seconds: float = Field(
        default=8 * 47.6,
        gt=0,
        description="Upper bound on the summed model-window seconds of one batch (memory).",
    )

    # Outputs and storage
    output_dir: Path = Field(
        default=Path("outputs"),
        description="Job outputs (local storage), served under /outputs/; nothing else.",
    )
    state_dir: Path | None = Field(
        default=None,
        description="The server's own files (the SQLite job store), kept out of the served "
        "output directory. Unset: a directory `state` next to output_dir.",
    )
    storage_bucket: str | None = None
    storage_prefix: str = "stable-audio/jobs"
    storage_endpoint_url: str | None = None
    storage_region: str = "us-east-1"
    storage_public_base_url: str | None = None
    presigned_url_expires: int = Field(default=3600, ge=1)
    storage_upload_attempts: int = Field(default=4, ge=1)
    storage_timeout: float = Field(
        default=60.0, gt=0, description="Seconds one S3 request may wait for an answer."
    )

    # Jobs
    job_store: Literal["sqlite", "redis"] = "sqlite"
    job_db_path: Path | None = Field(
        default=None, description="SQLite file. Unset: jobs.sqlite3 inside state_dir."
    )
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field(default="stable-audio", description="Key prefix in Redis.")
    job_queue_size: int = Field(default=64, ge=1, description="Queued jobs accepted at once.")
    job_lease_seconds: float = Field(default=60.0, gt=0)
    job_retention_seconds: float = Field(default=24 * 3600.0, gt=0)
    job_workers: int = Field(default=1, ge=1)
    job_max_attempts: int = Field(
        default=3, ge=1, description="Claims of one job before it fails (a job that kills workers)."
    )
    job_retry_after: int = Field(
        default=10,
        ge=1,
        description="Retry-After of a 429 (queue full) or a 503 (job store down), seconds.",
    )

    # Queue control and webhooks (jobs)
    max_priority: int = Field(
        default=10,
        ge=0,
        le=100,
        description="The highest job priority an API key may ask for (admin keys: 100).",
    )
    priority_caps: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description="Per-key caps, comma-separated KEY=CAP pairs; override max_priority.",
    )
    max_wait_seconds: float = Field(
        default=60.0, ge=0, description="The longest `Prefer: wait=N` on POST /jobs may hold."
    )
    webhook_secret: str | None = Field(
        default=None,
        description="Signs webhook deliveries (Standard Webhooks): whsec_ and base64 bytes. "
        "Unset: jobs with a webhook are refused.",
    )
    webhook_allow_hosts: CommaList = Field(
        default_factory=list,
        description="Webhook hosts allowed though they resolve to loopback, private or "
        "link-local addresses (names or IPs, exactly as in the URL).",
    )
    webhook_timeout: float = Field(default=10.0, gt=0, description="Seconds per attempt.")
    webhook_max_attempts: int = Field(default=8, ge=1, description="Attempts per delivery.")
    webhook_retry_seconds: float = Field(
        default=5.0, gt=0, description="First retry delay; doubles per attempt, at most 1 h."
    )
    webhook_progress_seconds: float = Field(
        default=5.0, ge=0, description="Progress deliveries at most this often, per job."
    )
    webhook_senders: int = Field(default=4, ge=1, description="Deliveries sent at once.")

    # Auth and links
    api_keys: CommaList = Field(default_factory=list)
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/\s]+(/\S*)?$",
        description="The base URL clients reach the server at (behind a proxy or an ingress); "
        "status_url and download_url are built on it. Unset: the URL of each request.",
    )

    # Hardening: who sees which job, and bounds on what one request may cost
    admin_api_keys: CommaList = Field(
        default_factory=list,
        description="API keys that see (and may cancel) every job; other keys see only the "
        "jobs they created. They are valid keys too (no need to repeat them in api_keys).",
    )
    max_body_kb: int = Field(
        default=64,
        ge=1,
        description="Largest JSON request body, KiB (413 past it, before it is parsed). "
        "Multipart uploads are bounded by max_upload_mb (plus 1 MiB of form fields).",
    )
    max_prompt_chars: int = Field(
        default=limits.PROMPT_MAX_CHARS,
        ge=1,
        description="Longest prompt or negative prompt, characters (422 past it). The text "
        "encoders read a few hundred tokens at most (open-1.0's T5: 128) and drop the rest.",
    )
    max_concurrency: int = Field(
        default=256,
        ge=1,
        description="HTTP requests one server process handles at once; past it a 429 with "
        "Retry-After (probes, metrics and docs are never refused).",
    )
    body_timeout: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds a request body may take to arrive; past it a 408 and the "
        "connection closes (so a slow upload holds a concurrency slot at most this long).",
    )

    @field_validator("admin_api_keys", mode="before")
    @classmethod
    def _admin_keys(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from standardwebhooks import Webhook

        try:
            Webhook(value)
        except Exception as e:
            raise ValueError("expected whsec_ followed by base64 bytes") from e
        if not value.startswith("whsec_"):
            raise ValueError("expected whsec_ followed by base64 bytes")
        return value

    @field_validator("priority_caps", mode="before")
    @classmethod
    def _cap_pairs(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        caps: dict[str, int] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            key, sep, cap = item.rpartition("=")
            if not sep or not key.strip() or not cap.strip().isdigit() or int(cap) > 100:
                raise ValueError("expected KEY=CAP pairs (CAP 0 to 100) separated by commas")
            caps[key.strip()] = int(cap)
        return caps

    @field_validator(
        "preload_models", "api_keys", "cors_origins", "webhook_allow_hosts", mode="before"
    )
    @classmethod
    def _comma_lists(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _alias_pairs(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            alias, sep, target = item.partition("=")
            if not sep or not alias.strip() or not target.strip():
                raise ValueError(f"expected ALIAS=MODEL pairs separated by commas, got {item!r}")
            pairs[alias.strip()] = target.strip()
        return pairs

    @model_validator(mode="wrap")
    @classmethod
    def _name_variables(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """Report errors under the environment variable a user sets, not the field name."""
        try:
            return handler(data)
        except ValidationError as e:
            errors: list[Any] = []
            for error in e.errors():
                loc = list(error["loc"])
                if loc and isinstance(loc[0], str) and not loc[0].isupper():
                    loc[0] = f"STABLE_AUDIO_{loc[0].upper()}"
                errors.append({**error, "loc": tuple(loc)})
            raise ValidationError.from_exception_data(e.title, errors) from None

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if self.preload_models is None:
            self.preload_models = [self.default_model]
        if self.storage_public_base_url:
            self.storage_public_base_url = self.storage_public_base_url.rstrip("/")
        if self.public_url:
            self.public_url = self.public_url.rstrip("/")
        self.output_dir = self.output_dir.expanduser().resolve()
        if self.state_dir is None:
            self.state_dir = self.output_dir.parent / "state"
        self.state_dir = self.state_dir.expanduser().resolve()
        if self.state_dir == self.output_dir or self.state_dir.is_relative_to(self.output_dir):
            raise ValueError(
                "STABLE_AUDIO_STATE_DIR must not be inside STABLE_AUDIO_OUTPUT_DIR "
                "(the output directory is served)"
            )
        if self.job_db_path is None:
            self.job_db_path = self.state_dir / "jobs.sqlite3"
        return self

    @property
    def preload(self) -> list[str]:
        """The models to load at start (never None after validation)."""
        return list(self.preload_models or [])

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys or self.admin_api_keys)
